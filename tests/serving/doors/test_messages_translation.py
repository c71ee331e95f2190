"""serving/doors/messages.py: Anthropic Messages requests into chat requests and chat
answers back (golden dicts), stop reasons both ways, and the Wire's events."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bandit.errors import RequestError
from serving.doors.messages import (
    AnthropicWire,
    count_tokens,
    error_body,
    from_chat,
    to_chat,
)
from serving.native_anthropic import FINISH_REASONS, STOP_REASONS
from serving.upstream import UpstreamStatusError, UpstreamTimeout

TOOL = {"name": "get_weather", "description": "Weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}


def test_every_content_block_and_setting() -> None:
    chat = to_chat({
        "model": "auto", "max_tokens": 100, "temperature": 0.5, "top_p": 0.9,
        "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
        "stop_sequences": ["END"], "metadata": {"user_id": "u1"}, "stream": True,
        "tools": [TOOL], "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "routebandit": {"models": ["cheap"]},
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": "AAAA"}},
                {"type": "image", "source": {"type": "url",
                                             "url": "https://example.com/a.png"}}]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                 "input": {"city": "Paris"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1",
                 "content": [{"type": "text", "text": "sunny"}]},
                {"type": "text", "text": "And tomorrow?"}]},
            {"role": "assistant", "content": "Rain."},
        ]})
    assert chat == {
        "model": "auto", "temperature": 0.5, "top_p": 0.9,
        "routebandit": {"models": ["cheap"]}, "max_tokens": 100,
        "messages": [
            {"role": "system", "content": "Be brief.\nBe kind."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {
                    "name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
            {"role": "user", "content": [{"type": "text", "text": "And tomorrow?"}]},
            {"role": "assistant", "content": "Rain."}],
        "tools": [{"type": "function", "function": {
            "name": "get_weather", "parameters": TOOL["input_schema"],
            "description": "Weather in a city"}}],
        "tool_choice": "required", "parallel_tool_calls": False,
        "stop": ["END"], "user": "u1", "stream": True}


@pytest.mark.parametrize(("choice", "expected"), [
    ({"type": "auto"}, "auto"), ({"type": "none"}, "none"),
    ({"type": "tool", "name": "f"}, {"type": "function", "function": {"name": "f"}}),
], ids=["auto", "none", "tool"])
def test_tool_choices(choice: dict[str, Any], expected: Any) -> None:
    chat = to_chat({"model": "auto", "max_tokens": 5, "tool_choice": choice,
                    "messages": [{"role": "user", "content": "x"}]})
    assert chat["tool_choice"] == expected


def test_thinking_documents_and_earlier_thoughts() -> None:
    pdf = {"type": "document", "title": "q3.pdf",
           "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}}
    note = {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                           "data": "Meeting notes"}}
    chat = to_chat({"model": "auto", "max_tokens": 20000,
                    "thinking": {"type": "enabled", "budget_tokens": 10000},
                    "messages": [
                        {"role": "user", "content": [pdf, note]},
                        {"role": "assistant", "content": [
                            {"type": "thinking", "thinking": "hm", "signature": "s"},
                            {"type": "redacted_thinking", "data": "x"},
                            {"type": "text", "text": "Revenue grew."}]},
                        {"role": "user", "content": "Why?"}]})
    assert chat["reasoning_effort"] == "medium"
    assert chat["messages"] == [
        {"role": "user", "content": [
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE",
                                      "filename": "q3.pdf"}},
            {"type": "text", "text": "Meeting notes"}]},
        {"role": "assistant", "content": "Revenue grew."},
        {"role": "user", "content": "Why?"}]
    for budget, effort in ((1024, "low"), (4096, "medium"), (16384, "high")):
        assert to_chat({"model": "auto", "max_tokens": 20000, "messages": [
            {"role": "user", "content": "x"}], "thinking": {
                "type": "enabled", "budget_tokens": budget}})["reasoning_effort"] == effort
    assert "reasoning_effort" not in to_chat({
        "model": "auto", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
        "thinking": {"type": "disabled"}})


@pytest.mark.parametrize(("body", "field"), [
    ({"max_tokens": None}, "max_tokens"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": [{"type": "document"}]}]},
     "messages[0].content[0].source"),
    ({"messages": [{"role": "assistant", "content": [{"type": "document"}]}]},
     "messages[0].content[0].type"),
    ({"messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}}]}]},
     "messages[0].content[0].source.type"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_use"}]}]},
     "messages[0].content[0].type"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "file", "file_id": "f"}}]}]},
     "messages[0].content[0].source.type"),
    ({"system": [{"type": "image"}]}, "system[0].type"),
    ({"tools": [{"type": "web_search_20250305", "name": "s"}]}, "tools[0].type"),
    ({"tools": [{"name": "f"}]}, "tools[0].input_schema"),
    ({"tool_choice": {"type": "maybe"}}, "tool_choice.type"),
    ({"stop_sequences": "END"}, "stop_sequences"),
    ({"metadata": {"tenant": "x"}}, "metadata"),
    ({"thinking": {"type": "sometimes"}}, "thinking.type"),
    ({"thinking": {"type": "enabled", "budget_tokens": 512}}, "thinking.budget_tokens"),
    ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "thinking.budget_tokens"),
    ({"top_k": 5}, "top_k"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_refusals_name_the_field(body: dict[str, Any], field: str) -> None:
    full = {"model": "auto", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
            **body}
    with pytest.raises(RequestError) as exc:
        to_chat({k: v for k, v in full.items() if v is not None})
    assert str(exc.value).startswith(f"{field}: ")


def _answer(message: dict[str, Any], finish: str = "stop",
            **choice: Any) -> dict[str, Any]:
    return {"model": "mid", "choices": [{"index": 0, "finish_reason": finish, **choice,
                                         "message": {"role": "assistant", **message}}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3}}


def test_answers_back_with_their_stop_reasons() -> None:
    text = from_chat({}, _answer({"content": "Hi"}))
    assert {k: text[k] for k in ("type", "role", "model", "content", "stop_reason",
                                 "stop_sequence", "usage")} == {
        "type": "message", "role": "assistant", "model": "mid",
        "content": [{"type": "text", "text": "Hi"}], "stop_reason": "end_turn",
        "stop_sequence": None, "usage": {"input_tokens": 7, "output_tokens": 3}}
    tool = from_chat({}, _answer({"content": None, "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "f", "arguments": '{"a": 1}'}}]}, "tool_calls"))
    assert tool["content"] == [{"type": "tool_use", "id": "call_1", "name": "f",
                                "input": {"a": 1}}]
    assert tool["stop_reason"] == "tool_use"
    assert from_chat({}, _answer({"content": "Hi"}, "length"))["stop_reason"] == "max_tokens"
    # An upstream that names the stop string it met (vLLM) gives stop_sequence.
    stopped = from_chat({"stop_sequences": ["END"]},
                        _answer({"content": "Hi"}, stop_reason="END"))
    assert (stopped["stop_reason"], stopped["stop_sequence"]) == ("stop_sequence", "END")


def test_stop_reasons_map_both_ways() -> None:
    for finish in ("stop", "length", "tool_calls"):
        assert FINISH_REASONS[STOP_REASONS[finish]] == finish
    assert FINISH_REASONS["stop_sequence"] == "stop"


def test_count_tokens_is_an_estimate_of_everything_sent() -> None:
    chat = to_chat({"model": "auto", "messages": [{"role": "user", "content": "a b c"}]},
                   count_only=True)
    small = count_tokens(chat)
    assert small > 0
    assert count_tokens({**chat, "tools": [{"type": "function",
                                            "function": {"name": "f" * 100}}]}) > small


@pytest.mark.parametrize(("status", "kind"), [
    (400, "invalid_request_error"), (401, "authentication_error"),
    (403, "permission_error"), (404, "not_found_error"), (413, "request_too_large"),
    (429, "rate_limit_error"), (500, "api_error"), (529, "overloaded_error")],
    ids=str)
def test_error_types_by_status(status: int, kind: str) -> None:
    assert error_body(status, "m") == {"type": "error",
                                       "error": {"type": kind, "message": "m"}}


def _events(raw: bytes) -> list[dict[str, Any]]:
    out = []
    for block in raw.decode().split("\n\n"):
        if block:
            kind, data = block.split("\n")
            event = json.loads(data.removeprefix("data: "))
            assert kind == f"event: {event['type']}"
            out.append(event)
    return out


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def test_the_wire_writes_text_then_a_tool_use() -> None:
    wire = AnthropicWire({})
    raw = b"".join(filter(None, [
        wire.chunk(_chunk({"role": "assistant", "content": ""}), "mid"),
        wire.chunk(_chunk({"content": "Hel"}), "mid"),
        wire.chunk(_chunk({"content": "lo"}), "mid"),
        wire.chunk(_chunk({"tool_calls": [{"index": 0, "id": "call_1", "function": {
            "name": "f", "arguments": '{"a"'}}]}), "mid"),
        wire.chunk(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}),
                   "mid"),
        wire.chunk(_chunk({}, "tool_calls"), "mid"),
        wire.chunk({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}},
                   "mid"),
    ])) + wire.end()
    events = _events(raw)
    assert [e["type"] for e in events] == [
        "message_start", "ping", "content_block_start", "content_block_delta",
        "content_block_delta", "content_block_stop", "content_block_start",
        "content_block_delta", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop"]
    assert events[0]["message"]["model"] == "mid"
    assert events[2]["content_block"] == {"type": "text", "text": ""}
    assert events[3]["delta"] == {"type": "text_delta", "text": "Hel"}
    assert events[6] == {"type": "content_block_start", "index": 1, "content_block": {
        "type": "tool_use", "id": "call_1", "name": "f", "input": {}}}
    assert events[8]["delta"] == {"type": "input_json_delta", "partial_json": ":1}"}
    assert events[10]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert events[10]["usage"] == {"input_tokens": 5, "output_tokens": 2}


def test_the_wire_ends_a_broken_stream_with_an_error_event() -> None:
    wire = AnthropicWire({})
    wire.chunk(_chunk({"content": "Hel"}), "mid")
    [event] = _events(wire.error(UpstreamTimeout("mid: stalled", model="mid")))
    assert event["error"]["type"] == "api_error" and "stalled" in event["error"]["message"]
    busy = UpstreamStatusError("mid: 429", model="mid", status_code=429, body=b"",
                               headers={})
    [event] = _events(wire.error(busy))
    assert event["error"]["type"] == "overloaded_error"
