"""A fake Gemini API (``POST /v1beta/models/{model}:generateContent`` (or ``/v1/``) and
``:streamGenerateContent?alt=sse``) for the native upstream adapter: text, function calls,
several candidates, usage with cached and thought tokens, a blocked prompt, Google's error
bodies (with RetryInfo), and streams that are cut, end without a finishReason or carry an
error. Checked first with the official google-genai SDK (tests/serving/test_native_gemini)."""

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
STATUS = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
          429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE",
          504: "DEADLINE_EXCEEDED"}


@dataclass
class GeminiBehavior:
    text: str = TEXT
    function_call: dict[str, Any] | None = None  # {name, args}: answer a function call
    thought_signature: str | None = None   # on the function call part
    finish_reason: str = "STOP"
    prompt_tokens: int = 1000
    cached_tokens: int = 0                 # cachedContentTokenCount (part of the prompt)
    thoughts_tokens: int = 0
    blocked: str | None = None             # promptFeedback.blockReason, no candidates
    fail_status: int | None = None
    retry_delay: str | None = None         # RetryInfo.retryDelay in the error body ("7s")
    break_after_chunks: int | None = None  # cut the connection mid-stream
    end_after_chunks: int | None = None    # close cleanly before any finishReason
    error_event: bool = False              # a 200 stream whose second chunk is an error


@dataclass
class GeminiLog:
    requests: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)


def _error(status: int, retry_delay: str | None) -> JSONResponse:
    error: dict[str, Any] = {"code": status, "message": f"fake gemini error {status}",
                             "status": STATUS.get(status, "UNKNOWN")}
    if retry_delay is not None:
        error["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                             "retryDelay": retry_delay}]
    return JSONResponse({"error": error}, status_code=status)


def _usage(b: GeminiBehavior, candidates_tokens: int) -> dict[str, Any]:
    usage = {"promptTokenCount": b.prompt_tokens, "candidatesTokenCount": candidates_tokens,
             "totalTokenCount": b.prompt_tokens + candidates_tokens + b.thoughts_tokens}
    if b.cached_tokens:
        usage["cachedContentTokenCount"] = b.cached_tokens
    if b.thoughts_tokens:
        usage["thoughtsTokenCount"] = b.thoughts_tokens
    return usage


def _call_part(b: GeminiBehavior) -> dict[str, Any]:
    assert b.function_call is not None
    part: dict[str, Any] = {"functionCall": dict(b.function_call)}
    if b.thought_signature is not None:
        part["thoughtSignature"] = b.thought_signature
    return part


def _sse(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data)}\r\n\r\n".encode()


def build_app(b: GeminiBehavior, log: GeminiLog) -> FastAPI:
    app = FastAPI()

    # v1beta is what Google's REST docs use; the SDK (3.x) sends v1 by default.
    @app.post("/{version}/models/{target}")
    async def generate(version: str, target: str, request: Request) -> Response:
        model, _, method = target.partition(":")
        body = json.loads(await request.body())
        log.requests.append(body)
        log.paths.append(f"{model}:{method}?{request.url.query}".rstrip("?"))
        log.headers.append({k: v for k, v in request.headers.items()
                            if k in ("x-goog-api-key", "authorization")})
        if version not in ("v1", "v1beta") or method not in ("generateContent",
                                                           "streamGenerateContent"):
            return _error(404, None)
        if b.fail_status is not None:
            return _error(b.fail_status, b.retry_delay)
        rid = uuid.uuid4().hex[:16]
        if method == "generateContent":
            return JSONResponse(_answer(b, body, rid, model))
        return StreamingResponse(_chunks(b, rid, model), media_type="text/event-stream")

    return app


def _answer(b: GeminiBehavior, body: dict[str, Any], rid: str, model: str) -> dict[str, Any]:
    out: dict[str, Any] = {"responseId": rid, "modelVersion": model}
    if b.blocked is not None:
        out["promptFeedback"] = {"blockReason": b.blocked}
        out["usageMetadata"] = _usage(b, 0)
        return out
    n = int((body.get("generationConfig") or {}).get("candidateCount") or 1)
    parts = [_call_part(b)] if b.function_call is not None else [{"text": b.text}]
    out["candidates"] = [{"content": {"role": "model", "parts": parts},
                          "finishReason": b.finish_reason, "index": i} for i in range(n)]
    out["usageMetadata"] = _usage(b, n * max(1, len(b.text.split())))
    return out


async def _chunks(b: GeminiBehavior, rid: str, model: str) -> AsyncIterator[bytes]:
    base: dict[str, Any] = {"responseId": rid, "modelVersion": model}
    if b.blocked is not None:
        yield _sse({**base, "promptFeedback": {"blockReason": b.blocked},
                    "usageMetadata": _usage(b, 0)})
        return
    if b.function_call is not None:
        yield _sse({**base, "candidates": [{"content": {"role": "model",
                                                        "parts": [_call_part(b)]},
                                            "finishReason": b.finish_reason, "index": 0}],
                    "usageMetadata": _usage(b, 5)})
        return
    words = b.text.split(" ")
    for i, word in enumerate(words):
        if b.break_after_chunks is not None and i >= b.break_after_chunks:
            raise BrokenStream("the fake cuts the stream on purpose")
        if b.end_after_chunks is not None and i >= b.end_after_chunks:
            return  # a clean end, as if the answer were over
        if b.error_event and i == 1:
            yield _sse({"error": {"code": 500, "message": "fake mid-stream error",
                                  "status": "INTERNAL"}})
            return
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": [
            {"text": word if i == 0 else " " + word}]}, "index": 0}
        if i == len(words) - 1:
            candidate["finishReason"] = b.finish_reason
        yield _sse({**base, "candidates": [candidate], "usageMetadata": _usage(b, i + 1)})


class FakeGemini:
    def __init__(self) -> None:
        self.behavior = GeminiBehavior()
        self.log = GeminiLog()
        self._server = ServerThread(build_app(self.behavior, self.log), lifespan="off")

    @property
    def base_url(self) -> str:
        """What a catalog's ``base_url`` says (the API version included)."""
        return f"{self._server.url}/v1beta"

    @property
    def root_url(self) -> str:
        """What the google-genai SDK's ``base_url`` says (it adds the version)."""
        return self._server.url

    def start(self) -> FakeGemini:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def reset(self) -> None:
        fresh = GeminiBehavior()
        for name in fresh.__dataclass_fields__:
            setattr(self.behavior, name, getattr(fresh, name))
        self.log.requests.clear()
        self.log.paths.clear()
        self.log.headers.clear()
