"""The opt-in aiohttp transport under the httpx client: same behaviour, end to end."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from serving.gateway import GatewayConfig
from serving.upstream import Timeouts
from tests.fakes.fake_upstream import FakeUpstream
from tests.serving.gateway_stack import Stack, reset, start_stack, started_fakes

MESSAGES = [{"role": "user", "content": "Tell me about foxes"}]


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeUpstream]]:
    yield from started_fakes()


@pytest.fixture
def stack(fakes: dict[str, FakeUpstream]) -> Iterator[Stack]:
    for fake in fakes.values():
        reset(fake)
    # A 1.5 s deadline: a model that hangs before its headers has its share, 0.5 s.
    s = start_stack(fakes, transport="aiohttp", timeouts=Timeouts(read=0.5),
                    config=GatewayConfig(deadline_s=1.5))
    yield s
    s.stop()
    for fake in fakes.values():
        if not fake._server.running:
            fake.start()


def test_answer_and_outcome(stack: Stack) -> None:
    raw = stack.sdk().chat.completions.with_raw_response.create(
        model="auto", messages=MESSAGES, temperature=0.2)
    assert raw.parse().model == "cheap"
    fake = stack.fakes["cheap"]
    assert fake.log.requests[-1] == {"model": "cheap-wire", "messages": MESSAGES,
                                     "temperature": 0.2}
    assert fake.log.auth[-1] == "Bearer sk-fake-123"
    [outcome] = stack.outcomes(raw.headers["x-routebandit-decision-id"])
    usage = fake.log.usages[-1]
    assert (outcome.input_tokens, outcome.output_tokens, outcome.status) == (
        usage["prompt_tokens"], usage["completion_tokens"], "ok")


def test_stream(stack: Stack) -> None:
    chunks = list(stack.sdk().chat.completions.create(model="auto", messages=MESSAGES,
                                                       stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "The quick brown fox jumps over the lazy dog."
    assert {c.model for c in chunks} == {"cheap"}


@pytest.mark.parametrize("failure", ["down", 503, "hang"], ids=str)
def test_failover(stack: Stack, failure: object) -> None:
    cheap = stack.fakes["cheap"]
    if failure == "down":
        cheap.stop()
    elif failure == "hang":
        cheap.behavior.hang_s = 2.0
    else:
        cheap.behavior.fail_status = 503
    raw = stack.sdk().chat.completions.with_raw_response.create(model="auto",
                                                                messages=MESSAGES)
    assert raw.headers["x-routebandit-model"] == "mid"
    [failed] = stack.outcomes(stack.router.routes[0][0])
    expected = {"down": "connect_error", "hang": "timeout", 503: "status_error"}[failure]
    status = "unreachable" if failure == "down" else "error"
    assert failed.status == status and (failed.error or "").startswith(expected)


def test_client_error_passes_through(stack: Stack) -> None:
    stack.fakes["cheap"].behavior.fail_status = 400
    with pytest.raises(openai.BadRequestError):
        stack.sdk().chat.completions.create(model="auto", messages=MESSAGES)


def test_broken_stream(stack: Stack) -> None:
    stack.fakes["cheap"].behavior.break_after_chunks = 2
    with stack.sdk().chat.completions.with_streaming_response.create(
            model="auto", messages=MESSAGES, stream=True) as raw:
        decision_id = raw.headers["x-routebandit-decision-id"]
        with pytest.raises(openai.APIError):
            for _ in raw.parse():
                pass
    [outcome] = stack.outcomes(decision_id)
    assert outcome.status == "error" and (outcome.error or "").startswith("protocol_error")
