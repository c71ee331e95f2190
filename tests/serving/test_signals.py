"""Implicit signals in the real app: each triggered, and not, by constructed traffic."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from feedback.grades import ABANDONED, JSON, LENGTH, REGENERATED, TOOL_ARGS
from serving.grading import json_problem
from tests.fakes.fake_upstream import FakeUpstream
from tests.serving.gateway_stack import started_fakes, wait_until
from tests.serving.test_judge import App, _app

SCHEMA = {"type": "json_schema", "json_schema": {"name": "x", "schema": {
    "type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}}}


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeUpstream]]:
    yield from started_fakes()


def signals_app(fakes: dict[str, FakeUpstream], tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch, **signals: Any) -> Iterator[App]:
    for app in _app(fakes, tmp_path, monkeypatch,
                    grades={"grace_s": 0, "interval_s": 3600}, signals=signals):
        # The test catalog's file lists no capabilities: JSON output and tools, for cheap.
        cheap = app.service.catalog.get("cheap")
        app.call(app.service.add_model(
            replace(cheap, capabilities=frozenset({"json", "tools"}))))
        yield app


@pytest.fixture
def app(fakes: dict[str, FakeUpstream], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    yield from signals_app(fakes, tmp_path, monkeypatch)


def sources(app: App, decision_id: str) -> list[str]:
    app.idle()
    return [g.source for g in app.book.of(decision_id)]


def test_an_answer_cut_off_by_its_length_limit(app: App,
                                               fakes: dict[str, FakeUpstream]) -> None:
    whole = app.ask()
    fakes["cheap"].behavior.answer = "truncated"
    cut = app.ask()
    assert sources(app, whole) == []
    assert sources(app, cut) == [LENGTH]
    # Promoted after the grace period: learned as 0.5 + 0.6 * (0 - 0.5).
    assert app.promote() == 1
    learned = app.view(cut)["learned_from"]
    assert (learned["source"], learned["score"]) == (LENGTH, pytest.approx(0.2))


@pytest.mark.parametrize(("fmt", "text", "bad"), [
    (SCHEMA, '{"a": 1}', False),
    (SCHEMA, '{"b": 1}', True),
    (SCHEMA, '{"a": "one"}', True),
    (SCHEMA, "a = 1", True),
    ({"type": "json_object"}, '{"b": 1}', False),
    ({"type": "json_object"}, "sure! {", True),
    (None, "sure! {", False),
], ids=["schema-ok", "schema-missing", "schema-type", "schema-not-json", "object-ok",
        "object-bad", "no-format"])
def test_output_that_fails_the_requested_json(
        fmt: Any, text: str, bad: bool, app: App, fakes: dict[str, FakeUpstream]) -> None:
    fakes["cheap"].behavior.text = text
    extra = {} if fmt is None else {"response_format": fmt}
    decision_id = app.ask(**extra)
    assert sources(app, decision_id) == ([JSON] if bad else [])


@pytest.mark.parametrize("stream", [False, True], ids=["body", "stream"])
@pytest.mark.parametrize(("arguments", "bad"), [('{"city": "Oslo"}', False),
                                                ('{"city": "Os', True)],
                         ids=["valid", "broken"])
def test_tool_call_arguments_that_are_not_json(
        arguments: str, bad: bool, stream: bool, app: App,
        fakes: dict[str, FakeUpstream]) -> None:
    fakes["cheap"].behavior.tool_call = {"name": "weather", "arguments": arguments}
    if stream:
        with app.sdk.chat.completions.with_streaming_response.create(
                model="cheap", messages=[{"role": "user", "content": "weather?"}],
                stream=True) as raw:
            decision_id = raw.headers["x-routebandit-decision-id"]
            list(raw.parse())
    else:
        decision_id = app.ask("weather?")
    assert sources(app, decision_id) == ([TOOL_ARGS] if bad else [])


def as_user(user: str) -> dict[str, Any]:
    return {"extra_body": {"routebandit": {"metadata": {"user_key": user}}}}


def test_the_same_conversation_resent_counts_against_the_earlier_answer(app: App) -> None:
    first = app.ask("what is the capital of Peru?", **as_user("ana"))
    other = app.ask("what is the capital of Chile?", **as_user("ana"))
    someone_else = app.ask("what is the capital of Peru?", **as_user("bo"))
    again = app.ask("what is the capital of Peru?", **as_user("ana"))
    assert sources(app, first) == [REGENERATED]
    assert sources(app, other) == [] and sources(app, again) == []
    assert sources(app, someone_else) == []


def test_a_resent_conversation_with_an_answer_in_it_needs_no_user(app: App) -> None:
    turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello!"},
             {"role": "user", "content": "name three rivers"}]
    first = app.sdk.chat.completions.with_raw_response.create(model="cheap", messages=turns)
    first.parse()
    app.sdk.chat.completions.create(model="cheap", messages=turns)
    assert sources(app, first.headers["x-routebandit-decision-id"]) == [REGENERATED]


def test_one_first_turn_without_a_user_is_no_regeneration(app: App) -> None:
    # Different people send the same first message: nothing says it is a resend.
    first = app.ask("hello")
    app.ask("hello")
    assert sources(app, first) == []


def test_a_resend_after_the_window_is_no_regeneration(
        fakes: dict[str, FakeUpstream], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    for app in signals_app(fakes, tmp_path, monkeypatch, regenerate_window_s=0.05):
        first = app.ask("hello there", **as_user("ana"))
        time.sleep(0.2)
        app.ask("hello there", **as_user("ana"))
        assert sources(app, first) == []


def test_signals_can_be_turned_off(fakes: dict[str, FakeUpstream], tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    for app in signals_app(fakes, tmp_path, monkeypatch, length=False, json=False,
                           regenerated=False):
        fakes["cheap"].behavior.answer = "truncated"
        cut = app.ask("same", **as_user("ana"))
        fakes["cheap"].behavior.answer = "normal"
        fakes["cheap"].behavior.text = "not json"
        bad = app.ask("same", response_format={"type": "json_object"}, **as_user("ana"))
        assert sources(app, cut) == [] and sources(app, bad) == []


def abandon_stream(app: App) -> str:
    body = {"model": "cheap", "stream": True,
            "messages": [{"role": "user", "content": "tell me a long story"}]}
    with app.http.stream("POST", "/v1/chat/completions", json=body) as r:
        decision_id = r.headers["x-routebandit-decision-id"]
        next(r.iter_raw())  # the first event, then the client leaves
    return str(decision_id)


@pytest.mark.parametrize("on", [True, False], ids=["on", "off-by-default"])
def test_a_stream_the_client_abandoned(on: bool, fakes: dict[str, FakeUpstream],
                                       tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    signals = {"abandoned": True} if on else {}
    for app in signals_app(fakes, tmp_path, monkeypatch, **signals):
        fakes["cheap"].behavior.text = " ".join(["word"] * 40)
        fakes["cheap"].behavior.chunk_delay_s = 0.05
        decision_id = abandon_stream(app)
        wait_until(lambda a=app, d=decision_id: a.view(d)["outcome"] is not None, timeout=10)
        assert app.view(decision_id)["outcome"]["status"] == "cancelled"
        assert sources(app, decision_id) == ([ABANDONED] if on else [])
        fakes["cheap"].behavior.chunk_delay_s = 0.0
        finished = app.ask("a short one")  # read to its end: not abandoned
        assert sources(app, finished) == []


def test_json_problem_ignores_a_broken_schema() -> None:
    fmt = {"type": "json_schema", "json_schema": {"schema": {"type": "no-such-type"}}}
    assert json_problem('{"a": 1}', fmt) is None
