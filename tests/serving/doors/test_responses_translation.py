"""serving/doors/responses.py: Responses requests into chat requests and chat answers back
(golden dicts), and the Wire's typed events for a chat stream."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bandit.errors import RequestError
from serving.doors.responses import ResponsesWire, from_chat, to_chat
from serving.upstream import UpstreamProtocolError

TOOL = {"type": "function", "name": "get_weather", "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        "strict": True}


def test_a_string_input_with_instructions_and_every_setting() -> None:
    chat = to_chat({"model": "auto", "input": "Hi", "instructions": "Be brief",
                    "max_output_tokens": 50, "temperature": 0.2, "top_p": 0.9,
                    "metadata": {"k": "v"}, "stream": True, "store": False,
                    "routebandit": {"models": ["cheap"]}})
    assert chat == {"model": "auto", "temperature": 0.2, "top_p": 0.9,
                    "routebandit": {"models": ["cheap"]},
                    "messages": [{"role": "system", "content": "Be brief"},
                                 {"role": "user", "content": "Hi"}],
                    "max_tokens": 50, "stream": True}


def test_items_of_every_supported_kind() -> None:
    chat = to_chat({"model": "auto", "input": [
        {"role": "developer", "content": "Rules"},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "What is here?"},
            {"type": "input_image", "image_url": "data:image/png;base64,AAAA",
             "detail": "low"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Let me look."}]},
        {"type": "function_call", "call_id": "c1", "name": "get_weather",
         "arguments": '{"city":"Paris"}'},
        {"type": "function_call", "call_id": "c2", "name": "get_weather",
         "arguments": '{"city":"Rome"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        {"type": "function_call_output", "call_id": "c2",
         "output": [{"type": "input_text", "text": "rain"}]},
    ], "tools": [TOOL], "tool_choice": {"type": "function", "name": "get_weather"},
        "text": {"format": {"type": "json_schema", "name": "w", "strict": True,
                            "schema": {"type": "object"}}}})
    assert chat["messages"] == [
        {"role": "developer", "content": "Rules"},
        {"role": "user", "content": [
            {"type": "text", "text": "What is here?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA",
                                                "detail": "low"}}]},
        {"role": "assistant", "content": "Let me look.", "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "c2", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "rain"},
    ]
    assert chat["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather in a city",
        "parameters": TOOL["parameters"], "strict": True}}]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert chat["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "w", "schema": {"type": "object"}, "strict": True}}


@pytest.mark.parametrize(("fmt", "expected"), [
    ({"type": "text"}, None),
    ({"type": "json_object"}, {"type": "json_object"}),
], ids=["text", "json_object"])
def test_text_formats(fmt: dict[str, Any], expected: Any) -> None:
    assert to_chat({"model": "auto", "input": "x", "text": {"format": fmt}}).get(
        "response_format") == expected


def test_files_audio_and_reasoning() -> None:
    chat = to_chat({"model": "auto", "reasoning": {"effort": "high", "summary": "auto"},
                    "input": [{"role": "user", "content": [
                        {"type": "input_text", "text": "Compare"},
                        {"type": "input_file", "file_data": "data:application/pdf;base64,JV",
                         "filename": "a.pdf"},
                        {"type": "input_audio", "input_audio": {"data": "UklG",
                                                                "format": "mp3"}}]}]})
    assert chat["reasoning_effort"] == "high"
    assert chat["messages"][0]["content"][1:] == [
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JV",
                                  "filename": "a.pdf"}},
        {"type": "input_audio", "input_audio": {"data": "UklG", "format": "mp3"}}]
    assert "reasoning_effort" not in to_chat({"model": "auto", "input": "x",
                                              "reasoning": {"summary": "auto"}})


@pytest.mark.parametrize(("body", "field"), [
    ({"previous_response_id": "resp_1"}, "previous_response_id"),
    ({"store": True}, "store"),
    ({"conversation": "conv_1"}, "conversation"),
    ({"reasoning": "high"}, "reasoning"),
    ({"reasoning": {"effort": 3}}, "reasoning.effort"),
    ({"input": []}, "input"),
    ({"input": [{"type": "reasoning"}]}, "input[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
     "input[0].content[0].file_data"),
    ({"input": [{"role": "user", "content": [{"type": "input_audio", "input_audio": "x"}]}]},
     "input[0].content[0].input_audio"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
     "input[0].content[0].image_url"),
    ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"tool_choice": "sometimes"}, "tool_choice"),
    ({"text": {"format": {"type": "yaml"}}}, "text.format.type"),
    ({"max_output_tokens": 0}, "max_output_tokens"),
    ({"metadata": {"k": 1}}, "metadata.k"),
    ({"stream": "yes"}, "stream"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_refusals_name_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(RequestError) as exc:
        to_chat({"model": "auto", "input": "x", **body})
    assert str(exc.value).startswith(f"{field}: ")


def _answer(message: dict[str, Any], finish: str = "stop") -> dict[str, Any]:
    return {"id": "chatcmpl-1", "model": "mid", "choices": [
        {"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}}


def test_a_text_answer_back() -> None:
    out = from_chat({"input": "x", "metadata": {"k": "v"}},
                    _answer({"content": "Hello", "refusal": None}))
    assert (out["object"], out["status"], out["model"], out["store"], out["metadata"]) == (
        "response", "completed", "mid", False, {"k": "v"})
    assert out["id"].startswith("resp_")
    [item] = out["output"]
    assert item["type"] == "message" and item["role"] == "assistant"
    assert item["content"] == [{"type": "output_text", "text": "Hello", "annotations": [],
                                "logprobs": []}]
    assert out["usage"] == {"input_tokens": 7, "input_tokens_details": {"cached_tokens": 0},
                            "output_tokens": 3,
                            "output_tokens_details": {"reasoning_tokens": 0},
                            "total_tokens": 10}


def test_tool_calls_refusals_and_length_back() -> None:
    out = from_chat({}, _answer({"content": None, "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "f", "arguments": '{"a":1}'}}]}, "tool_calls"))
    [call] = out["output"]
    assert {k: call[k] for k in ("type", "call_id", "name", "arguments", "status")} == {
        "type": "function_call", "call_id": "call_1", "name": "f", "arguments": '{"a":1}',
        "status": "completed"}
    refused = from_chat({}, _answer({"content": None, "refusal": "No."}))
    assert refused["output"][0]["content"] == [{"type": "refusal", "refusal": "No."}]
    cut = from_chat({}, _answer({"content": "The quick"}, "length"))
    assert (cut["status"], cut["incomplete_details"]) == (
        "incomplete", {"reason": "max_output_tokens"})


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


def test_the_wire_writes_text_and_a_tool_call_as_typed_events() -> None:
    wire = ResponsesWire({"input": "x"})
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
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.output_text.done", "response.content_part.done",
        "response.output_item.done",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.completed"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    done = events[-1]["response"]
    assert done["status"] == "completed" and done["model"] == "mid"
    assert [o["type"] for o in done["output"]] == ["message", "function_call"]
    assert done["output"][0]["content"][0]["text"] == "Hello"
    assert done["output"][1]["arguments"] == '{"a":1}'
    assert done["usage"]["input_tokens"] == 5 and done["usage"]["total_tokens"] == 7


def test_the_wire_ends_a_broken_stream_with_error_and_failed() -> None:
    wire = ResponsesWire({"input": "x"})
    wire.chunk(_chunk({"content": "Hel"}), "mid")
    events = _events(wire.error(UpstreamProtocolError("mid: cut", model="mid")))
    assert [e["type"] for e in events] == ["error", "response.failed"]
    assert events[0]["code"] == "upstream_protocol_error" and "cut" in events[0]["message"]
    assert events[1]["response"]["status"] == "failed"
