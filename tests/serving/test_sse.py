"""What counts as an answer from an upstream: a stream's events and a body, checked."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from serving.sse import ChatStream, StreamFault, completion_fault, split
from serving.upstream import MAX_RETRY_AFTER_S, retry_after_s


def data(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj).encode()


def choice(index: int = 0, content: str | None = "hi", finish: str | None = None) -> Any:
    delta = {} if content is None else {"content": content}
    return {"index": index, "delta": delta, "finish_reason": finish}


ROLE = data({"choices": [{"index": 0, "delta": {"role": "assistant"}}]})
TEXT = data({"choices": [choice()]})
STOP = data({"choices": [choice(content=None, finish="stop")]})
USAGE = data({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}})
DONE = b"data: [DONE]"


def run(events: list[bytes]) -> list[dict[str, Any]]:
    check = ChatStream()
    chunks = [c for e in events if (c := check.event(e)) is not None]
    check.end()
    return chunks


def test_a_complete_stream_yields_its_chunks_only() -> None:
    chunks = run([ROLE, b": keep-alive", TEXT, STOP, USAGE, DONE, b'data: {"late": 1}'])
    assert [c["choices"][0]["delta"] for c in chunks[:3]] == [
        {"role": "assistant"}, {"content": "hi"}, {}]
    assert chunks[3]["usage"]["completion_tokens"] == 1 and len(chunks) == 4


@pytest.mark.parametrize(
    ("events", "message", "said_so"),
    [
        ([], "ended before any event", False),
        ([b": ping", DONE], "ended before any event", False),
        ([ROLE, TEXT], "ended without a finish_reason", False),
        ([ROLE, TEXT, DONE], "ended without a finish_reason", False),
        ([ROLE, TEXT, STOP], "ended without [DONE]", False),
        ([data({"choices": [choice(0), choice(1)]}),
          data({"choices": [choice(0, None, "stop")]}), DONE],
         "without a finish_reason for choice 1", False),
        ([b'data: {"choices": [{"delta"'], "malformed event", False),
        ([ROLE, b"data: [1, 2]"], "not a JSON object", False),
        ([data({"choices": {"index": 0}})], "choices is not a list", False),
        ([data({"error": {"message": "overloaded", "code": "busy"}})],
         "sent an error event: overloaded (busy)", True),
        ([b"event: error\ndata: {}"], "sent an error event", True),
    ],
    ids=["empty", "only-comments", "cut", "done-without-finish", "finish-without-done",
         "one-choice-unfinished", "malformed", "not-an-object", "bad-choices",
         "error-object", "error-event"],
)
def test_a_stream_that_is_not_an_answer_is_a_fault(events: list[bytes], message: str,
                                                   said_so: bool) -> None:
    with pytest.raises(StreamFault, match=re.escape(message)) as info:
        run(events)
    assert info.value.error is said_so


def test_split_keeps_an_unfinished_event_for_the_next_read() -> None:
    events, rest = split(b"data: 1\r\n\r\ndata: 2\n\ndata: 3\n")
    assert events == [b"data: 1", b"data: 2"] and rest == b"data: 3\n"
    events, rest = split(rest + b"\ndata: 4")
    assert events == [b"data: 3"] and rest == b"data: 4"


@pytest.mark.parametrize(
    ("body", "fault"),
    [
        ({"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}]}, None),
        ({"error": {"message": "quota", "type": "server_error"}},
         "answered 200 with an error: quota (server_error)"),
        ({"id": "x"}, "answered 200 without choices"),
        ({"choices": []}, "answered 200 without choices"),
        ({"choices": ["hi"]}, "answered 200 with a choice that is not an object"),
    ],
    ids=["answer", "error", "no-choices", "empty-choices", "bad-choice"],
)
def test_completion_fault(body: dict[str, Any], fault: str | None) -> None:
    found = completion_fault(body)
    assert (None if found is None else str(found)) == fault


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("7", 7.0), ("0.5", 0.5), ("-3", 0.0), ("99999", MAX_RETRY_AFTER_S),
     ("Thu, 01 Jan 1970 00:00:30 GMT", 20.0), ("soon", None), ("nan", None)],
    ids=["seconds", "fraction", "negative", "huge", "http-date", "garbage", "nan"],
)
def test_retry_after(value: str, seconds: float | None) -> None:
    assert retry_after_s({"Retry-After": value}, now=10.0) == seconds
    assert retry_after_s({}) is None
