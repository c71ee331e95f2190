"""Failover, cooldown and recovery, cascade escalation and deadlines, over real HTTP."""

from __future__ import annotations

import time
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
def fresh(fakes: dict[str, FakeUpstream]) -> Iterator[dict[str, FakeUpstream]]:
    for fake in fakes.values():
        reset(fake)
    yield fakes
    for fake in fakes.values():
        if not fake._server.running:
            fake.start()


@pytest.fixture(params=["httpx", "aiohttp"])
def transport(request: pytest.FixtureRequest) -> str:
    """Every test runs on both upstream transports (aiohttp is the default)."""
    return str(request.param)


@pytest.fixture
def stack(fresh: dict[str, FakeUpstream], transport: str) -> Iterator[Stack]:
    s = start_stack(fresh, cooldown=(2, 30.0), transport=transport)
    yield s
    s.stop()



def ask(stack: Stack, **kwargs: object) -> tuple[str, str, str]:
    raw = stack.sdk().chat.completions.with_raw_response.create(
        model=kwargs.pop("model", "auto"), messages=MESSAGES, **kwargs)  # type: ignore[arg-type]
    return (raw.headers["x-routebandit-decision-id"], raw.headers["x-routebandit-model"],
            raw.parse().model)


@pytest.mark.parametrize("failure", ["down", 503, 500, 429], ids=str)
def test_failover_to_next_ranked_model(stack: Stack, failure: object) -> None:
    cheap = stack.fakes["cheap"]
    if failure == "down":
        cheap.stop()
    else:
        cheap.behavior.fail_status = failure  # type: ignore[assignment]
    decision_id, header_model, body_model = ask(stack)
    assert header_model == body_model == "mid"
    [(first_id, kind1, _), (second_id, kind2, forced)] = stack.router.kinds()
    assert (kind1, kind2, forced) == ("policy", "failover", "mid")
    assert second_id == decision_id
    [failed] = stack.outcomes(first_id)
    status = {"down": "unreachable", "429": "throttled"}.get(str(failure), "error")
    assert failed.model == "cheap" and failed.status == status
    assert failed.cost_usd == 0 and failed.output_tokens == 0
    expected = "connect_error" if failure == "down" else f"answered {failure}"
    assert expected in (failed.error or "")
    [ok] = stack.outcomes(second_id)
    assert ok.model == "mid" and ok.status == "ok"
    # A failed answer is fed back as quality 0 for the model that failed, and only for
    # it; a model out of capacity or out of reach says nothing of its answers.
    learned = [(first_id, 0.0, "gateway:error")] if status == "error" else []
    assert stack.router.feedbacks == learned


def test_stream_fails_over_before_first_chunk(stack: Stack) -> None:
    stack.fakes["cheap"].behavior.fail_status = 502
    chunks = list(stack.sdk().chat.completions.create(model="auto", messages=MESSAGES,
                                                      stream=True))
    assert {c.model for c in chunks} == {"mid"}


def test_client_error_is_returned_unchanged_without_failover(stack: Stack) -> None:
    stack.fakes["cheap"].behavior.fail_status = 400
    with pytest.raises(openai.BadRequestError) as info:
        stack.sdk().chat.completions.create(model="auto", messages=MESSAGES)
    assert info.value.body["message"] == "fake upstream error 400"  # type: ignore[index]
    assert info.value.response.headers["x-routebandit-model"] == "cheap"
    assert len(stack.router.routes) == 1 and not stack.fakes["mid"].log.requests
    [outcome] = stack.outcomes(stack.router.routes[0][0])
    assert outcome.status == "client_error"


def test_all_models_failing_is_an_openai_error(stack: Stack) -> None:
    for fake in stack.fakes.values():
        fake.behavior.fail_status = 503
    with pytest.raises(openai.InternalServerError) as info:
        stack.sdk().chat.completions.create(model="auto", messages=MESSAGES)
    assert info.value.status_code == 502
    assert info.value.code == "upstream_status_error"
    assert len(stack.router.routes) == 3  # max_attempts


def test_rate_limited_everywhere_is_429(stack: Stack) -> None:
    for fake in stack.fakes.values():
        fake.behavior.fail_status = 429
    with pytest.raises(openai.RateLimitError):
        stack.sdk().chat.completions.create(model="auto", messages=MESSAGES)


def test_timeout_fails_over_within_deadline(fresh: dict[str, FakeUpstream],
                                            transport: str) -> None:
    # 0.9 s for three attempts: a model that sends no headers has 0.3 s of it.
    stack = start_stack(fresh, config=GatewayConfig(deadline_s=0.9), transport=transport)
    try:
        fresh["cheap"].behavior.hang_s = 2.0
        decision_id, model, _ = ask(stack)
        assert model == "mid"
        failed = stack.outcomes(stack.router.routes[0][0])[0]
        assert failed.status == "error" and "timeout" in (failed.error or "")
        assert 250 < failed.latency_ms < 1500
    finally:
        stack.stop()


def test_deadline_bounds_the_whole_request(fresh: dict[str, FakeUpstream],
                                           transport: str) -> None:
    stack = start_stack(fresh, config=GatewayConfig(deadline_s=0.6), transport=transport)
    try:
        for fake in fresh.values():
            fake.behavior.hang_s = 1.0
        started = time.monotonic()
        with pytest.raises(openai.APIStatusError) as info:
            stack.sdk().chat.completions.create(model="auto", messages=MESSAGES)
        assert time.monotonic() - started < 0.6 + 0.5
        assert info.value.status_code == 504
        # each model had its share of the deadline, and none could answer in it
        assert len(stack.router.routes) == 3
        for decision_id, _ in stack.router.routes:
            [outcome] = stack.outcomes(decision_id)
            assert outcome.status == "error" and "timed out" in (outcome.error or "")
    finally:
        stack.stop()


def test_passthrough_does_not_fail_over(stack: Stack) -> None:
    stack.fakes["big"].behavior.fail_status = 503
    with pytest.raises(openai.InternalServerError):
        stack.sdk().chat.completions.create(model="big", messages=MESSAGES)
    assert len(stack.router.routes) == 1


def test_cooldown_skips_failing_model_until_probe_recovers(stack: Stack) -> None:
    cheap = stack.fakes["cheap"]
    cheap.behavior.fail_status = 503
    assert ask(stack)[1] == "mid"
    assert ask(stack)[1] == "mid"  # second consecutive failure: cheap cools down
    assert len(cheap.log.requests) == 2
    assert stack.gateway.cooldown.state("cheap") == "open"
    # while cooling down the router is not even offered cheap
    assert ask(stack)[1] == "mid"
    assert len(cheap.log.requests) == 2
    assert "cheap" not in (stack.router.routes[-1][1].allow or ())
    # the cooldown ends; the upstream is still broken, so the probe fails and backs off
    stack.clock.now += 31
    assert ask(stack)[1] == "mid"
    assert len(cheap.log.requests) == 3
    assert stack.gateway.cooldown.state("cheap") == "open"
    stack.clock.now += 31
    assert ask(stack)[1] == "mid"  # doubled backoff: still skipped
    assert len(cheap.log.requests) == 3
    # recovered upstream: the next probe succeeds and closes the breaker
    cheap.behavior.fail_status = None
    stack.clock.now += 31
    assert ask(stack)[1] == "cheap"
    assert stack.gateway.cooldown.state("cheap") == "closed"
    assert ask(stack)[1] == "cheap"


def test_cooldown_for_a_model_that_is_down_then_back(stack: Stack) -> None:
    cheap = stack.fakes["cheap"]
    cheap.stop()
    ask(stack), ask(stack)
    assert stack.gateway.cooldown.state("cheap") == "open"
    cheap.start()
    stack.clock.now += 31
    assert ask(stack)[1] == "cheap"


@pytest.mark.parametrize(
    ("answer", "extra"),
    [("truncated", {}), ("empty", {}), ("refusal", {}),
     ("invalid_json", {"response_format": {"type": "json_object"}})],
    ids=["truncated", "empty", "refusal", "invalid-json"],
)
def test_cascade_escalates_when_the_answer_fails_a_check(
    stack: Stack, answer: str, extra: dict[str, object]
) -> None:
    stack.fakes["cheap"].behavior.answer = answer
    if extra:
        stack.fakes["mid"].behavior.answer = "json"
    decision_id, model, _ = ask(stack, extra_body={"routebandit": {"cascade": True}}, **extra)
    assert model == "mid"
    kinds = stack.router.kinds()
    assert [k[1:] for k in kinds] == [("cascade", "cheap"), ("cascade", "mid")]
    [rejected] = stack.outcomes(kinds[0][0])
    assert rejected.status == "rejected" and rejected.error == f"cascade check: {answer}"
    assert rejected.cost_usd > 0  # the rejected answer was still paid for
    assert stack.outcomes(decision_id)[0].status == "ok"
    assert stack.router.feedbacks == [(kinds[0][0], 0.0, "gateway:rejected")]
    # the routebandit extension is not forwarded upstream
    assert "routebandit" not in stack.fakes["cheap"].log.requests[-1]


def test_cascade_accepts_a_good_cheap_answer(stack: Stack) -> None:
    stack.router.preference = ["big", "mid", "cheap"]  # the policy's taste is irrelevant
    _, model, _ = ask(stack, extra_body={"routebandit": {"cascade": True}})
    assert model == "cheap"
    assert len(stack.router.routes) == 1


def test_cascade_by_profile_and_streamed(fresh: dict[str, FakeUpstream],
                                        transport: str) -> None:
    stack = start_stack(fresh, config=GatewayConfig(cascade_profiles=frozenset({"cheap"})),
                        transport=transport)
    try:
        fresh["cheap"].behavior.answer = "refusal"
        chunks = list(stack.sdk().chat.completions.create(
            model="auto:cheap", messages=MESSAGES, stream=True))
        assert {c.model for c in chunks} == {"mid"}
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text.startswith("The quick brown fox")
        first_id = stack.router.routes[0][0]
        assert stack.outcomes(first_id)[0].status == "rejected"
    finally:
        stack.stop()


def test_empty_stream_fails_over(stack: Stack) -> None:
    stack.fakes["cheap"].behavior.empty_stream = True
    chunks = list(stack.sdk().chat.completions.create(model="auto", messages=MESSAGES,
                                                       stream=True))
    assert {c.model for c in chunks} == {"mid"}
    [failed] = stack.outcomes(stack.router.routes[0][0])
    assert failed.status == "error" and "before any event" in (failed.error or "")


def test_stream_stalling_past_the_read_timeout_ends_with_an_error(
    fresh: dict[str, FakeUpstream], transport: str,
) -> None:
    stack = start_stack(fresh, timeouts=Timeouts(read=0.3), transport=transport)
    try:
        fresh["cheap"].behavior.chunk_delay_s = 0.6
        with stack.sdk().chat.completions.with_streaming_response.create(
                model="auto", messages=MESSAGES, stream=True) as raw:
            decision_id = raw.headers["x-routebandit-decision-id"]
            with pytest.raises(openai.APIError, match="timed out"):
                for _ in raw.parse():
                    pass
        [outcome] = stack.outcomes(decision_id)
        assert outcome.status == "error" and (outcome.error or "").startswith("timeout")
        assert stack.gateway.cooldown.state("cheap") == "closed"  # one failure of three
    finally:
        stack.stop()
