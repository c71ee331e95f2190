"""A native Anthropic upstream (catalog ``api: anthropic``): the gateway's chat-shaped
request as a Messages request, and the answer (a body, or the stream's events) back as
Chat Completions' body and chunks, so the gateway measures and checks it like any other.

Translated besides messages, tools and stops: ``response_format`` (``json_schema``, or
``json_object`` as any object) as ``output_config.format`` (Anthropic's structured
outputs), ``reasoning_effort`` as extended thinking (a ``budget_tokens`` of 1,024, 4,096
or 16,384 for low, medium and high, added to ``max_tokens`` since Anthropic counts the
thinking in it; the thinking itself is not relayed), and file parts given as data
(``file.file_data``) as ``document`` blocks. Dropped on the way (Anthropic has no
equivalent): ``n``, ``logprobs``, ``seed``, ``stream_options`` (usage always comes),
``frequency_penalty``, ``presence_penalty``; a file part by ``file_id`` is refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096  # Anthropic requires max_tokens; chat requests may omit it
# reasoning_effort -> extended thinking's budget (Anthropic: at least 1,024 tokens)
THINKING_BUDGETS = {"minimal": 1024, "low": 1024, "medium": 4096, "high": 16384,
                    "xhigh": 32768}
# Chat Completions' finish_reason -> Anthropic's stop_reason, and back.
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                "function_call": "tool_use", "content_filter": "refusal"}
FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
                  "tool_use": "tool_calls", "refusal": "content_filter",
                  "pause_turn": "stop"}


class NativeFault(Exception):
    """The Anthropic answer is not an answer (``error``: it says it failed), or the
    request cannot be said in Anthropic's terms."""

    def __init__(self, message: str, *, error: bool = False) -> None:
        super().__init__(message)
        self.error = error


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content
                       if isinstance(p, Mapping) and p.get("type") == "text")
    return ""


def _image(url: str) -> dict[str, Any]:
    if url.startswith("data:") and ";base64," in url:
        media, data = url[5:].split(";base64,", 1)
        return {"type": "image", "source": {"type": "base64", "media_type": media,
                                            "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    out = []
    for part in content or ():
        if not isinstance(part, Mapping):
            continue
        if part.get("type") == "text":
            out.append({"type": "text", "text": str(part.get("text", ""))})
        elif part.get("type") == "image_url":
            image = part.get("image_url") or {}
            url = image.get("url") if isinstance(image, Mapping) else image
            if isinstance(url, str):
                out.append(_image(url))
        elif part.get("type") == "file":
            out.append(_document(part.get("file")))
    return out


def _document(file: Any) -> dict[str, Any]:
    data = file.get("file_data") if isinstance(file, Mapping) else None
    if not (isinstance(data, str) and data.startswith("data:") and ";base64," in data):
        # Anthropic's own file ids are not OpenAI's: nothing to send it by.
        raise NativeFault("a file part must carry its data (file.file_data as a data: URL) "
                          "to reach an Anthropic model")
    media, encoded = data[5:].split(";base64,", 1)
    block: dict[str, Any] = {"type": "document", "source": {
        "type": "base64", "media_type": media or "application/pdf", "data": encoded}}
    if isinstance(file.get("filename"), str):
        block["title"] = file["filename"]
    return block


def _arguments(raw: Any) -> Any:
    try:
        value = json.loads(raw) if isinstance(raw, str) and raw else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def to_messages(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The Messages request for a chat-shaped upstream payload (``model`` its wire name)."""
    system: list[str] = []
    messages: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if messages and messages[-1]["role"] == role:  # Anthropic alternates roles
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})

    for msg in payload.get("messages") or ():
        role = msg.get("role")
        if role in ("system", "developer"):
            system.append(_text_of(msg.get("content")))
        elif role == "tool":
            add("user", [{"type": "tool_result", "tool_use_id": str(msg.get("tool_call_id")),
                          "content": _text_of(msg.get("content"))}])
        elif role == "assistant":
            blocks = _blocks(msg.get("content"))
            for call in msg.get("tool_calls") or ():
                fn = call.get("function") or {}
                blocks.append({"type": "tool_use", "id": call.get("id"),
                               "name": fn.get("name"), "input": _arguments(fn.get("arguments"))})
            add("assistant", blocks)
        else:
            add("user", _blocks(msg.get("content")))
    out: dict[str, Any] = {"model": payload.get("model"), "messages": messages}
    limit = payload.get("max_completion_tokens", payload.get("max_tokens"))
    out["max_tokens"] = limit if isinstance(limit, int) else DEFAULT_MAX_TOKENS
    effort = payload.get("reasoning_effort")
    if isinstance(effort, str) and effort != "none":
        budget = THINKING_BUDGETS.get(effort, THINKING_BUDGETS["medium"])
        out["thinking"] = {"type": "enabled", "budget_tokens": budget}
        out["max_tokens"] += budget  # the answer keeps what the client asked for
    fmt = payload.get("response_format")
    if isinstance(fmt, Mapping) and fmt.get("type") in ("json_schema", "json_object"):
        spec = fmt.get("json_schema") if fmt.get("type") == "json_schema" else None
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        out["output_config"] = {"format": {
            "type": "json_schema",
            "schema": dict(schema) if isinstance(schema, Mapping) else {"type": "object"}}}
    if system:
        out["system"] = "\n".join(system)
    for key in ("temperature", "top_p", "stream"):
        if payload.get(key) is not None:
            out[key] = payload[key]
    stop = payload.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if payload.get("user"):
        out["metadata"] = {"user_id": payload["user"]}
    tools = payload.get("tools")
    if tools:
        out["tools"] = [{"name": (t.get("function") or {}).get("name"),
                         "description": (t.get("function") or {}).get("description", ""),
                         "input_schema": (t.get("function") or {}).get(
                             "parameters", {"type": "object"})} for t in tools]
    choice = payload.get("tool_choice")
    if choice is not None and tools:
        if choice == "required":
            out["tool_choice"] = {"type": "any"}
        elif choice in ("auto", "none"):
            out["tool_choice"] = {"type": choice}
        elif isinstance(choice, Mapping):
            out["tool_choice"] = {"type": "tool",
                                  "name": (choice.get("function") or {}).get("name")}
        if payload.get("parallel_tool_calls") is False and choice != "none":
            out["tool_choice"]["disable_parallel_tool_use"] = True
    return out


def _usage(usage: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not isinstance(usage, Mapping):
        return None
    # Anthropic counts cache reads and writes apart from input_tokens; Chat Completions
    # counts them in prompt_tokens, reads as prompt_tokens_details.cached_tokens (and
    # writes beside them, for the gateway's cost).
    read = int(usage.get("cache_read_input_tokens") or 0)
    written = int(usage.get("cache_creation_input_tokens") or 0)
    inp = int(usage.get("input_tokens") or 0) + read + written
    out = int(usage.get("output_tokens") or 0)
    chat: dict[str, Any] = {"prompt_tokens": inp, "completion_tokens": out,
                            "total_tokens": inp + out}
    if read or written:
        chat["prompt_tokens_details"] = {"cached_tokens": read, "cache_write_tokens": written}
    return chat


def to_completion(body: Mapping[str, Any], model: str) -> dict[str, Any]:
    """A Messages answer as a Chat Completions body (NativeFault if it is not one)."""
    if body.get("type") == "error" or body.get("error"):
        error = body.get("error")
        said = error.get("message") if isinstance(error, Mapping) else error
        raise NativeFault(f"sent an error: {said}", error=True)
    content = body.get("content")
    if not isinstance(content, list):
        raise NativeFault("the answer has no content list")
    text = "".join(b.get("text", "") for b in content
                   if isinstance(b, Mapping) and b.get("type") == "text")
    calls = [{"id": b.get("id"), "type": "function",
              "function": {"name": b.get("name"), "arguments": json.dumps(b.get("input", {}))}}
             for b in content if isinstance(b, Mapping) and b.get("type") == "tool_use"]
    answer: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None}
    if calls:
        answer["tool_calls"] = calls
    finish = FINISH_REASONS.get(str(body.get("stop_reason")), "stop")
    out: dict[str, Any] = {"id": str(body.get("id", "")), "object": "chat.completion",
                           "model": model, "choices": [
                               {"index": 0, "message": answer, "finish_reason": finish}]}
    usage = _usage(body.get("usage"))
    if usage is not None:
        out["usage"] = usage
    return out


class MessagesStream:
    """Anthropic's stream events in, Chat Completions chunks out; :meth:`end` raises
    :class:`NativeFault` unless the stream ended as an answer ends (``message_stop``)."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.done = False
        self.id = ""
        self.usage: dict[str, Any] = {}
        self.tools: dict[int, int] = {}  # content block index -> tool call index
        self.finish: str | None = None

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    def event(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        kind = event.get("type")
        if kind == "error":
            error = event.get("error")
            message = error.get("message") if isinstance(error, Mapping) else error
            raise NativeFault(f"sent an error event: {message}", error=True)
        if self.done or kind == "ping":
            return []
        if kind == "message_start":
            message = event.get("message") or {}
            self.id = str(message.get("id", ""))
            self.usage.update(message.get("usage") or {})
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = self.tools[int(event.get("index", 0))] = len(self.tools)
                return [self._chunk({"tool_calls": [{
                    "index": index, "id": block.get("id"), "type": "function",
                    "function": {"name": block.get("name"), "arguments": ""}}]})]
            return []
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                return [self._chunk({"content": str(delta.get("text", ""))})]
            if delta.get("type") == "input_json_delta":
                index = self.tools.get(int(event.get("index", 0)), 0)
                return [self._chunk({"tool_calls": [{
                    "index": index,
                    "function": {"arguments": str(delta.get("partial_json", ""))}}]})]
            return []
        if kind == "message_delta":
            delta = event.get("delta") or {}
            self.usage.update({k: v for k, v in (event.get("usage") or {}).items()
                               if v is not None})
            self.finish = FINISH_REASONS.get(str(delta.get("stop_reason")), "stop")
            return [self._chunk({}, self.finish)]
        if kind == "message_stop":
            self.done = True
            usage = _usage(self.usage)
            return [{"id": self.id, "object": "chat.completion.chunk", "model": self.model,
                     "choices": [], "usage": usage}] if usage else []
        return []  # content_block_stop, and events this version does not know

    def end(self) -> list[dict[str, Any]]:
        if self.finish is None:
            raise NativeFault("the stream ended without a stop_reason")
        if not self.done:
            raise NativeFault("the stream ended without message_stop")
        return []  # the usage chunk came with message_stop
