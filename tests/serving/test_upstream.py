"""The upstream client: httpx errors become UpstreamError, keys come from env, SSE splits."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from bandit import ModelSpec
from serving.upstream import (
    Upstream,
    UpstreamConfigError,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)

SPEC = ModelSpec(name="m", base_url="http://up.test/v1", api_key_env="UP_API_KEY",
                 upstream_model="m-wire")
OK = {"id": "x", "object": "chat.completion",
      "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                   "finish_reason": "stop"}]}


def upstream(handler: Callable[[httpx.Request], httpx.Response],
             env: dict[str, str] | None = None) -> Upstream:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return Upstream(client, env={"UP_API_KEY": "sk-1"} if env is None else env)


async def test_complete_sends_key_and_body() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=OK)

    up = upstream(handler)
    out = await up.complete(SPEC, {"model": "m-wire", "messages": []})
    await up.client.aclose()
    assert out.body == OK
    assert str(seen[0].url) == "http://up.test/v1/chat/completions"
    assert seen[0].headers["authorization"] == "Bearer sk-1"
    assert json.loads(seen[0].content) == {"model": "m-wire", "messages": []}


def _raise(exc: Exception) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


@pytest.mark.parametrize(
    ("handler", "error", "retryable"),
    [
        (_raise(httpx.ConnectError("refused")), UpstreamConnectError, True),
        (_raise(httpx.ReadTimeout("slow")), UpstreamTimeout, True),
        (_raise(httpx.RemoteProtocolError("cut")), UpstreamProtocolError, True),
        (lambda r: httpx.Response(503, json={"error": {}}), UpstreamStatusError, True),
        (lambda r: httpx.Response(429, json={"error": {}}), UpstreamStatusError, True),
        (lambda r: httpx.Response(400, json={"error": {}}), UpstreamStatusError, False),
        (lambda r: httpx.Response(200, content=b"{nope"), UpstreamProtocolError, True),
    ],
    ids=["connect", "timeout", "protocol", "503", "429", "400", "bad-json"],
)
async def test_errors_are_translated_once(
    handler: Callable[[httpx.Request], httpx.Response], error: type[UpstreamError],
    retryable: bool,
) -> None:
    up = upstream(handler)
    with pytest.raises(error) as info:
        await up.complete(SPEC, {})
    await up.client.aclose()
    assert info.value.retryable is retryable and info.value.model == "m"
    if isinstance(info.value, UpstreamStatusError):
        assert info.value.body == b'{"error":{}}'
    elif error is not UpstreamProtocolError or info.value.__cause__ is not None:
        assert isinstance(info.value.__cause__, (httpx.HTTPError, ValueError))


@pytest.mark.parametrize(
    ("spec", "env"),
    [(SPEC, {}), (ModelSpec(name="m"), {"UP_API_KEY": "k"})],
    ids=["key-unset", "no-base-url"],
)
async def test_config_errors(spec: ModelSpec, env: dict[str, str]) -> None:
    up = upstream(lambda r: httpx.Response(200, json=OK), env=env)
    with pytest.raises(UpstreamConfigError):
        await up.complete(spec, {})
    await up.client.aclose()


async def test_stream_splits_events_across_chunk_boundaries() -> None:
    raw = (b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\r\n\r\n: keep-alive\n\n'
           b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
           b'data: [DONE]\n\n')

    async def body() -> AsyncIterator[bytes]:
        for i in range(0, len(raw), 5):
            yield raw[i : i + 5]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body(),
                              headers={"content-type": "text/event-stream"})

    up = upstream(handler)
    async with up.stream(SPEC, {"stream": True}) as events:
        got = [e async for e in events]
    await up.client.aclose()
    # checked chunks: the comment and [DONE] are the stream's, not chunks
    assert got == [{"choices": [{"index": 0, "delta": {"content": "a"}}]},
                   {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]


async def test_stream_error_status_raises_before_events() -> None:
    up = upstream(lambda r: httpx.Response(502, json={"error": {"message": "down"}}))
    with pytest.raises(UpstreamStatusError) as info:
        async with up.stream(SPEC, {"stream": True}):
            pass
    await up.client.aclose()
    assert info.value.status_code == 502


async def test_calls_go_to_the_least_busy_client() -> None:
    clients = [httpx.AsyncClient(transport=httpx.MockTransport(
        lambda r: httpx.Response(200, json=OK))) for _ in range(3)]
    up = Upstream(clients, env={"UP_API_KEY": "k"})
    assert [up._take() for _ in range(4)] == [0, 1, 2, 0]
    for c in clients:
        await c.aclose()
