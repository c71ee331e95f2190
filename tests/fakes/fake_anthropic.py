"""A fake Anthropic Messages API (``POST /v1/messages``) for the native upstream adapter:
text or a tool call, usage, a stream of Anthropic's events, error statuses, a stream cut
short. Checked first with the official anthropic SDK (tests/serving/test_native_anthropic)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from tests.fakes.fake_upstream import BrokenStream
from tests.fakes.server import ServerThread

TEXT = "The quick brown fox jumps over the lazy dog."


@dataclass
class AnthropicBehavior:
    text: str = TEXT
    tool_call: dict[str, Any] | None = None  # {name, input}: answer a tool_use
    stop_reason: str = "end_turn"
    fail_status: int | None = None
    break_after_chunks: int | None = None
    cache_read: int = 0   # usage.cache_read_input_tokens (apart from input_tokens)
    cache_write: int = 0  # usage.cache_creation_input_tokens


@dataclass
class AnthropicLog:
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)


def _sse(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()


def build_app(b: AnthropicBehavior, log: AnthropicLog) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/messages")
    async def messages(request: Request) -> Response:
        body = json.loads(await request.body())
        log.requests.append(body)
        log.headers.append({k: v for k, v in request.headers.items()
                            if k in ("x-api-key", "anthropic-version", "authorization")})
        if b.fail_status is not None:
            return JSONResponse({"type": "error", "error": {
                "type": "overloaded_error" if b.fail_status == 529 else "api_error",
                "message": f"fake anthropic error {b.fail_status}"}},
                status_code=b.fail_status)
        words = b.text.split(" ") if b.tool_call is None else []
        usage = {"input_tokens": 11, "output_tokens": max(1, len(words))}
        if b.cache_read or b.cache_write:
            usage.update(cache_read_input_tokens=b.cache_read,
                         cache_creation_input_tokens=b.cache_write)
        mid = f"msg_{uuid.uuid4().hex[:20]}"
        stop = "tool_use" if b.tool_call is not None else b.stop_reason
        if not body.get("stream"):
            content: list[dict[str, Any]] = (
                [{"type": "tool_use", "id": "toolu_fake1", **b.tool_call}]
                if b.tool_call is not None else [{"type": "text", "text": b.text}])
            return JSONResponse({"id": mid, "type": "message", "role": "assistant",
                                 "model": body["model"], "content": content,
                                 "stop_reason": stop, "stop_sequence": None,
                                 "usage": usage})
        return StreamingResponse(_events(b, mid, body["model"], words, stop, usage),
                                 media_type="text/event-stream")

    return app


async def _events(b: AnthropicBehavior, mid: str, model: str, words: list[str], stop: str,
                  usage: dict[str, int]) -> AsyncIterator[bytes]:
    yield _sse("message_start", {"message": {
        "id": mid, "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {**usage, "output_tokens": 1}}})
    yield _sse("ping", {})
    if b.tool_call is not None:
        yield _sse("content_block_start", {"index": 0, "content_block": {
            "type": "tool_use", "id": "toolu_fake1", "name": b.tool_call["name"],
            "input": {}}})
        args = json.dumps(b.tool_call["input"])
        for i in range(0, len(args), 6):
            yield _sse("content_block_delta", {"index": 0, "delta": {
                "type": "input_json_delta", "partial_json": args[i:i + 6]}})
    else:
        yield _sse("content_block_start", {"index": 0, "content_block": {"type": "text",
                                                                         "text": ""}})
        for i, w in enumerate(words):
            if b.break_after_chunks is not None and i >= b.break_after_chunks:
                raise BrokenStream("the fake cuts the stream on purpose")
            yield _sse("content_block_delta", {"index": 0, "delta": {
                "type": "text_delta", "text": w if i == 0 else " " + w}})
    yield _sse("content_block_stop", {"index": 0})
    yield _sse("message_delta", {"delta": {"stop_reason": stop, "stop_sequence": None},
                                 "usage": {"output_tokens": usage["output_tokens"]}})
    yield _sse("message_stop", {})


class FakeAnthropic:
    def __init__(self) -> None:
        self.behavior = AnthropicBehavior()
        self.log = AnthropicLog()
        self._server = ServerThread(build_app(self.behavior, self.log), lifespan="off")

    @property
    def base_url(self) -> str:
        return f"{self._server.url}/v1"

    @property
    def root_url(self) -> str:
        return self._server.url

    def start(self) -> FakeAnthropic:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def reset(self) -> None:
        fresh = AnthropicBehavior()
        for name in fresh.__dataclass_fields__:
            setattr(self.behavior, name, getattr(fresh, name))
        self.log.requests.clear()
        self.log.headers.clear()
