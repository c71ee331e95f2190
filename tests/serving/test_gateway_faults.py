"""Upstreams that misbehave on purpose, over real HTTP: what the client sees, how long it
waits, what is recorded and learned, what is cached, and that a client who leaves is let
go. Default settings unless a test is about a mechanism (then short ones, said so)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import openai
import pytest

from serving.gateway import GatewayConfig
from tests.fakes.fake_upstream import FakeUpstream
from tests.serving.gateway_stack import Stack, reset, start_stack, started_fakes, wait_until

MESSAGES = [{"role": "user", "content": "Tell me about foxes"}]
FULL = "The quick brown fox jumps over the lazy dog."
DEFAULTS = GatewayConfig()


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeUpstream]]:
    yield from started_fakes()


@pytest.fixture
def fresh(fakes: dict[str, FakeUpstream]) -> Iterator[dict[str, FakeUpstream]]:
    for fake in fakes.values():
        reset(fake)
    yield fakes


@pytest.fixture
def stack(fresh: dict[str, FakeUpstream]) -> Iterator[Stack]:
    """The defaults: GatewayConfig() and the default transport (aiohttp)."""
    s = start_stack(fresh, transport="aiohttp")
    yield s
    s.stop()


def started(fakes: dict[str, FakeUpstream], transport: str = "aiohttp",
            **config: Any) -> Stack:
    return start_stack(fakes, config=GatewayConfig(**config), transport=transport)


def read_stream(stack: Stack, **kwargs: Any) -> tuple[str, str, Exception | None]:
    """(model header, text received, the SDK's exception or None) of a streamed request."""
    text: list[str] = []
    with stack.sdk().chat.completions.with_streaming_response.create(
            model=kwargs.pop("model", "auto"), messages=MESSAGES, stream=True,
            **kwargs) as raw:
        model = raw.headers["x-routebandit-model"]
        try:
            for chunk in raw.parse():
                text.extend(c.delta.content or "" for c in chunk.choices)
        except Exception as exc:  # what an application using the SDK would catch
            return model, "".join(text), exc
    return model, "".join(text), None


def outcome_of(stack: Stack, model: str) -> Any:
    [decision_id] = [d for d, r in stack.router.routes
                     if (r.force_model or stack.router.preference[0]) == model]
    [outcome] = stack.outcomes(decision_id)
    return outcome


def learned(stack: Stack) -> list[tuple[str, float, str | None]]:
    time.sleep(0.3)  # outcomes (and their feedback) are handed over in 0.1 s batches
    return stack.router.feedbacks


# -- time budgets ---------------------------------------------------------------------


def test_a_model_that_hangs_before_its_headers_fails_over_within_the_first_byte_timeout(
    stack: Stack,
) -> None:
    """With the defaults: the stream's answer comes from the next model after
    first_byte_timeout_s (5 s), far inside the 60 s deadline."""
    stack.fakes["cheap"].behavior.hang_s = 60.0
    began = time.monotonic()
    model, text, error = read_stream(stack)
    waited = time.monotonic() - began
    assert (model, text, error) == ("mid", FULL, None)
    assert DEFAULTS.first_byte_timeout_s - 0.1 < waited < DEFAULTS.first_byte_timeout_s + 3
    cheap = outcome_of(stack, "cheap")
    assert cheap.status == "error" and "no first byte within 5 s" in cheap.error
    assert outcome_of(stack, "mid").status == "ok"
    # a model too slow to start is judged: quality 0 for it, and only for it
    assert learned(stack) == [(stack.router.routes[0][0], 0.0, "gateway:error")]
    # and the gateway hung up on it at once
    wait_until(lambda: len(stack.fakes["cheap"].log.disconnects) == 1)
    assert stack.fakes["cheap"].log.disconnects[0] - began < waited + 1


def test_a_non_streamed_hang_fails_over_after_its_share_of_the_deadline(
    fresh: dict[str, FakeUpstream],
) -> None:
    """A non-streamed answer's first byte comes when it is whole, so the wait for it is
    the attempt's share of the deadline (a third of 60 s by default; 3 s here: 1 s)."""
    stack = started(fresh, deadline_s=3.0)
    try:
        fresh["cheap"].behavior.hang_s = 60.0
        began = time.monotonic()
        resp = stack.sdk().chat.completions.create(model="auto", messages=MESSAGES)
        waited = time.monotonic() - began
        assert resp.model == "mid" and resp.choices[0].message.content == FULL
        assert 0.9 < waited < 2.5
        assert "no first byte within 1 s" in outcome_of(stack, "cheap").error
    finally:
        stack.stop()


@pytest.mark.parametrize("streamed", [False, True], ids=["json", "stream"])
def test_a_trickling_upstream_is_cut_at_its_share_and_fails_over(
    fresh: dict[str, FakeUpstream], streamed: bool,
) -> None:
    """A byte every 50 ms never trips the between-bytes limit: the deadline's share does
    (json: 3 s / 3 attempts), or the first byte timeout (stream: set to 0.5 s)."""
    stack = started(fresh, deadline_s=3.0, first_byte_timeout_s=0.5)
    try:
        fresh["cheap"].behavior.trickle_s = 0.05
        began = time.monotonic()
        if streamed:
            model, text, error = read_stream(stack)
            assert (model, text, error) == ("mid", FULL, None)
        else:
            resp = stack.sdk().chat.completions.create(model="auto", messages=MESSAGES)
            assert resp.model == "mid"
        assert time.monotonic() - began < 2.5
        cheap = outcome_of(stack, "cheap")
        expected = "no first byte within 0.5 s" if streamed else "not finished within 1 s"
        assert cheap.status == "error" and expected in cheap.error
    finally:
        stack.stop()


def test_the_deadline_bounds_the_whole_request_body_reads_included(
    fresh: dict[str, FakeUpstream],
) -> None:
    """A pass-through model that trickles (no failover): 504 at the deadline, not when the
    upstream is done (the issue's 74.6 s with a 20 s deadline); 1 s here."""
    stack = started(fresh, deadline_s=1.0)
    try:
        fresh["big"].behavior.trickle_s = 0.05
        began = time.monotonic()
        with pytest.raises(openai.InternalServerError) as info:
            stack.sdk().chat.completions.create(model="big", messages=MESSAGES)
        assert time.monotonic() - began < 2.0
        assert (info.value.status_code, info.value.code) == (504, "upstream_timeout")
        big = outcome_of(stack, "big")
        assert big.status == "error" and "not finished within 1 s" in big.error
    finally:
        stack.stop()


def test_a_models_own_first_byte_timeout_overrides_the_default(stack: Stack) -> None:
    catalog = stack.router.catalog
    stack.router.catalog = catalog.with_model(
        replace(catalog.get("cheap"), first_byte_timeout_s=0.3))
    stack.fakes["cheap"].behavior.hang_s = 60.0
    began = time.monotonic()
    assert read_stream(stack)[:2] == ("mid", FULL)
    assert time.monotonic() - began < 2.0
    assert "no first byte within 0.3 s" in outcome_of(stack, "cheap").error


# -- honest outcomes ------------------------------------------------------------------


def test_a_stream_that_ends_cleanly_mid_answer_is_an_error_not_a_success(
    stack: Stack,
) -> None:
    stack.fakes["cheap"].behavior.end_after_chunks = 3
    model, text, error = read_stream(stack)
    assert (model, text) == ("cheap", "The quick brown")
    assert isinstance(error, openai.APIError)
    assert error.code == "upstream_protocol_error"
    assert "ended without a finish_reason" in error.message
    cheap = outcome_of(stack, "cheap")
    assert cheap.status == "error" and "ended without a finish_reason" in cheap.error
    assert len(stack.router.routes) == 1  # the client had the first bytes: no failover
    assert learned(stack) == [(stack.router.routes[0][0], 0.0, "gateway:error")]


def test_a_malformed_first_event_fails_over(stack: Stack) -> None:
    stack.fakes["cheap"].behavior.malformed_event = 0
    assert read_stream(stack) == ("mid", FULL, None)
    cheap = outcome_of(stack, "cheap")
    assert cheap.status == "error" and "malformed event" in cheap.error


def test_a_malformed_later_event_ends_with_an_error_event(stack: Stack) -> None:
    stack.fakes["cheap"].behavior.malformed_event = 3
    model, text, error = read_stream(stack)
    assert (model, text) == ("cheap", "The quick")
    # the SDK raises the gateway's error, not a JSONDecodeError on garbage passed through
    assert isinstance(error, openai.APIError) and not isinstance(error, ValueError)
    assert error.code == "upstream_protocol_error" and "malformed event" in error.message
    assert outcome_of(stack, "cheap").status == "error"


def test_a_malformed_json_body_fails_over(stack: Stack) -> None:
    stack.fakes["cheap"].behavior.malformed_event = 0
    resp = stack.sdk().chat.completions.create(model="auto", messages=MESSAGES)
    assert resp.model == "mid"
    assert "invalid JSON" in outcome_of(stack, "cheap").error


@pytest.mark.parametrize("streamed", [False, True], ids=["json", "stream"])
def test_a_200_with_an_error_fails_over_and_is_never_cached(
    fresh: dict[str, FakeUpstream], streamed: bool,
) -> None:
    stack = started(fresh, cache=True)
    try:
        fresh["cheap"].behavior.error_body = True
        if streamed:
            assert read_stream(stack) == ("mid", FULL, None)
        else:
            raw = stack.sdk().chat.completions.with_raw_response.create(
                model="auto", messages=MESSAGES, temperature=0)
            assert raw.parse().model == "mid"
        cheap = outcome_of(stack, "cheap")
        assert cheap.status == "error" and cheap.error.startswith("bad_answer")
        assert "the fake failed inside a 200" in cheap.error
        cache = stack.gateway.cache
        assert cache is not None
        if streamed:
            assert len(cache) == 0  # streams are never cached
            return
        # only mid's good answer is cached: the next identical request hits it
        again = stack.sdk().chat.completions.with_raw_response.create(
            model="auto", messages=MESSAGES, temperature=0)
        assert again.headers["x-routebandit-cache"] == "hit" and again.parse().model == "mid"
        # every model answering 200 with an error: 502, nothing more in the cache
        for fake in fresh.values():
            fake.behavior.error_body = True
        with pytest.raises(openai.InternalServerError) as info:
            stack.sdk().chat.completions.create(model="auto", messages=MESSAGES,
                                                temperature=0, seed=1)
        assert (info.value.status_code, info.value.code) == (502, "upstream_bad_answer")
        assert len(cache) == 1
    finally:
        stack.stop()


def test_a_cascade_answer_that_fails_its_last_check_is_rejected_and_not_cached(
    fresh: dict[str, FakeUpstream],
) -> None:
    stack = started(fresh, cache=True)
    try:
        for fake in fresh.values():
            fake.behavior.answer = "refusal"
        raw = stack.sdk().chat.completions.with_raw_response.create(
            model="auto", messages=MESSAGES, temperature=0,
            extra_body={"routebandit": {"cascade": True}})
        assert raw.parse().model == "big"  # the last model's answer is still returned
        assert raw.headers["x-routebandit-check"] == "refusal"
        decisions = [d for d, _ in stack.router.routes]
        assert [stack.outcomes(d)[0].status for d in decisions] == ["rejected"] * 3
        assert stack.gateway.cache is not None and len(stack.gateway.cache) == 0
        assert learned(stack) == [(d, 0.0, "gateway:rejected") for d in decisions]
        # streamed, the last answer is checked at its end too
        stack.router.routes.clear()
        stack.router.feedbacks.clear()
        assert read_stream(stack, extra_body={"routebandit": {"cascade": True}})[0] == "big"
        last = stack.outcomes(stack.router.routes[-1][0])[0]
        assert last.status == "rejected" and "refusal" in last.error
    finally:
        stack.stop()


# -- bounded answers ------------------------------------------------------------------


def test_an_answer_past_max_response_bytes_fails_cleanly_and_fails_over(stack: Stack) -> None:
    """With the defaults (16 MiB): a 20 MiB answer is cut, the next model answers."""
    stack.fakes["cheap"].behavior.huge_bytes = 20 * 2**20
    began = time.monotonic()
    resp = stack.sdk().chat.completions.create(model="auto", messages=MESSAGES)
    assert resp.model == "mid" and time.monotonic() - began < 10
    cheap = outcome_of(stack, "cheap")
    assert cheap.status == "error" and "larger than max_response_bytes" in cheap.error


def test_a_stream_past_max_response_bytes_ends_with_an_error_event(
    fresh: dict[str, FakeUpstream],
) -> None:
    stack = started(fresh, max_response_bytes=2**20)  # 1 MiB: a shorter test
    try:
        fresh["cheap"].behavior.huge_bytes = 2 * 2**20
        model, text, error = read_stream(stack)
        assert model == "cheap" and 0 < len(text) <= 2**20
        assert isinstance(error, openai.APIError) and error.code == "upstream_too_large"
        assert outcome_of(stack, "cheap").status == "error"
    finally:
        stack.stop()


# -- capacity refusals ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "retry_after", "outcome"),
    [(429, "7", "throttled"), (429, None, "throttled"), (503, "7", "throttled"),
     (503, None, "error")],
    ids=["429-retry-after", "429", "503-retry-after", "503"],
)
def test_capacity_refusals_cool_down_fail_over_and_teach_nothing(
    stack: Stack, status: int, retry_after: str | None, outcome: str,
) -> None:
    cheap = stack.fakes["cheap"]
    cheap.behavior.fail_status, cheap.behavior.retry_after = status, retry_after
    assert stack.sdk().chat.completions.create(model="auto", messages=MESSAGES).model == "mid"
    first = outcome_of(stack, "cheap")
    assert first.status == outcome and f"answered {status}" in first.error
    expected = [(stack.router.routes[0][0], 0.0, "gateway:error")] if outcome == "error" else []
    assert learned(stack) == expected
    cooldown = stack.gateway.cooldown
    if retry_after is None:
        assert cooldown.state("cheap") == "closed"  # one failure of three
        return
    # Retry-After holds the model back at once, without waiting for three failures
    assert cooldown.state("cheap") == "open" and 6 < cooldown.open_for("cheap") <= 7
    assert stack.sdk().chat.completions.create(model="auto", messages=MESSAGES).model == "mid"
    assert len(cheap.log.requests) == 1  # not even tried
    stack.clock.now += 8
    cheap.behavior.fail_status = None
    assert stack.sdk().chat.completions.create(model="auto", messages=MESSAGES).model == "cheap"


def test_every_model_overloaded_is_a_503_with_retry_after(stack: Stack) -> None:
    for fake in stack.fakes.values():
        fake.behavior.fail_status, fake.behavior.retry_after = 503, "2"
    with pytest.raises(openai.InternalServerError) as info:
        stack.sdk().chat.completions.create(model="auto", messages=MESSAGES)
    assert (info.value.status_code, info.value.code) == (503, "upstream_overloaded")
    assert info.value.response.headers["retry-after"] == "2"


# -- visible faults ---------------------------------------------------------------------


def test_failures_failovers_and_breakers_are_logged_with_decision_ids_and_counted(
    stack: Stack, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="routebandit.gateway")
    cheap = stack.fakes["cheap"]
    cheap.behavior.fail_status = 500
    for _ in range(3):  # the third consecutive failure opens cheap's breaker
        stack.sdk().chat.completions.create(model="auto", messages=MESSAGES)
    first_id = stack.router.routes[0][0]
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith(f"upstream failure: decision {first_id}, model cheap")
               for line in lines)
    assert any(line.startswith(f"failover: decision {first_id} (cheap) failed; trying mid")
               for line in lines)
    [opened] = [line for line in lines if line.startswith("breaker opened")]
    assert "model cheap is skipped for 30 s" in opened
    cheap.behavior.fail_status = None
    stack.clock.now += 31
    assert stack.sdk().chat.completions.create(model="auto", messages=MESSAGES).model == "cheap"
    probe_id = stack.router.routes[-1][0]
    assert f"breaker closed: model cheap answered (decision {probe_id})" in [
        r.getMessage() for r in caplog.records]
    metrics = stack.gateway.metrics.render().decode()
    assert ('routebandit_upstream_failures_total{kind="status_error",model="cheap",'
            'status="error"} 3.0') in metrics
    assert 'routebandit_failovers_total{model="cheap",to="mid"} 3.0' in metrics
    assert 'routebandit_breaker_transitions_total{model="cheap",state="open"} 1.0' in metrics
    assert 'routebandit_breaker_transitions_total{model="cheap",state="closed"} 1.0' in metrics


# -- clients that leave -----------------------------------------------------------------


def _post(port: int, body: dict[str, Any]) -> socket.socket:
    data = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                 % (len(data), data))
    return sock


def _read_until(sock: socket.socket, marker: bytes) -> None:
    got = b""
    sock.settimeout(10)
    while marker not in got:
        piece = sock.recv(65536)
        assert piece, "the gateway closed the connection"
        got += piece


def _loop_tasks(stack: Stack) -> int:
    return int(httpx.get(f"{stack.server.url}/_tasks", timeout=10).json())


@pytest.mark.parametrize("transport", ["httpx", "aiohttp"])
@pytest.mark.parametrize("when", ["waiting", "stream-waiting", "mid-stream"])
def test_a_client_that_leaves_is_let_go(
    fresh: dict[str, FakeUpstream], transport: str, when: str,
) -> None:
    """50 clients hang up: each upstream call is cancelled at once, recorded as cancelled,
    teaches nothing, tries no other model, and leaves no task or connection behind."""
    n = 50
    stack = start_stack(fresh, transport=transport)

    async def tasks() -> int:
        return len(asyncio.all_tasks())

    stack.server.app.add_api_route("/_tasks", tasks)
    cheap = fresh["cheap"]
    try:
        assert stack.sdk().chat.completions.create(model="auto", messages=MESSAGES)
        wait_until(lambda: len(stack.router.outcomes) == 1)
        baseline = _loop_tasks(stack)
        stack.router.routes.clear()
        stack.router.outcomes.clear()
        cheap.log.requests.clear()
        if when == "mid-stream":
            cheap.behavior.chunk_delay_s = 30.0  # the first chunk comes, then nothing
        else:
            cheap.behavior.hang_s = 30.0
        body = {"model": "auto", "messages": MESSAGES, "stream": when != "waiting"}
        socks = [_post(stack.server.port, body) for _ in range(n)]
        if when == "mid-stream":
            for sock in socks:
                _read_until(sock, b"data: ")
        wait_until(lambda: len(cheap.log.requests) == n)
        left = time.monotonic()
        for sock in socks:
            sock.close()
        wait_until(lambda: len(cheap.log.disconnects) == n, timeout=5)
        assert max(cheap.log.disconnects) - left < 2.0  # promptly, not at a timeout
        wait_until(lambda: len(stack.router.outcomes) == n)
        outcomes = [o for [o] in stack.router.outcomes.values()]
        assert {(o.model, o.status) for o in outcomes} == {("cheap", "cancelled")}
        assert all("client went away" in (o.error or "") for o in outcomes)
        assert len(stack.router.routes) == n  # no failover for nobody
        assert not fresh["mid"].log.requests and not fresh["big"].log.requests
        assert learned(stack) == []
        assert stack.gateway.cooldown.state("cheap") == "closed"
        # nothing left behind: tasks, the upstream's connections, the clients' ones
        wait_until(lambda: not stack.gateway._tasks)
        wait_until(lambda: _loop_tasks(stack) <= baseline)
        assert stack.server._server is not None and cheap._server._server is not None
        wait_until(lambda: len(cheap._server._server.server_state.connections) <= 2)
        wait_until(lambda: len(stack.server._server.server_state.connections) <= 2)
    finally:
        stack.stop()
