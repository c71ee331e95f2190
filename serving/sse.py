"""An upstream's Chat Completions stream, split into events and checked as it arrives.

A stream is an answer only if every ``data:`` event is a JSON object, none is an error,
every choice it opened ends with a ``finish_reason`` and ``data: [DONE]`` closes it.
:class:`ChatStream` raises :class:`StreamFault` at the first event that breaks this, or
at the end of a stream that stopped short; :mod:`serving.upstream` turns the fault into
its own errors. :func:`completion_fault` is the same judgement of a non-streamed body.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


class StreamFault(Exception):
    """What makes the stream (or body) not an answer; ``error`` when the upstream said so
    itself (an error object where an answer should be)."""

    def __init__(self, message: str, *, error: bool = False) -> None:
        super().__init__(message)
        self.error = error


def split(buffer: bytes) -> tuple[list[bytes], bytes]:
    """The complete events in ``buffer`` (each without its blank line) and the rest."""
    if b"\r" in buffer:
        buffer = buffer.replace(b"\r\n", b"\n")
    events: list[bytes] = []
    start = 0
    while True:
        end = buffer.find(b"\n\n", start)
        if end < 0:
            return events, buffer[start:]
        if end > start:
            events.append(buffer[start:end])
        start = end + 2


def _error_message(error: Any) -> str:
    if isinstance(error, Mapping):
        message = error.get("message")
        code = error.get("code") or error.get("type")
        text = str(message) if message is not None else json.dumps(error)[:200]
        return f"{text} ({code})" if code else text
    return str(error)[:200]


def completion_fault(body: Mapping[str, Any]) -> StreamFault | None:
    """Why a 200 Chat Completions body is not an answer (an error object, no choices)."""
    if body.get("error"):
        return StreamFault(f"answered 200 with an error: {_error_message(body['error'])}",
                           error=True)
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        return StreamFault("answered 200 without choices")
    if not all(isinstance(c, Mapping) for c in choices):
        return StreamFault("answered 200 with a choice that is not an object")
    return None


class ChatStream:
    """The checks of one stream: feed it each event, then call :meth:`end`."""

    def __init__(self) -> None:
        self._open: set[int] = set()
        self._finished: set[int] = set()
        self.done = False
        self.chunks = 0

    def event(self, raw: bytes) -> dict[str, Any] | None:
        """The event's chunk, or None for a comment, ``[DONE]`` or anything after it."""
        data: list[bytes] = []
        name = b""
        for line in raw.split(b"\n"):
            if line.startswith(b"data:"):
                value = line[5:]
                data.append(value[1:] if value.startswith(b" ") else value)
            elif line.startswith(b"event:"):
                name = line[6:].strip()
        if not data or self.done:
            return None  # a comment (keep-alive), or the server's trailing bytes
        payload = b"\n".join(data)
        if payload.strip() == b"[DONE]":
            self.done = True
            return None
        try:
            chunk = json.loads(payload)
        except ValueError:
            raise StreamFault(f"malformed event: {_preview(payload)}") from None
        if not isinstance(chunk, dict):
            raise StreamFault(f"malformed event (not a JSON object): {_preview(payload)}")
        if chunk.get("error") or name == b"error":
            raise StreamFault(f"sent an error event: {_error_message(chunk.get('error'))}",
                              error=True)
        self.chunks += 1
        choices = chunk.get("choices")
        if choices is not None and not isinstance(choices, list):
            raise StreamFault(f"malformed event (choices is not a list): {_preview(payload)}")
        for choice in choices or ():
            if not isinstance(choice, dict):
                raise StreamFault(f"malformed event (a choice is not an object): "
                                  f"{_preview(payload)}")
            index = choice.get("index", 0)
            key = index if isinstance(index, int) else 0
            if choice.get("finish_reason"):
                self._finished.add(key)
            else:
                self._open.add(key)
        return chunk

    def end(self) -> None:
        """Raise :class:`StreamFault` unless the stream ended as an answer ends."""
        if not self.chunks:
            raise StreamFault("the stream ended before any event")
        if not self._finished:
            raise StreamFault("the stream ended without a finish_reason")
        unfinished = self._open - self._finished
        if unfinished:
            raise StreamFault(f"the stream ended without a finish_reason for choice "
                              f"{min(unfinished)}")
        if not self.done:
            raise StreamFault("the stream ended without [DONE]")


def _preview(payload: bytes) -> str:
    text = payload[:80].decode("utf-8", "replace")
    return repr(text) + ("..." if len(payload) > 80 else "")
