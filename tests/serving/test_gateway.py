"""The gateway end to end: the official openai SDK -> routebandit -> fake upstreams."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import httpx
import openai
import pytest

from serving.gateway import GatewayConfig
from tests.fakes.fake_upstream import FakeUpstream
from tests.serving.gateway_stack import (
    KEY,
    MODELS,
    Stack,
    reset,
    start_stack,
    started_fakes,
    wait_until,
)

MESSAGES = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say something about foxes please"}]


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeUpstream]]:
    yield from started_fakes()


@pytest.fixture(params=["httpx", "aiohttp"])
def transport(request: pytest.FixtureRequest) -> str:
    """Every test runs on both upstream transports (aiohttp is the default)."""
    return str(request.param)


@pytest.fixture
def stack(fakes: dict[str, FakeUpstream], transport: str) -> Iterator[Stack]:
    for fake in fakes.values():
        reset(fake)
    s = start_stack(fakes, transport=transport)
    yield s
    s.stop()



def expected_cost(model: str, usage: dict[str, int]) -> float:
    p_in, p_out = MODELS[model]
    return (usage["prompt_tokens"] * p_in + usage["completion_tokens"] * p_out) / 1e6


def test_sync_auto_routes_forwards_and_measures(stack: Stack) -> None:
    raw = stack.sdk().chat.completions.with_raw_response.create(
        model="auto", messages=MESSAGES, temperature=0.3, seed=7, logit_bias={"50256": -100},
        user="u-1")
    resp = raw.parse()
    decision_id = raw.headers["x-routebandit-decision-id"]
    assert resp.model == "cheap" and raw.headers["x-routebandit-model"] == "cheap"
    assert resp.choices[0].message.content.startswith("The quick brown fox")
    fake = stack.fakes["cheap"]
    sent = fake.log.requests[-1]
    # the upstream gets its own model name; every other field is forwarded untouched
    assert sent["model"] == "cheap-wire"
    assert {k: v for k, v in sent.items() if k != "model"} == {
        "messages": MESSAGES, "temperature": 0.3, "seed": 7, "logit_bias": {"50256": -100},
        "user": "u-1"}
    assert fake.log.auth[-1] == f"Bearer {KEY}"
    [outcome] = stack.outcomes(decision_id)
    usage = fake.log.usages[-1]
    assert resp.usage is not None and resp.usage.prompt_tokens == usage["prompt_tokens"]
    assert (outcome.model, outcome.status, outcome.error) == ("cheap", "ok", None)
    assert (outcome.input_tokens, outcome.output_tokens) == (
        usage["prompt_tokens"], usage["completion_tokens"])
    assert outcome.tokens_estimated is False
    assert outcome.cost_usd == pytest.approx(expected_cost("cheap", usage))
    assert 0 < outcome.latency_ms < 5000 and outcome.ttft_ms is not None
    assert stack.router.kinds() == [(decision_id, "policy", "")]


async def test_async_client_and_profile(stack: Stack) -> None:
    client = openai.AsyncOpenAI(base_url=stack.base_url, api_key="k", max_retries=0,
                                timeout=10)
    raw = await client.chat.completions.with_raw_response.create(
        model="auto:careful", messages=MESSAGES)
    resp = raw.parse()
    await client.close()
    assert resp.model == "cheap"
    decision_id = raw.headers["x-routebandit-decision-id"]
    assert stack.router.routes[-1][1].profile == "careful"
    assert stack.outcomes(decision_id)[0].status == "ok"


def test_passthrough_is_logged_as_non_policy(stack: Stack) -> None:
    raw = stack.sdk().chat.completions.with_raw_response.create(model="big", messages=MESSAGES)
    assert raw.parse().model == "big"
    assert stack.fakes["big"].log.requests[-1]["model"] == "big-wire"
    decision_id = raw.headers["x-routebandit-decision-id"]
    assert stack.router.kinds() == [(decision_id, "passthrough", "big")]
    assert stack.outcomes(decision_id)[0].model == "big"


@pytest.mark.parametrize("client_usage", [False, True], ids=["no-usage", "include-usage"])
def test_stream_passes_chunks_with_routed_model(stack: Stack, client_usage: bool) -> None:
    extra = {"stream_options": {"include_usage": True}} if client_usage else {}
    with stack.sdk().chat.completions.with_streaming_response.create(
            model="auto", messages=MESSAGES, stream=True, **extra) as raw:
        decision_id = raw.headers["x-routebandit-decision-id"]
        assert raw.headers["x-routebandit-model"] == "cheap"
        chunks = list(raw.parse())
    assert chunks and all(c.model == "cheap" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "The quick brown fox jumps over the lazy dog."
    usage_chunks = [c for c in chunks if c.usage is not None]
    fake = stack.fakes["cheap"]
    # usage is always asked of the upstream, and shown to the client only if it asked
    assert fake.log.requests[-1]["stream_options"] == {"include_usage": True}
    assert len(usage_chunks) == (1 if client_usage else 0)
    [outcome] = stack.outcomes(decision_id)
    usage = fake.log.usages[-1]
    assert (outcome.input_tokens, outcome.output_tokens, outcome.tokens_estimated) == (
        usage["prompt_tokens"], usage["completion_tokens"], False)
    assert outcome.cost_usd == pytest.approx(expected_cost("cheap", usage))
    assert outcome.status == "ok"
    assert outcome.ttft_ms is not None and outcome.ttft_ms <= outcome.latency_ms


def test_stream_is_not_buffered(stack: Stack) -> None:
    stack.fakes["cheap"].behavior.chunk_delay_s = 0.05
    start = time.monotonic()
    arrivals = []
    stream = stack.sdk().chat.completions.create(model="auto", messages=MESSAGES, stream=True)
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic() - start)
    assert len(arrivals) == 9
    # the first word reaches the client long before the last one is generated
    assert arrivals[0] < 0.5 * arrivals[-1]


async def test_async_stream(stack: Stack) -> None:
    client = openai.AsyncOpenAI(base_url=stack.base_url, api_key="k", max_retries=0,
                                timeout=10)
    stream = await client.chat.completions.create(model="mid", messages=MESSAGES, stream=True)
    chunks = [c async for c in stream]
    await client.close()
    assert {c.model for c in chunks} == {"mid"}


def test_usage_absent_is_estimated_and_marked(stack: Stack) -> None:
    stack.fakes["cheap"].behavior.usage = False
    raw = stack.sdk().chat.completions.with_raw_response.create(model="auto", messages=MESSAGES)
    assert raw.parse().usage is None
    [outcome] = stack.outcomes(raw.headers["x-routebandit-decision-id"])
    assert outcome.tokens_estimated is True
    assert outcome.input_tokens > 0 and outcome.output_tokens > 0
    assert outcome.cost_usd == pytest.approx(
        (outcome.input_tokens * 0.1 + outcome.output_tokens * 0.4) / 1e6)


def test_broken_stream_ends_with_error_and_is_recorded(stack: Stack) -> None:
    stack.fakes["cheap"].behavior.break_after_chunks = 3
    with stack.sdk().chat.completions.with_streaming_response.create(
            model="auto", messages=MESSAGES, stream=True) as raw:
        decision_id = raw.headers["x-routebandit-decision-id"]
        with pytest.raises(openai.APIError):
            for _ in raw.parse():
                pass
    [outcome] = stack.outcomes(decision_id)
    assert outcome.status == "error" and "protocol_error" in (outcome.error or "")


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({"model": "gpt-9", "messages": MESSAGES}, 404, "model_not_found", "model"),
        ({"model": "auto:nope", "messages": MESSAGES}, 404, "model_not_found", "model"),
        ({"messages": MESSAGES}, 400, "missing_model", "model"),
        ({"model": "auto", "messages": []}, 400, None, "messages"),
        ({"model": "auto", "messages": [{"role": "robot", "content": "x"}]}, 400,
         "invalid_value", "messages[0].role"),
    ],
    ids=["unknown-model", "unknown-profile", "no-model", "no-messages", "bad-role"],
)
def test_errors_in_openai_format(stack: Stack, body: dict[str, object], status: int,
                                 code: str | None, param: str | None) -> None:
    r = httpx.post(f"{stack.base_url}/chat/completions", json=body, timeout=10)
    assert r.status_code == status
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert (err["code"], err["param"], err["type"]) == (code, param, "invalid_request_error")


def test_invalid_json_body(stack: Stack) -> None:
    r = httpx.post(f"{stack.base_url}/chat/completions", content=b"{nope", timeout=10,
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    assert r.json()["error"]["param"] == "body"
    untyped = httpx.post(f"{stack.base_url}/chat/completions", content=b"{}", timeout=10)
    assert untyped.status_code == 415
    assert untyped.json()["error"]["code"] == "unsupported_media_type"


def test_sdk_raises_not_found_for_unknown_model(stack: Stack) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        stack.sdk().chat.completions.create(model="gpt-9", messages=MESSAGES)
    assert info.value.code == "model_not_found"


def test_cache_serves_deterministic_requests(fakes: dict[str, FakeUpstream]) -> None:
    for fake in fakes.values():
        reset(fake)
    stack = start_stack(fakes, config=GatewayConfig(cache=True))
    try:
        client = stack.sdk()
        first = client.chat.completions.with_raw_response.create(
            model="auto", messages=MESSAGES, temperature=0)
        second = client.chat.completions.with_raw_response.create(
            model="auto", messages=MESSAGES, temperature=0)
        client.chat.completions.create(model="auto", messages=MESSAGES, temperature=0.7)
        assert second.headers.get("x-routebandit-cache") == "hit"
        assert second.parse().model == "cheap"
        assert (second.headers["x-routebandit-decision-id"]
                == first.headers["x-routebandit-decision-id"])
        assert len(fakes["cheap"].log.requests) == 2  # the hit never reached the upstream
    finally:
        stack.stop()


def test_default_quality_is_applied_after_delay(fakes: dict[str, FakeUpstream]) -> None:
    for fake in fakes.values():
        reset(fake)
    stack = start_stack(fakes, config=GatewayConfig(default_quality=0.7,
                                                    default_quality_delay_s=0.05))
    try:
        raw = stack.sdk().chat.completions.with_raw_response.create(
            model="auto", messages=MESSAGES)
        decision_id = raw.headers["x-routebandit-decision-id"]
        wait_until(lambda: stack.router.defaults == [(decision_id, 0.7)])
    finally:
        stack.stop()


async def test_a_stream_never_started_is_recorded_and_closed(
    fakes: dict[str, FakeUpstream],
) -> None:
    from serving.egress import DEVELOPMENT
    from serving.gateway import Gateway, StreamAnswer
    from serving.upstream import Upstream, new_client
    from tests.fakes.stub_router import StubRouter
    from tests.serving.gateway_stack import KEY_ENV, catalog_for

    for fake in fakes.values():
        reset(fake)
    router = StubRouter(catalog_for(fakes))
    client = new_client(egress=DEVELOPMENT)  # the fakes are on 127.0.0.1
    gateway = Gateway(router=router,
                      upstream=Upstream(client, env={KEY_ENV: KEY}, egress=DEVELOPMENT))
    answer = await gateway.chat({"model": "auto", "messages": MESSAGES, "stream": True})
    assert isinstance(answer, StreamAnswer)
    answer.abandon()  # the client left before the body started
    answer.abandon()  # idempotent
    await gateway.aclose()
    [(decision_id, _)] = router.routes
    [outcome] = router.outcomes[decision_id]
    assert outcome.status == "cancelled"
    await client.aclose()


def test_compressed_answers_are_decoded(fakes: dict[str, FakeUpstream], transport: str) -> None:
    for fake in fakes.values():
        reset(fake)
    fakes["cheap"].behavior.gzip = True
    stack = start_stack(fakes, transport=transport)
    try:
        raw = stack.sdk().chat.completions.with_raw_response.create(
            model="auto", messages=MESSAGES)
        assert raw.parse().choices[0].message.content.startswith("The quick brown fox")
        [outcome] = stack.outcomes(raw.headers["x-routebandit-decision-id"])
        assert outcome.status == "ok" and not outcome.tokens_estimated
    finally:
        stack.stop()


async def test_outcomes_are_handed_over_in_batches(fakes: dict[str, FakeUpstream]) -> None:
    from serving.egress import DEVELOPMENT
    from serving.gateway import Answer, Gateway
    from serving.upstream import Upstream, new_client
    from tests.fakes.stub_router import StubRouter
    from tests.serving.gateway_stack import KEY_ENV, catalog_for

    for fake in fakes.values():
        reset(fake)
    router = StubRouter(catalog_for(fakes))
    client = new_client(transport="aiohttp", egress=DEVELOPMENT)  # fakes on 127.0.0.1
    gateway = Gateway(router=router,
                      upstream=Upstream(client, env={KEY_ENV: KEY}, egress=DEVELOPMENT),
                      config=GatewayConfig(outcome_interval_s=5.0))
    try:
        for _ in range(3):
            answer = await gateway.chat({"model": "auto", "messages": MESSAGES})
            assert isinstance(answer, Answer)
        assert router.outcomes == {}  # held for the batch...
        await gateway.drain()  # ...which drain (and shutdown) hands over at once
        assert sorted(router.outcomes) == ["d1", "d2", "d3"]
        assert all(o.status == "ok" for [o] in router.outcomes.values())
    finally:
        await gateway.aclose()
        await client.aclose()


async def test_a_body_streamed_past_the_limit_is_refused_in_openai_format() -> None:
    from fastapi import FastAPI

    from serving.limits import BodyLimit
    from serving.routes import chat

    app = FastAPI()
    app.add_middleware(BodyLimit, max_bytes=1024)
    app.include_router(chat.router)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: caught while reading
        for _ in range(10):
            yield b" " * 500

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://gateway") as client:
        r = await client.post("/v1/chat/completions", content=chunks(),
                              headers={"content-type": "application/json"})
    assert r.status_code == 413
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "request_too_large"
    assert set(error) == {"message", "type", "param", "code"}
