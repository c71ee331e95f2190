"""Fuzz every door with hostile values in valid-looking bodies (Hypothesis): lone
surrogates, NUL, huge and non-finite numbers, deep nesting, wrong types. No 5xx, every
refusal names what was wrong, and afterwards the writer and the learner serve everyone:
``/readyz`` is ready and a fresh feedback is answered within a second."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.app import create_app
from tests.fakes.fake_upstream import FakeUpstream
from tests.fakes.serve_process import KEY_ENV, write_catalog
from tests.fakes.server import ServerThread
from tests.serving.conftest import service_settings

MAX_EXAMPLES = 250

_surrogate = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
_hostile_text = st.one_of(
    st.text(alphabet=st.one_of(_surrogate, st.just("\x00"), st.characters()), min_size=1,
            max_size=12),
    st.integers(1, 20).map(lambda n: "x" * (n * 1000)),
)
_hostile_number = st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e400",
                                   "1e308", "99999999999999999999999999", "-1", "0", "1.5"])
_scalar = st.one_of(_hostile_text.map(json.dumps), _hostile_number,
                    st.sampled_from(["null", "true", "[]", "{}", '""', '"auto"']),
                    st.integers(2, 3000).map(lambda d: "[" * d + "]" * d))

ROUTE = {"messages": [{"role": "user", "content": "hello"}], "weights": {"cost": 0.1},
         "metadata": {"task": "qa", "user_key": "u1"}, "models": ["cheap"], "max_tokens": 5}
CHAT = {"model": "auto", "messages": [{"role": "user", "content": "hello"}], "n": 1,
        "max_tokens": 5, "routebandit": {"metadata": {"task": "qa"}, "weights": {"cost": 0.1},
                                         "models": ["cheap"]}}
FEEDBACK = {"decision_id": "D", "score": 0.5, "latency_ms": 10.0, "input_tokens": 3,
            "source": "user"}
MODEL = {"name": "new-model", "base_url": "https://api.example.com/v1",
         "api_key_env": "NEW_API_KEY", "input_price": 1.0, "output_price": 2.0}
RESPONSES = {"model": "auto", "instructions": "be brief", "max_output_tokens": 5,
             "input": [{"role": "user", "content": [{"type": "input_text", "text": "hello"}]},
                       {"type": "function_call", "call_id": "c1", "name": "f",
                        "arguments": "{}"},
                       {"type": "function_call_output", "call_id": "c1", "output": "ok"}],
             "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
             "text": {"format": {"type": "json_schema", "name": "s",
                                 "schema": {"type": "object"}}},
             "metadata": {"k": "v"}, "routebandit": {"models": ["cheap"]}}
MESSAGES = {"model": "auto", "max_tokens": 5, "system": [{"type": "text", "text": "brief"}],
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "hello"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": "AAAA"}}]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]}],
            "tools": [{"name": "f", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "auto"}, "stop_sequences": ["END"],
            "metadata": {"user_id": "u"}, "routebandit": {"models": ["cheap"]}}
DOORS = {"/v1/route": ROUTE, "/v1/chat/completions": CHAT, "/v1/feedback": FEEDBACK,
         "/v1/models": MODEL, "/v1/responses": RESPONSES, "/v1/messages": MESSAGES,
         "/v1/messages/count_tokens": MESSAGES}


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*path, i))


_MARK = "\u2063HOSTILE\u2063"


def _plant(base: Any, path: tuple[Any, ...], key: str | None) -> Any:
    """A copy of ``base`` with a marker at ``path`` (or under a new ``key`` there)."""
    if not path and key is None:
        return _MARK
    out = json.loads(json.dumps(base))
    node = out
    for part in path[:-1]:
        node = node[part]
    if key is not None:
        target = node[path[-1]] if path else out
        if isinstance(target, dict):
            target[key] = _MARK
            return out
    if path:
        node[path[-1]] = _MARK
    return out


@st.composite
def hostile_requests(draw: st.DrawFn) -> tuple[str, bytes]:
    door = draw(st.sampled_from(sorted(DOORS)))
    base = DOORS[door]
    path = draw(st.sampled_from(list(_paths(base))))
    key = draw(st.none() | st.sampled_from(["task", "tenant", "extra", "\ud800", "n"]))
    planted = json.dumps(_plant(base, path, key))
    return door, planted.replace(json.dumps(_MARK), draw(_scalar)).encode()


@contextlib.contextmanager
def _serve(tmp: Path) -> Iterator[ServerThread]:
    with FakeUpstream() as upstream, pytest.MonkeyPatch.context() as mp:
        mp.setenv(KEY_ENV, "sk-fake")
        catalog = write_catalog(tmp / "catalog.yaml", upstream.base_url)
        app = create_app(service_settings(tmp, f"sqlite:///{tmp / 'rb.db'}",
                                          catalog=str(catalog)))
        srv = ServerThread(app)
        srv.start(timeout=30)
        try:
            yield srv
        finally:
            srv.stop()


def test_hostile_bodies_never_5xx_and_never_stop_a_worker(tmp_path: Path) -> None:
    with _serve(tmp_path) as srv, httpx.Client(base_url=srv.url, timeout=10) as http:
        did = http.post("/v1/route", json={"prompt": "seed"}).json()["decision_id"]
        seen: dict[str, int] = {}

        @given(request=hostile_requests())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
                  database=None, suppress_health_check=list(HealthCheck))
        def run(request: tuple[str, bytes]) -> None:
            door, raw = request
            raw = raw.replace(b'"D"', json.dumps(did).encode())
            r = http.post(door, content=raw, headers={"content-type": "application/json"})
            assert r.status_code < 500, (door, raw[:300], r.text[:300])
            seen[door] = seen.get(door, 0) + 1
            if r.status_code >= 400:  # every shape, Anthropic's too, has error.message
                assert r.json()["error"]["message"], r.text

        run()
        assert set(seen) == set(DOORS)  # every door was tried
        ready = http.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["writer"] and ready.json()["checks"]["learner"]
        fresh = http.post("/v1/route", json={"prompt": "after"}).json()["decision_id"]
        started = time.monotonic()
        fb = http.post("/v1/feedback", json={"decision_id": fresh, "score": 1.0})
        assert fb.status_code == 200, fb.text
        assert time.monotonic() - started < 1.0
        service = srv.app.state.service
        assert service.writer.restarts == 0 and service.writer.dead_lettered == 0
