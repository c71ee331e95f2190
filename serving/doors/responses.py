"""OpenAI's Responses API (``POST /v1/responses``) over the gateway's chat shape.

Stateless: ``previous_response_id``, ``store: true`` and the conversation items that
need a stored response are refused (400, ``param`` the field).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from typing import Any

from bandit.errors import RequestError
from serving.upstream import UpstreamError

# Fields passed to the chat request unchanged.
_SAME = ("model", "temperature", "top_p", "parallel_tool_calls", "user", "routebandit")
# Fields accepted and not forwarded (echoed in the response object where it has them).
_ACCEPTED = ("metadata", "instructions", "input", "tools", "tool_choice", "text",
             "max_output_tokens", "stream", "store", "truncation", "include", "background",
             "reasoning")
_REFUSED = {
    "previous_response_id": "not supported: routebandit stores no responses; send the "
    "conversation in `input`",
    "conversation": "not supported: routebandit stores no conversations; send them in `input`",
    "prompt": "not supported: stored prompts are not available; send `input`",
}


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise RequestError(f"{where}: must be a string")
    return value


def to_chat(body: Mapping[str, Any]) -> dict[str, Any]:
    """The Chat Completions request a Responses request asks for (RequestError if not)."""
    for name, why in _REFUSED.items():
        if body.get(name) is not None:
            raise RequestError(f"{name}: {why}")
    for name, value in body.items():
        if name in _SAME or name in _ACCEPTED or name in _REFUSED or value is None:
            continue
        raise RequestError(f"{name}: not supported by routebandit's /v1/responses")
    if body.get("store") is True:
        raise RequestError("store: not supported: routebandit stores no responses "
                           "(send store: false or leave it out)")
    if body.get("background") is True:
        raise RequestError("background: not supported (send background: false)")
    if body.get("include"):
        raise RequestError("include: not supported (send an empty list or leave it out)")
    truncation = body.get("truncation")
    if truncation is not None and truncation != "disabled":
        raise RequestError("truncation: only 'disabled' is supported")
    chat: dict[str, Any] = {k: body[k] for k in _SAME if body.get(k) is not None}
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None:
        messages.append({"role": "system", "content": _text(instructions, "instructions")})
    messages.extend(_input(body.get("input")))
    chat["messages"] = messages
    if body.get("tools") is not None:
        chat["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        chat["tool_choice"] = _tool_choice(body["tool_choice"])
    fmt = _format(body.get("text"))
    if fmt is not None:
        chat["response_format"] = fmt
    limit = body.get("max_output_tokens")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise RequestError("max_output_tokens: must be a positive whole number")
        chat["max_tokens"] = limit
    effort = _reasoning(body.get("reasoning"))
    if effort is not None:  # routed to a model with the ``reasoning`` capability
        chat["reasoning_effort"] = effort
    metadata = body.get("metadata")
    if metadata is not None:
        _metadata(metadata)
    if body.get("stream") is not None:
        if not isinstance(body["stream"], bool):
            raise RequestError("stream: must be true or false")
        chat["stream"] = body["stream"]
    return chat


def _reasoning(value: Any) -> str | None:
    # ``reasoning: {effort, summary}``: the effort is Chat Completions' reasoning_effort;
    # a summary is not something an upstream's chat answer carries back, so it is dropped.
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise RequestError("reasoning: must be an object such as {\"effort\": \"low\"}")
    effort = value.get("effort")
    if effort is not None and not isinstance(effort, str):
        raise RequestError("reasoning.effort: must be a string such as 'low' or 'high'")
    return effort


def _metadata(value: Any) -> None:
    if not isinstance(value, Mapping) or len(value) > 16:
        raise RequestError("metadata: must be an object of at most 16 string values")
    for k, v in value.items():
        if len(k) > 64 or not isinstance(v, str) or len(v) > 512:
            raise RequestError(f"metadata.{k}: keys up to 64 and values up to 512 characters")


def _input(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise RequestError("input: must be a string or a non-empty list of items")
    out: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        where = f"input[{i}]"
        if not isinstance(item, Mapping):
            raise RequestError(f"{where}: must be an object")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise RequestError(f"{where}.role: must be user, assistant, system or "
                                   "developer")
            out.append({"role": role, "content": _content(item.get("content"), role,
                                                          f"{where}.content")})
        elif kind == "function_call":
            call = {"id": _text(item.get("call_id"), f"{where}.call_id"), "type": "function",
                    "function": {"name": _text(item.get("name"), f"{where}.name"),
                                 "arguments": _text(item.get("arguments"),
                                                    f"{where}.arguments")}}
            last = out[-1] if out else None
            # Calls join the assistant turn before them (chat's one message per turn).
            if last is not None and last["role"] == "assistant" and not isinstance(
                    last.get("content"), list):
                last.setdefault("tool_calls", []).append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            if isinstance(output, list):
                output = "".join(p.get("text", "") for p in output if isinstance(p, Mapping))
            out.append({"role": "tool",
                        "tool_call_id": _text(item.get("call_id"), f"{where}.call_id"),
                        "content": _text(output, f"{where}.output")})
        else:
            raise RequestError(f"{where}.type: {str(kind)[:64]!r} is not supported (message, "
                               "function_call, function_call_output)")
    return out


def _content(value: Any, role: str, where: str) -> str | list[dict[str, Any]]:
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise RequestError(f"{where}: must be a string or a list of parts")
    parts: list[dict[str, Any]] = []
    for i, part in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(part, Mapping):
            raise RequestError(f"{at}: must be an object")
        kind = part.get("type")
        if kind in ("input_text", "output_text"):
            parts.append({"type": "text", "text": _text(part.get("text"), f"{at}.text")})
        elif kind == "refusal":
            parts.append({"type": "text", "text": _text(part.get("refusal"), f"{at}.refusal")})
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str) or not url:
                raise RequestError(f"{at}.image_url: must be a URL or a data: URL (file_id "
                                   "is not supported)")
            image: dict[str, Any] = {"url": url}
            if part.get("detail") is not None:
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        elif kind == "input_file":
            parts.append(_file(part, at))
        elif kind == "input_audio":
            audio = part.get("input_audio")
            if not isinstance(audio, Mapping):
                raise RequestError(f"{at}.input_audio: must be an object with data and format")
            parts.append({"type": "input_audio", "input_audio": {
                "data": _text(audio.get("data"), f"{at}.input_audio.data"),
                "format": _text(audio.get("format"), f"{at}.input_audio.format")}})
        else:
            raise RequestError(f"{at}.type: {str(kind)[:64]!r} is not supported (input_text, "
                               "input_image, input_file, input_audio, output_text)")
    if role != "user" and all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)  # every upstream takes a string here
    return parts


def _file(part: Mapping[str, Any], at: str) -> dict[str, Any]:
    # Chat Completions' file part: the data inline (a data: URL), as a stateless gateway
    # can send it to any upstream; a file_id names one provider's stored file.
    if part.get("file_data") is None:
        raise RequestError(f"{at}.file_data: required: a data: URL of the file (file_id "
                           "and file_url are not supported)")
    file = {"file_data": _text(part.get("file_data"), f"{at}.file_data")}
    if part.get("filename") is not None:
        file["filename"] = _text(part["filename"], f"{at}.filename")
    return {"type": "file", "file": file}


def _tools(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise RequestError("tools: must be a list")
    out = []
    for i, tool in enumerate(value):
        if not isinstance(tool, Mapping) or tool.get("type") != "function":
            raise RequestError(f"tools[{i}].type: only function tools are supported")
        fn: dict[str, Any] = {"name": _text(tool.get("name"), f"tools[{i}].name")}
        for key in ("description", "parameters", "strict"):
            if tool.get(key) is not None:
                fn[key] = tool[key]
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(value: Any) -> Any:
    if value in ("auto", "none", "required"):
        return value
    if isinstance(value, Mapping) and value.get("type") == "function":
        return {"type": "function",
                "function": {"name": _text(value.get("name"), "tool_choice.name")}}
    raise RequestError("tool_choice: must be auto, none, required or "
                       "{type: function, name}")


def _format(text: Any) -> dict[str, Any] | None:
    if text is None:
        return None
    if not isinstance(text, Mapping):
        raise RequestError("text: must be an object")
    fmt = text.get("format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, Mapping) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        assert isinstance(fmt, Mapping)
        schema: dict[str, Any] = {"name": _text(fmt.get("name"), "text.format.name")}
        if not isinstance(fmt.get("schema"), Mapping):
            raise RequestError("text.format.schema: must be an object")
        for key in ("schema", "strict", "description"):
            if fmt.get(key) is not None:
                schema[key] = fmt[key]
        return {"type": "json_schema", "json_schema": schema}
    raise RequestError("text.format.type: must be text, json_object or json_schema")


def _usage(usage: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not usage:
        return None
    inp = int(usage.get("prompt_tokens") or 0)
    out = int(usage.get("completion_tokens") or 0)
    return {"input_tokens": inp, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": out, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": int(usage.get("total_tokens") or inp + out)}


def _shell(request: Mapping[str, Any], rid: str, model: str, status: str) -> dict[str, Any]:
    """The response object around its output (what every lifecycle event carries)."""
    fmt = (request.get("text") or {}).get("format") if isinstance(request.get("text"),
                                                                   Mapping) else None
    return {
        "id": rid, "object": "response", "created_at": int(time.time()), "status": status,
        "background": False, "error": None, "incomplete_details": None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"), "model": model,
        "output": [], "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": None, "store": False,
        "temperature": request.get("temperature"), "top_p": request.get("top_p"),
        "text": {"format": fmt or {"type": "text"}},
        "tool_choice": request.get("tool_choice", "auto"), "tools": request.get("tools") or [],
        "truncation": "disabled", "usage": None, "metadata": request.get("metadata") or {},
        **({"reasoning": request["reasoning"]} if request.get("reasoning") else {}),
    }


def _finish(response: dict[str, Any], finish_reason: str | None) -> None:
    if finish_reason == "length":
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": "max_output_tokens"}
    elif finish_reason == "content_filter":
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": "content_filter"}
    else:
        response["status"] = "completed"


def from_chat(request: Mapping[str, Any], answer: Mapping[str, Any]) -> dict[str, Any]:
    """The Responses object of a Chat Completions answer (its first choice)."""
    model = str(answer.get("model") or "")
    response = _shell(request, _new_id("resp"), model, "completed")
    choices = answer.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], Mapping) else {}
    message = choice.get("message") or {}
    parts: list[dict[str, Any]] = []
    if isinstance(message.get("content"), str) and message["content"]:
        parts.append({"type": "output_text", "text": message["content"], "annotations": [],
                      "logprobs": []})
    if isinstance(message.get("refusal"), str) and message["refusal"]:
        parts.append({"type": "refusal", "refusal": message["refusal"]})
    if parts:
        response["output"].append({"type": "message", "id": _new_id("msg"),
                                   "status": "completed", "role": "assistant",
                                   "content": parts})
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        response["output"].append({"type": "function_call", "id": _new_id("fc"),
                                   "call_id": call.get("id") or _new_id("call"),
                                   "name": fn.get("name", ""),
                                   "arguments": fn.get("arguments", ""),
                                   "status": "completed"})
    _finish(response, choice.get("finish_reason"))
    response["usage"] = _usage(answer.get("usage"))
    return response


class ResponsesWire:
    """The gateway's chat stream as Responses' typed events (one response per stream)."""

    def __init__(self, request: Mapping[str, Any]) -> None:
        self.request = request
        self.id = _new_id("resp")
        self.seq = 0
        self.model = ""
        self.started = False
        self.output: list[dict[str, Any]] = []
        self.text: dict[str, Any] | None = None  # the open message item
        self.calls: dict[int, dict[str, Any]] = {}  # chat tool-call index -> item
        self.open: list[dict[str, Any]] = []  # items added, not yet done (in order)
        self.finish_reason: str | None = None
        self.usage: Mapping[str, Any] | None = None

    def _event(self, kind: str, **data: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self.seq, **data}
        self.seq += 1
        return (f"event: {kind}\ndata: ".encode()
                + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n")

    def _response(self, status: str) -> dict[str, Any]:
        out = _shell(self.request, self.id, self.model, status)
        out["output"] = self.output
        return out

    def _add(self, item: dict[str, Any]) -> bytes:
        self.output.append(item)
        self.open.append(item)
        shown = {**item, "content": []} if item["type"] == "message" else dict(item)
        return self._event("response.output_item.added", output_index=len(self.output) - 1,
                           item=shown)

    def chunk(self, chunk: dict[str, Any], model: str) -> bytes | None:
        self.model = model
        out = b""
        if not self.started:
            self.started = True
            out += self._event("response.created", response=self._response("in_progress"))
            out += self._event("response.in_progress", response=self._response("in_progress"))
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        choices = chunk.get("choices") or ()
        choice = choices[0] if choices and isinstance(choices[0], Mapping) else {}
        delta = choice.get("delta") or {}
        content = delta.get("content")
        if isinstance(content, str) and content:
            out += self._text_delta(content)
        for tc in delta.get("tool_calls") or ():
            out += self._call_delta(tc)
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]
        return out or None

    def _text_delta(self, content: str) -> bytes:
        out = b""
        if self.text is None:
            self.text = {"type": "message", "id": _new_id("msg"), "status": "in_progress",
                         "role": "assistant", "content": [
                             {"type": "output_text", "text": "", "annotations": [],
                              "logprobs": []}]}
            out += self._add(self.text)
            out += self._event("response.content_part.added", item_id=self.text["id"],
                               output_index=len(self.output) - 1, content_index=0,
                               part={"type": "output_text", "text": "", "annotations": [],
                                     "logprobs": []})
        self.text["content"][0]["text"] += content
        out += self._event("response.output_text.delta", item_id=self.text["id"],
                           output_index=self.output.index(self.text), content_index=0,
                           delta=content, logprobs=[])
        return out

    def _call_delta(self, tc: Mapping[str, Any]) -> bytes:
        out = b""
        index = tc.get("index", 0)
        fn = tc.get("function") or {}
        item = self.calls.get(index)
        if item is None:
            item = {"type": "function_call", "id": _new_id("fc"),
                    "call_id": tc.get("id") or _new_id("call"), "name": fn.get("name") or "",
                    "arguments": "", "status": "in_progress"}
            self.calls[index] = item
            out += self._add(item)
        args = fn.get("arguments")
        if isinstance(args, str) and args:
            item["arguments"] += args
            out += self._event("response.function_call_arguments.delta", item_id=item["id"],
                               output_index=self.output.index(item), delta=args)
        return out

    def _close_items(self) -> bytes:
        out = b""
        for item in self.open:
            index = self.output.index(item)
            if item["type"] == "message":
                part = item["content"][0]
                out += self._event("response.output_text.done", item_id=item["id"],
                                   output_index=index, content_index=0, text=part["text"],
                                   logprobs=[])
                out += self._event("response.content_part.done", item_id=item["id"],
                                   output_index=index, content_index=0, part=part)
            else:
                out += self._event("response.function_call_arguments.done",
                                   item_id=item["id"], output_index=index,
                                   name=item["name"], arguments=item["arguments"])
            item["status"] = "completed"
            out += self._event("response.output_item.done", output_index=index, item=item)
        self.open = []
        return out

    def end(self) -> bytes:
        out = self._close_items()
        response = self._response("completed")
        _finish(response, self.finish_reason)
        response["usage"] = _usage(self.usage)
        kind = "response.completed" if response["status"] == "completed" else \
            "response.incomplete"
        return out + self._event(kind, response=response)

    def error(self, exc: UpstreamError) -> bytes:
        code = f"upstream_{exc.kind}"
        response = self._response("failed")
        response["error"] = {"code": "server_error", "message": str(exc)}
        return (self._event("error", code=code, message=str(exc), param=None)
                + self._event("response.failed", response=response))
