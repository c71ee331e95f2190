"""Anthropic's Messages API (``POST /v1/messages``) over the gateway's chat shape.

The other direction (a native Anthropic upstream) is :mod:`serving.native_anthropic`,
which holds the stop-reason maps both use.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from typing import Any

from bandit.errors import RequestError
from bandit.features import estimate_tokens
from serving.native_anthropic import STOP_REASONS
from serving.upstream import UpstreamError, UpstreamStatusError

# HTTP status -> Anthropic's error type (529: every model overloaded).
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
               402: "billing_error", 403: "permission_error", 404: "not_found_error",
               409: "invalid_request_error", 413: "request_too_large",
               415: "invalid_request_error", 422: "invalid_request_error",
               429: "rate_limit_error", 499: "invalid_request_error", 504: "timeout_error",
               529: "overloaded_error"}
VERSION = re.compile(r"20\d\d-\d\d-\d\d")

_SAME = {"model": "model", "temperature": "temperature", "top_p": "top_p",
         "routebandit": "routebandit"}
_ACCEPTED = ("max_tokens", "messages", "system", "tools", "tool_choice", "stop_sequences",
             "metadata", "stream", "thinking")


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status, "api_error")


def error_body(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type(status), "message": message}}


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise RequestError(f"{where}: must be a string")
    return value


def to_chat(body: Mapping[str, Any], *, count_only: bool = False) -> dict[str, Any]:
    """The Chat Completions request a Messages request asks for (RequestError if not)."""
    for name, value in body.items():
        if name not in _SAME and name not in _ACCEPTED and value is not None:
            raise RequestError(f"{name}: not supported by routebandit's /v1/messages")
    if not isinstance(body.get("model"), str):
        raise RequestError("model: must be a string (auto, auto:<profile> or a catalog model)")
    limit = body.get("max_tokens")
    if not count_only:
        if limit is None:
            raise RequestError("max_tokens: required")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise RequestError("max_tokens: must be a positive whole number")
    chat: dict[str, Any] = {out: body[k] for k, out in _SAME.items() if body.get(k) is not None}
    if not count_only:
        chat["max_tokens"] = limit
    effort = _thinking(body.get("thinking"), None if count_only else limit)
    if effort is not None:  # routed to a model with the ``reasoning`` capability
        chat["reasoning_effort"] = effort
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system is not None:
        messages.append({"role": "system", "content": _system(system)})
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise RequestError("messages: must be a non-empty list")
    for i, message in enumerate(raw):
        messages.extend(_message(message, f"messages[{i}]"))
    chat["messages"] = messages
    if body.get("tools") is not None:
        chat["tools"] = _tools(body["tools"])
    choice = body.get("tool_choice")
    if choice is not None:
        chat.update(_tool_choice(choice))
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise RequestError("stop_sequences: must be a list of strings")
        if stops:
            chat["stop"] = stops
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, Mapping) or set(metadata) - {"user_id"}:
            raise RequestError("metadata: only user_id is accepted")
        if metadata.get("user_id") is not None:
            chat["user"] = _text(metadata["user_id"], "metadata.user_id")[:256]
    if body.get("stream") is not None:
        if not isinstance(body["stream"], bool):
            raise RequestError("stream: must be true or false")
        chat["stream"] = body["stream"]
    return chat


# Extended thinking's budget as Chat Completions' reasoning_effort: below 4,096 tokens
# low, below 16,384 medium, else high (Anthropic's own minimum budget is 1,024).
_EFFORTS = ((4096, "low"), (16384, "medium"))


def _thinking(value: Any, max_tokens: int | None) -> str | None:
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, Mapping) else None
    if kind == "disabled":
        return None
    if kind != "enabled":
        raise RequestError("thinking.type: must be enabled or disabled")
    assert isinstance(value, Mapping)
    budget = value.get("budget_tokens")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1024:
        raise RequestError("thinking.budget_tokens: must be a whole number >= 1024")
    if max_tokens is not None and budget >= max_tokens:
        raise RequestError("thinking.budget_tokens: must be less than max_tokens")
    return next((effort for below, effort in _EFFORTS if budget < below), "high")


def _document(block: Mapping[str, Any], where: str) -> dict[str, Any]:
    # A PDF (base64) is Chat Completions' file part; a plain-text document is its text.
    source = block.get("source")
    if not isinstance(source, Mapping):
        raise RequestError(f"{where}.source: must be an object")
    if source.get("type") == "text":
        return {"type": "text", "text": _text(source.get("data"), f"{where}.source.data")}
    if source.get("type") == "base64":
        media = _text(source.get("media_type"), f"{where}.source.media_type")
        data = _text(source.get("data"), f"{where}.source.data")
        file = {"file_data": f"data:{media};base64,{data}"}
        if block.get("title") is not None:
            file["filename"] = _text(block["title"], f"{where}.title")
        return {"type": "file", "file": file}
    raise RequestError(f"{where}.source.type: must be base64 or text (url and file "
                       "sources are not supported)")


def _system(value: Any) -> str:
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise RequestError("system: must be a string or a list of text blocks")
    out = []
    for i, block in enumerate(value):
        if not isinstance(block, Mapping) or block.get("type") != "text":
            raise RequestError(f"system[{i}].type: only text blocks are supported")
        out.append(_text(block.get("text"), f"system[{i}].text"))
    return "\n".join(out)


def _image(block: Mapping[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source")
    if not isinstance(source, Mapping):
        raise RequestError(f"{where}.source: must be an object")
    if source.get("type") == "base64":
        media = _text(source.get("media_type"), f"{where}.source.media_type")
        data = _text(source.get("data"), f"{where}.source.data")
        return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{data}"}}
    if source.get("type") == "url":
        return {"type": "image_url",
                "image_url": {"url": _text(source.get("url"), f"{where}.source.url")}}
    raise RequestError(f"{where}.source.type: must be base64 or url")


def _message(message: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(message, Mapping):
        raise RequestError(f"{where}: must be an object")
    role = message.get("role")
    if role not in ("user", "assistant"):
        raise RequestError(f"{where}.role: must be user or assistant")
    content = message.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise RequestError(f"{where}.content: must be a string or a list of content blocks")
    parts: list[dict[str, Any]] = []
    tool_calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []  # tool messages (they precede the user's own text)
    for i, block in enumerate(content):
        at = f"{where}.content[{i}]"
        if not isinstance(block, Mapping):
            raise RequestError(f"{at}: must be an object")
        kind = block.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": _text(block.get("text"), f"{at}.text")})
        elif kind == "image" and role == "user":
            parts.append(_image(block, at))
        elif kind == "document" and role == "user":
            parts.append(_document(block, at))
        elif kind in ("thinking", "redacted_thinking") and role == "assistant":
            # An earlier turn's thinking, sent back as Anthropic asks clients to: no
            # chat-shaped upstream takes it, and the answer it led to is kept.
            continue
        elif kind == "tool_use" and role == "assistant":
            args = block.get("input", {})
            if not isinstance(args, Mapping):
                raise RequestError(f"{at}.input: must be an object")
            tool_calls.append({"id": _text(block.get("id"), f"{at}.id"), "type": "function",
                               "function": {"name": _text(block.get("name"), f"{at}.name"),
                                            "arguments": json.dumps(args)}})
        elif kind == "tool_result" and role == "user":
            results.append({"role": "tool",
                            "tool_call_id": _text(block.get("tool_use_id"),
                                                  f"{at}.tool_use_id"),
                            "content": _result(block.get("content"), f"{at}.content")
                            + (" (error)" if block.get("is_error") else "")})
        else:
            raise RequestError(f"{at}.type: {str(kind)[:64]!r} is not supported in a {role} "
                               "message (text, image, document and tool_result from the "
                               "user; text and tool_use from the assistant)")
    out: list[dict[str, Any]] = list(results)
    if role == "assistant":
        text = "".join(p["text"] for p in parts)
        if tool_calls:
            out.append({"role": "assistant", "content": text or None,
                        "tool_calls": tool_calls})
        else:
            out.append({"role": "assistant", "content": text})
    elif parts:
        out.append({"role": "user", "content": parts})
    if not out:
        raise RequestError(f"{where}.content: must not be empty")
    return out


def _result(value: Any, where: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise RequestError(f"{where}: must be a string or a list of text blocks")
    out = []
    for i, block in enumerate(value):
        if not isinstance(block, Mapping) or block.get("type") != "text":
            raise RequestError(f"{where}[{i}].type: only text blocks are supported in a "
                               "tool_result")
        out.append(_text(block.get("text"), f"{where}[{i}].text"))
    return "\n".join(out)


def _tools(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise RequestError("tools: must be a list")
    out = []
    for i, tool in enumerate(value):
        if not isinstance(tool, Mapping) or tool.get("type") not in (None, "custom"):
            raise RequestError(f"tools[{i}].type: only client tools (name, input_schema) "
                               "are supported")
        schema = tool.get("input_schema")
        if not isinstance(schema, Mapping):
            raise RequestError(f"tools[{i}].input_schema: must be an object")
        fn: dict[str, Any] = {"name": _text(tool.get("name"), f"tools[{i}].name"),
                              "parameters": dict(schema)}
        if tool.get("description") is not None:
            fn["description"] = _text(tool["description"], f"tools[{i}].description")
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise RequestError("tool_choice: must be an object")
    kind = value.get("type")
    out: dict[str, Any] = {}
    if kind == "auto":
        out["tool_choice"] = "auto"
    elif kind == "any":
        out["tool_choice"] = "required"
    elif kind == "none":
        out["tool_choice"] = "none"
    elif kind == "tool":
        out["tool_choice"] = {"type": "function",
                              "function": {"name": _text(value.get("name"),
                                                         "tool_choice.name")}}
    else:
        raise RequestError("tool_choice.type: must be auto, any, tool or none")
    if value.get("disable_parallel_tool_use") is True and kind != "none":
        out["parallel_tool_calls"] = False
    return out


def count_tokens(chat: Mapping[str, Any]) -> int:
    """An estimate (the router's own token estimator), not the upstream's tokenizer."""
    total = 0
    for msg in chat.get("messages") or ():
        content = msg.get("content")
        if isinstance(content, list):
            content = " ".join(p.get("text", "") for p in content if p.get("type") == "text")
        total += 4 + estimate_tokens(content if isinstance(content, str) else "")
        for call in msg.get("tool_calls") or ():
            total += estimate_tokens(call["function"]["name"] + call["function"]["arguments"])
    if chat.get("tools"):
        total += estimate_tokens(json.dumps(chat["tools"]))
    return total


def stop_reason(choice: Mapping[str, Any],
                stops: Any) -> tuple[str | None, str | None]:
    """``(stop_reason, stop_sequence)`` of a chat choice; an upstream that names the stop
    string it met (vLLM's ``stop_reason``) gives ``stop_sequence``."""
    finish = choice.get("finish_reason")
    matched = choice.get("stop_reason")
    if finish == "stop" and isinstance(matched, str) and isinstance(stops, list) \
            and matched in stops:
        return "stop_sequence", matched
    return (None if finish is None else STOP_REASONS.get(str(finish), "end_turn")), None


def _usage(usage: Mapping[str, Any] | None) -> dict[str, int]:
    usage = usage or {}
    return {"input_tokens": int(usage.get("prompt_tokens") or 0),
            "output_tokens": int(usage.get("completion_tokens") or 0)}


def from_chat(request: Mapping[str, Any], answer: Mapping[str, Any]) -> dict[str, Any]:
    """The Messages answer of a Chat Completions answer (its first choice)."""
    choices = answer.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], Mapping) else {}
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if isinstance(message.get("content"), str) and message["content"]:
        content.append({"type": "text", "text": message["content"]})
    elif isinstance(message.get("refusal"), str) and message["refusal"]:
        content.append({"type": "text", "text": message["refusal"]})
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        content.append({"type": "tool_use", "id": call.get("id") or _new_id("toolu"),
                        "name": fn.get("name", ""), "input": _arguments(fn.get("arguments"))})
    reason, sequence = stop_reason(choice, request.get("stop_sequences"))
    return {"id": _new_id("msg"), "type": "message", "role": "assistant",
            "model": str(answer.get("model") or ""), "content": content,
            "stop_reason": reason or "end_turn", "stop_sequence": sequence,
            "usage": _usage(answer.get("usage"))}


def _arguments(raw: Any) -> Any:
    try:
        value = json.loads(raw) if isinstance(raw, str) and raw else {}
    except ValueError:
        return {"_raw": raw}  # what the model wrote, kept where a client can see it
    return value if isinstance(value, dict) else {"value": value}


def _sse(kind: str, data: Mapping[str, Any]) -> bytes:
    return (f"event: {kind}\ndata: ".encode()
            + json.dumps({"type": kind, **data}, separators=(",", ":")).encode() + b"\n\n")


class AnthropicWire:
    """The gateway's chat stream as Anthropic's Messages events."""

    def __init__(self, request: Mapping[str, Any]) -> None:
        self.request = request
        self.id = _new_id("msg")
        self.started = False
        self.index = -1  # the open content block's index, -1: none
        self.open: str | None = None  # "text" | "tool:<chat index>"
        self.choice: dict[str, Any] = {}
        self.usage: Mapping[str, Any] | None = None

    def chunk(self, chunk: dict[str, Any], model: str) -> bytes | None:
        out = b""
        if not self.started:
            self.started = True
            out += _sse("message_start", {"message": {
                "id": self.id, "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": None, "stop_sequence": None,
                "usage": {"input_tokens": 0, "output_tokens": 0}}})
            out += _sse("ping", {})
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        choices = chunk.get("choices") or ()
        choice = choices[0] if choices and isinstance(choices[0], Mapping) else {}
        delta = choice.get("delta") or {}
        text = delta.get("content")
        if isinstance(text, str) and text:
            out += self._open("text", {"type": "text", "text": ""})
            out += _sse("content_block_delta", {"index": self.index, "delta": {
                "type": "text_delta", "text": text}})
        for tc in delta.get("tool_calls") or ():
            fn = tc.get("function") or {}
            key = f"tool:{tc.get('index', 0)}"
            if self.open != key:
                out += self._open(key, {"type": "tool_use",
                                        "id": tc.get("id") or _new_id("toolu"),
                                        "name": fn.get("name") or "", "input": {}})
            args = fn.get("arguments")
            if isinstance(args, str) and args:
                out += _sse("content_block_delta", {"index": self.index, "delta": {
                    "type": "input_json_delta", "partial_json": args}})
        if choice.get("finish_reason"):
            self.choice = dict(choice)
        return out or None

    def _open(self, key: str, block: Mapping[str, Any]) -> bytes:
        if self.open == key:
            return b""
        out = self._close()
        self.index += 1
        self.open = key
        return out + _sse("content_block_start", {"index": self.index, "content_block": block})

    def _close(self) -> bytes:
        if self.open is None:
            return b""
        self.open = None
        return _sse("content_block_stop", {"index": self.index})

    def end(self) -> bytes:
        reason, sequence = stop_reason(self.choice, self.request.get("stop_sequences"))
        return (self._close()
                + _sse("message_delta", {"delta": {"stop_reason": reason or "end_turn",
                                                   "stop_sequence": sequence},
                                         "usage": _usage(self.usage)})
                + _sse("message_stop", {}))

    def error(self, exc: UpstreamError) -> bytes:
        overloaded = isinstance(exc, UpstreamStatusError) and exc.capacity
        return _sse("error", {"error": {
            "type": "overloaded_error" if overloaded else "api_error",
            "message": f"upstream_{exc.kind}: {exc}"}})
