"""A fake OpenAI-compatible upstream: a real HTTP server on 127.0.0.1 with knobs.

It speaks Chat Completions (JSON and SSE streaming with ``stream_options.include_usage``)
and lets a test choose latency, error statuses, being down, slow or broken streams,
truncated / empty / refusal / invalid-JSON answers and whether usage is reported. It
records every request body it received and every usage it reported, so a test can
compare the router's outcome rows with what the upstream said.

It also misbehaves on purpose: it hangs before its headers, trickles its body a byte at
a time, ends a stream cleanly in the middle, sends a malformed event (first or later),
answers 200 with an error, sends a body of any size, or refuses with 429 / 503 and a
Retry-After. It notices a client that goes away while it hangs or streams
(``log.disconnects``), so a test can tell that a call was cancelled, and when.

In a test::

    with FakeUpstream() as fake:
        fake.behavior.latency_s = 0.05
        ... fake.base_url ...

As a process (for benchmarks)::

    python tests/fakes/fake_upstream.py --port 8101
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

try:
    from tests.fakes.server import ServerThread
except ImportError:  # run as a script: python tests/fakes/fake_upstream.py
    from server import ServerThread  # type: ignore[no-redef]

ANSWERS = {
    "normal": "The quick brown fox jumps over the lazy dog.",
    "empty": "",
    "truncated": "The quick brown fox jumps over",
    "refusal": "I'm sorry, but I can't help with that.",
    "invalid_json": '{"answer": "unterminated',
    "json": '{"answer": 42}',
}


class BrokenStream(Exception):
    """Raised inside the stream to make the server cut the connection mid-answer."""


@dataclass
class Behavior:
    """What the fake does on the next requests; tests change fields at will."""

    latency_s: float = 0.0             # before the response (or the first chunk)
    fail_status: int | None = None     # answer this status instead of a completion
    fail_times: int | None = None      # how many requests fail (None: all while set)
    answer: str = "normal"             # a key of ANSWERS
    text: str | None = None            # explicit answer text (overrides ``answer``)
    usage: bool = True                 # report usage (JSON body and final stream chunk)
    chunk_delay_s: float = 0.0         # between stream chunks
    break_after_chunks: int | None = None  # cut the stream after this many content chunks
    hang_s: float = 0.0                # sleep before headers (for timeouts)
    empty_stream: bool = False         # a 200 event stream with no event at all
    gzip: bool = False                 # gzip the JSON answer (as OpenAI does when asked)
    retry_after: str | None = None     # Retry-After on the fail_status answers
    trickle_s: float = 0.0             # send the body one byte at a time, this far apart
    end_after_chunks: int | None = None  # end the stream cleanly (no finish, no [DONE])
    malformed_event: int | None = None   # this event (0: the first) is not JSON; a
    #                                      non-streamed body is cut mid-JSON
    error_body: bool = False           # 200 with {"error": ...} (a stream: as its event)
    huge_bytes: int = 0                # an answer this large (content of "x"s)
    tool_call: dict[str, str] | None = None  # answer a call of this {name, arguments}


@dataclass
class Log:
    requests: list[dict[str, Any]] = field(default_factory=list)
    usages: list[dict[str, int] | None] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    auth: list[str | None] = field(default_factory=list)
    # time.monotonic() when the client was seen to go away mid-hang or mid-stream
    disconnects: list[float] = field(default_factory=list)


def count_prompt_tokens(body: dict[str, Any]) -> int:
    total = 0
    for msg in body.get("messages", []):
        content = msg.get("content")
        if isinstance(content, list):
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        total += 3 + len(str(content or "").split())
    return total


def _error(status: int, retry_after: str | None = None) -> JSONResponse:
    kinds = {429: "rate_limit_exceeded", 400: "invalid_request_error",
             401: "invalid_api_key", 404: "model_not_found"}
    return JSONResponse(
        {"error": {"message": f"fake upstream error {status}",
                   "type": "server_error" if status >= 500 else "invalid_request_error",
                   "param": None, "code": kinds.get(status, f"fake_{status}")}},
        status_code=status,
        headers=None if retry_after is None else {"retry-after": retry_after},
    )


ERROR_200 = {"error": {"message": "the fake failed inside a 200", "type": "server_error",
                       "param": None, "code": "fake_error_200"}}
MALFORMED = b'data: {"id": "chatcmpl-x", "choices": [{"delta": {"content": "oops"\n\n'


async def _hold(request: Request, seconds: float, log: Log) -> bool:
    """Wait ``seconds``; True (and logged) if the client went away meanwhile."""
    async def gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    sleep = asyncio.ensure_future(asyncio.sleep(seconds))
    watch = asyncio.ensure_future(gone())
    done, _ = await asyncio.wait({sleep, watch}, return_when=asyncio.FIRST_COMPLETED)
    sleep.cancel()
    watch.cancel()
    if watch in done:
        log.disconnects.append(time.monotonic())
        return True
    return False


async def _trickled(parts: AsyncIterator[bytes], delay_s: float,
                    log: Log) -> AsyncIterator[bytes]:
    try:
        async for part in parts:
            for i in range(len(part)):
                await asyncio.sleep(delay_s)
                yield part[i : i + 1]
    except (asyncio.CancelledError, GeneratorExit):
        log.disconnects.append(time.monotonic())
        raise


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _huge_body(head: dict[str, Any], size: int) -> AsyncIterator[bytes]:
    # A completion whose content is ``size`` "x"s, sent 64 KiB at a time.
    before, after = json.dumps(head).encode().split(b'"@@"')
    yield before + b'"'
    piece = b"x" * 65536
    for _ in range(size // len(piece)):
        yield piece
    yield b"x" * (size % len(piece)) + b'"' + after


def build_app(behavior: Behavior, log: Log, *, name: str = "fake", record: bool = True) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = json.loads(await request.body())
        if record:
            log.requests.append(body)
            log.auth.append(request.headers.get("authorization"))
        b = behavior
        if b.hang_s and await _hold(request, b.hang_s, log):
            return Response(status_code=499)  # nobody is listening any more
        if b.fail_status is not None and (b.fail_times is None or b.fail_times > 0):
            if b.fail_times is not None:
                b.fail_times -= 1
            if record:
                log.statuses.append(b.fail_status)
                log.usages.append(None)
            return _error(b.fail_status, b.retry_after)
        if b.latency_s and await _hold(request, b.latency_s, log):
            return Response(status_code=499)
        text = b.text if b.text is not None else ANSWERS[b.answer]
        finish = "length" if b.answer == "truncated" and b.text is None else "stop"
        if b.tool_call is not None:
            text, finish = "", "tool_calls"
        words = text.split(" ") if text else []
        usage = {
            "prompt_tokens": count_prompt_tokens(body),
            "completion_tokens": len(words),
            "total_tokens": count_prompt_tokens(body) + len(words),
        }
        if record:
            log.statuses.append(200)
            log.usages.append(usage if b.usage else None)
        model = body.get("model", name)
        cid = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        created = int(time.time())
        if not body.get("stream"):
            out: dict[str, Any] = {
                "id": cid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "finish_reason": finish, "logprobs": None,
                             "message": {"role": "assistant", "content": text,
                                         "refusal": None}}],
            }
            if b.tool_call is not None:
                out["choices"][0]["message"].update(
                    content=None, tool_calls=[{"id": "call_fake1", "type": "function",
                                               "function": dict(b.tool_call)}])
            if b.usage:
                out["usage"] = usage
            if b.error_body:
                out = ERROR_200
            if b.huge_bytes:
                out["choices"][0]["message"]["content"] = "@@"
                return StreamingResponse(_huge_body(out, b.huge_bytes),
                                         media_type="application/json")
            data = json.dumps(out).encode()
            if b.malformed_event is not None:
                data = data[: len(data) // 2]
            if b.trickle_s:
                return StreamingResponse(_trickled(_once(data), b.trickle_s, log),
                                         media_type="application/json")
            if b.gzip and "gzip" in request.headers.get("accept-encoding", ""):
                return Response(gzip.compress(data), media_type="application/json",
                                headers={"content-encoding": "gzip"})
            return Response(data, media_type="application/json")
        if b.empty_stream:
            return StreamingResponse(iter(()), media_type="text/event-stream")
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        events = _stream(b, cid, created, model, words, finish,
                         usage if (b.usage and include_usage) else None, log)
        if b.trickle_s:
            events = _trickled(events, b.trickle_s, log)
        return StreamingResponse(events, media_type="text/event-stream")

    @app.post("/_fake/behavior")
    async def set_behavior(request: Request) -> dict[str, Any]:
        changes = json.loads(await request.body())
        for f in fields(Behavior):
            if f.name in changes:
                setattr(behavior, f.name, changes[f.name])
        return asdict(behavior)

    return app


async def _stream(b: Behavior, cid: str, created: int, model: str, words: list[str],
                  finish: str, usage: dict[str, int] | None,
                  log: Log) -> AsyncIterator[bytes]:
    try:
        async for event in _events(b, cid, created, model, words, finish, usage):
            yield event
    except (asyncio.CancelledError, GeneratorExit):
        log.disconnects.append(time.monotonic())
        raise


async def _events(b: Behavior, cid: str, created: int, model: str, words: list[str],
                  finish: str, usage: dict[str, int] | None) -> AsyncIterator[bytes]:
    def chunk(delta: dict[str, Any], finish_reason: str | None = None,
              choices: bool = True, usage_: dict[str, int] | None = None) -> bytes:
        out: dict[str, Any] = {
            "id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None,
                         "finish_reason": finish_reason}] if choices else [],
        }
        if usage_ is not None:
            out["usage"] = usage_
        return b"data: " + json.dumps(out).encode() + b"\n\n"

    n = 0  # events sent

    def event(data: bytes) -> bytes:
        nonlocal n
        n += 1
        return MALFORMED if b.malformed_event == n - 1 else data

    if b.error_body:
        yield b"data: " + json.dumps(ERROR_200).encode() + b"\n\n"
        return
    yield event(chunk({"role": "assistant", "content": ""}))
    if b.tool_call is not None:
        args = b.tool_call["arguments"]
        yield event(chunk({"tool_calls": [{"index": 0, "id": "call_fake1", "type": "function",
                                           "function": {"name": b.tool_call["name"],
                                                        "arguments": ""}}]}))
        for i in range(0, len(args), 5):
            yield event(chunk({"tool_calls": [{"index": 0,
                                               "function": {"arguments": args[i:i + 5]}}]}))
    if b.huge_bytes:
        piece = "x" * 65536
        for _ in range(b.huge_bytes // len(piece) + 1):
            yield event(chunk({"content": piece}))
    for i, w in enumerate(words):
        if b.break_after_chunks is not None and i >= b.break_after_chunks:
            raise BrokenStream("the fake cuts the stream on purpose")
        if b.end_after_chunks is not None and i >= b.end_after_chunks:
            return  # a clean end, as if the answer were over
        if b.chunk_delay_s:
            await asyncio.sleep(b.chunk_delay_s)
        yield event(chunk({"content": w if i == 0 else " " + w}))
    yield event(chunk({}, finish))
    if usage is not None:
        yield event(chunk({}, choices=False, usage_=usage))
    yield b"data: [DONE]\n\n"


class FakeUpstream:
    """The fake served in a background thread; ``stop``/``start`` keep the port (down/up)."""

    def __init__(self, *, port: int | None = None, name: str = "fake") -> None:
        self.behavior = Behavior()
        self.log = Log()
        self._server = ServerThread(build_app(self.behavior, self.log, name=name), port=port,
                                    lifespan="off")
        self.port = self._server.port

    @property
    def base_url(self) -> str:
        return f"{self._server.url}/v1"

    def start(self) -> FakeUpstream:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args()
    # A long benchmark must not grow the log without bound: record nothing.
    app = build_app(Behavior(latency_s=args.latency), Log(), record=False)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning",
                access_log=False)


if __name__ == "__main__":
    main()
