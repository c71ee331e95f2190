"""A native Gemini upstream (catalog ``api: gemini``): the gateway's chat-shaped request
as a ``generateContent`` request, and the answer (a body, or the ``alt=sse`` stream of
``GenerateContentResponse`` chunks) back as Chat Completions' body and chunks, so the
gateway measures and checks it like any other.

Dropped on the way (Gemini has no equivalent here): ``logprobs``, ``top_logprobs``,
``user``, ``parallel_tool_calls``, ``reasoning_effort``, ``stream_options`` (usage always
comes). A function call's ``thoughtSignature`` travels in the tool call's
``extra_content.google.thought_signature`` (where Google's own OpenAI-compatible endpoint
puts it); a call without one (another model's, or a client that dropped it) is sent with
the placeholder Google documents for replayed history.
"""

from __future__ import annotations

import json
import mimetypes
import re
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from serving.native_anthropic import NativeFault

# Google's documented placeholder for a function call whose signature is unknown.
SKIP_SIGNATURE = "skip_thought_signature_validator"
FINISH_REASONS = {"STOP": "stop", "MAX_TOKENS": "length"}
# The model failed to produce an answer at all: not an answer (failover, quality 0).
FAILED = frozenset({"MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS",
                    "MALFORMED_RESPONSE"})
# Every other reason (SAFETY, RECITATION, BLOCKLIST, PROHIBITED_CONTENT, SPII, LANGUAGE,
# OTHER, and those to come) stopped the answer short for a policy of Google's: never a
# finished answer that could be cached, so content_filter.
FILTERED = "content_filter"
_TOOL_CHOICE = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
_AUDIO = {"mp3": "audio/mp3", "wav": "audio/wav"}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def method_url(base_url: str, model: str, *, stream: bool) -> str:
    """``{base_url}/models/{model}:generateContent`` (or the SSE stream's method)."""
    name = model if "/" in model else f"models/{model}"
    method = "streamGenerateContent?alt=sse" if stream else "generateContent"
    return f"{base_url}/{quote(name, safe='/@')}:{method}"


def retry_delay(body: bytes) -> str | None:
    """The seconds of a Google error body's ``RetryInfo.retryDelay`` (``"37s"``), as a
    Retry-After value; None if it has none."""
    if len(body) > 65536:
        return None
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    if isinstance(parsed, list) and parsed:  # the OpenAI-compatible endpoint's shape
        parsed = parsed[0]
    error = parsed.get("error") if isinstance(parsed, Mapping) else None
    details = error.get("details") if isinstance(error, Mapping) else None
    for detail in details if isinstance(details, list) else ():
        if isinstance(detail, Mapping) and str(detail.get("@type", "")).endswith(
                "google.rpc.RetryInfo"):
            match = _DURATION.match(str(detail.get("retryDelay", "")))
            if match:
                return match.group(1)
    return None


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content
                       if isinstance(p, Mapping) and p.get("type") == "text")
    return ""


def _data_url(url: str) -> dict[str, Any] | None:
    if url.startswith("data:") and ";base64," in url:
        mime, data = url[5:].split(";base64,", 1)
        return {"inlineData": {"mimeType": mime, "data": data}}
    return None


def _media(url: str) -> dict[str, Any]:
    inline = _data_url(url)
    if inline is not None:
        return inline
    ref: dict[str, Any] = {"fileUri": url}
    mime = mimetypes.guess_type(url.split("?", 1)[0])[0]
    if mime:
        ref["mimeType"] = mime
    return {"fileData": ref}


def _parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    out: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else ():
        if not isinstance(part, Mapping):
            continue
        kind = part.get("type")
        if kind == "text" and part.get("text"):
            out.append({"text": str(part["text"])})
        elif kind == "image_url":
            image = part.get("image_url") or {}
            url = image.get("url") if isinstance(image, Mapping) else image
            if isinstance(url, str):
                out.append(_media(url))
        elif kind == "input_audio":
            audio = part.get("input_audio") or {}
            if isinstance(audio, Mapping) and isinstance(audio.get("data"), str):
                fmt = str(audio.get("format", "wav"))
                out.append({"inlineData": {"mimeType": _AUDIO.get(fmt, f"audio/{fmt}"),
                                           "data": audio["data"]}})
        elif kind == "file":
            file = part.get("file") or {}
            data = file.get("file_data") if isinstance(file, Mapping) else None
            inline = _data_url(data) if isinstance(data, str) else None
            if inline is not None:  # a file_id names an OpenAI upload: nothing to send
                out.append(inline)
    return out


def _arguments(raw: Any) -> dict[str, Any]:
    try:
        value = json.loads(raw) if isinstance(raw, str) and raw else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _signature(call: Mapping[str, Any]) -> str | None:
    extra = call.get("extra_content")
    google = extra.get("google") if isinstance(extra, Mapping) else None
    value = google.get("thought_signature") if isinstance(google, Mapping) else None
    return value if isinstance(value, str) and value else None


def _response(content: Any) -> dict[str, Any]:
    # functionResponse.response is a JSON object: a tool's object result as it is,
    # anything else under "result".
    text = _text_of(content)
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    return value if isinstance(value, dict) else {"result": text}


def _contents(messages: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool call id -> function name (a response names it)
    for msg in messages if isinstance(messages, list) else ():
        if not isinstance(msg, Mapping):
            continue
        role = msg.get("role")
        if role in ("system", "developer"):
            text = _text_of(msg.get("content"))
            if text:
                system.append({"text": text})
        elif role == "assistant":
            parts = [p for p in _parts(msg.get("content")) if "text" in p]
            for i, call in enumerate(msg.get("tool_calls") or ()):
                fn = call.get("function") or {}
                name = str(fn.get("name", ""))
                names[str(call.get("id"))] = name
                part: dict[str, Any] = {"functionCall": {
                    "id": str(call.get("id")), "name": name,
                    "args": _arguments(fn.get("arguments"))}}
                # Gemini checks the first call of a step; the others carry none.
                signature = _signature(call) or (SKIP_SIGNATURE if i == 0 else None)
                if signature:
                    part["thoughtSignature"] = signature
                parts.append(part)
            if parts:
                contents.append({"role": "model", "parts": parts})
        elif role in ("tool", "function"):
            call_id = str(msg.get("tool_call_id") or msg.get("name") or "")
            answer = {"functionResponse": {
                "id": call_id, "name": names.get(call_id, str(msg.get("name") or call_id)),
                "response": _response(msg.get("content"))}}
            last = contents[-1] if contents else None
            # The responses to one step's calls go back together, in one turn.
            if last is not None and last["role"] == "user" and all(
                    "functionResponse" in p for p in last["parts"]):
                last["parts"].append(answer)
            else:
                contents.append({"role": "user", "parts": [answer]})
        else:
            parts = _parts(msg.get("content"))
            if parts:
                contents.append({"role": "user", "parts": parts})
    return system, contents


def _generation_config(payload: Mapping[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    limit = payload.get("max_completion_tokens", payload.get("max_tokens"))
    if isinstance(limit, int):
        config["maxOutputTokens"] = limit
    for key, name in (("temperature", "temperature"), ("top_p", "topP"), ("seed", "seed"),
                      ("presence_penalty", "presencePenalty"),
                      ("frequency_penalty", "frequencyPenalty"), ("n", "candidateCount")):
        if payload.get(key) is not None:
            config[name] = payload[key]
    stop = payload.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    fmt = payload.get("response_format")
    if isinstance(fmt, Mapping) and fmt.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        schema = fmt.get("json_schema")
        if isinstance(schema, Mapping) and isinstance(schema.get("schema"), Mapping):
            config["responseJsonSchema"] = schema["schema"]
    return config


def to_generate(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The ``generateContent`` request for a chat-shaped upstream payload (the model and
    the choice of streaming go in the URL: :func:`method_url`)."""
    system, contents = _contents(payload.get("messages"))
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": system}
    tools: list[Mapping[str, Any]] = [
        t["function"] for t in payload.get("tools") or ()
        if isinstance(t, Mapping) and t.get("type", "function") == "function"
        and isinstance(t.get("function"), Mapping)]
    if tools:
        declarations = []
        for fn in tools:
            declaration: dict[str, Any] = {"name": fn.get("name")}
            if fn.get("description"):
                declaration["description"] = fn["description"]
            if fn.get("parameters"):
                declaration["parametersJsonSchema"] = fn["parameters"]
            declarations.append(declaration)
        out["tools"] = [{"functionDeclarations": declarations}]
        choice = payload.get("tool_choice")
        calling: dict[str, Any] | None = None
        if isinstance(choice, str) and choice in _TOOL_CHOICE:
            calling = {"mode": _TOOL_CHOICE[choice]}
        elif isinstance(choice, Mapping):
            name = (choice.get("function") or {}).get("name")
            calling = {"mode": "ANY", "allowedFunctionNames": [name]}
        if calling is not None:
            out["toolConfig"] = {"functionCallingConfig": calling}
    config = _generation_config(payload)
    if config:
        out["generationConfig"] = config
    return out


def _usage(meta: Any) -> dict[str, Any] | None:
    if not isinstance(meta, Mapping):
        return None
    # promptTokenCount includes the cached tokens; thoughts are billed as output.
    prompt = int(meta.get("promptTokenCount") or 0) + int(
        meta.get("toolUsePromptTokenCount") or 0)
    thoughts = int(meta.get("thoughtsTokenCount") or 0)
    completion = int(meta.get("candidatesTokenCount") or 0) + thoughts
    out: dict[str, Any] = {
        "prompt_tokens": prompt, "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": int(
            meta.get("cachedContentTokenCount") or 0)}}
    if thoughts:
        out["completion_tokens_details"] = {"reasoning_tokens": thoughts}
    return out


def _finish(reason: Any, calls: bool) -> str:
    if reason in FAILED:
        raise NativeFault(f"the model failed to answer ({reason})", error=True)
    finish = FINISH_REASONS.get(str(reason), FILTERED)
    return "tool_calls" if calls and finish == "stop" else finish


def _call(part: Mapping[str, Any]) -> dict[str, Any]:
    fn = part.get("functionCall") or {}
    call: dict[str, Any] = {
        "id": str(fn.get("id") or f"call_{uuid.uuid4().hex[:24]}"), "type": "function",
        "function": {"name": fn.get("name"), "arguments": json.dumps(fn.get("args") or {})}}
    if isinstance(part.get("thoughtSignature"), str):
        call["extra_content"] = {"google": {"thought_signature": part["thoughtSignature"]}}
    return call


def _answer_parts(candidate: Mapping[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, Mapping) else None
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in parts if isinstance(parts, list) else ():
        if not isinstance(part, Mapping) or part.get("thought"):
            continue  # a thought summary is not the answer
        if isinstance(part.get("text"), str):
            text.append(part["text"])
        elif isinstance(part.get("functionCall"), Mapping):
            calls.append(_call(part))
    return "".join(text), calls


def _refused(body: Mapping[str, Any]) -> bool:
    feedback = body.get("promptFeedback")
    return isinstance(feedback, Mapping) and bool(feedback.get("blockReason"))


def _said(error: Any) -> str:
    if isinstance(error, Mapping):
        return f"{error.get('message')} ({error.get('status') or error.get('code')})"
    return str(error)[:200]


def to_completion(body: Mapping[str, Any], model: str) -> dict[str, Any]:
    """A ``generateContent`` answer as a Chat Completions body (NativeFault if it is not
    one). A prompt Gemini blocked is an answer: no content, ``content_filter``."""
    if body.get("error"):
        raise NativeFault(f"sent an error: {_said(body['error'])}", error=True)
    candidates = body.get("candidates")
    choices: list[dict[str, Any]] = []
    if not candidates and _refused(body):
        choices.append({"index": 0, "message": {"role": "assistant", "content": None,
                                                "refusal": None},
                        "finish_reason": FILTERED})
    elif not isinstance(candidates, list) or not candidates:
        raise NativeFault("the answer has no candidates")
    for i, candidate in enumerate(candidates or ()):
        if not isinstance(candidate, Mapping) or not candidate.get("finishReason"):
            raise NativeFault(f"candidate {i} has no finishReason")
        text, calls = _answer_parts(candidate)
        message: dict[str, Any] = {"role": "assistant", "content": text or None,
                                   "refusal": None}
        if calls:
            message["tool_calls"] = calls
        choices.append({"index": int(candidate.get("index", i)), "message": message,
                        "finish_reason": _finish(candidate["finishReason"], bool(calls))})
    out: dict[str, Any] = {"id": str(body.get("responseId", "")), "object": "chat.completion",
                           "model": model, "choices": choices}
    usage = _usage(body.get("usageMetadata"))
    if usage is not None:
        out["usage"] = usage
    return out


class GenerateStream:
    """Gemini's stream chunks in, Chat Completions chunks out. Gemini sends no final
    event: the connection closes after a chunk with a ``finishReason``, so :meth:`end`
    (at the end of the body) raises :class:`NativeFault` unless every candidate finished,
    and returns the usage chunk."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.done = False
        self.id = ""
        self.usage: dict[str, Any] | None = None
        self.calls: dict[int, int] = {}  # candidate index -> its tool calls so far
        self.finished: dict[int, str] = {}

    def _chunk(self, index: int, delta: dict[str, Any],
               finish: str | None = None) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "model": self.model,
                "choices": [{"index": index, "delta": delta, "finish_reason": finish}]}

    def _candidate(self, index: int, candidate: Mapping[str, Any]) -> list[dict[str, Any]]:
        if index in self.finished:
            return []
        out: list[dict[str, Any]] = []
        if index not in self.calls:
            self.calls[index] = 0
            out.append(self._chunk(index, {"role": "assistant", "content": ""}))
        text, calls = _answer_parts(candidate)
        if text:
            out.append(self._chunk(index, {"content": text}))
        if calls:
            first = self.calls[index]
            self.calls[index] += len(calls)
            out.append(self._chunk(index, {"tool_calls": [
                {"index": first + n, **call} for n, call in enumerate(calls)]}))
        reason = candidate.get("finishReason")
        if reason:
            finish = _finish(reason, self.calls[index] > 0)
            self.finished[index] = finish
            out.append(self._chunk(index, {}, finish))
        return out

    def event(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        if event.get("error"):
            raise NativeFault(f"sent an error event: {_said(event['error'])}", error=True)
        if self.done or not event:
            return []
        self.id = str(event.get("responseId") or self.id)
        usage = _usage(event.get("usageMetadata"))
        if usage is not None:
            self.usage = usage  # each chunk's counts so far; the last one's are the total
        candidates = event.get("candidates")
        if not candidates and _refused(event) and 0 not in self.finished:
            self.finished[0] = FILTERED
            return [self._chunk(0, {"role": "assistant", "content": ""}),
                    self._chunk(0, {}, FILTERED)]
        out: list[dict[str, Any]] = []
        for i, candidate in enumerate(candidates if isinstance(candidates, list) else ()):
            if isinstance(candidate, Mapping):
                out += self._candidate(int(candidate.get("index", i)), candidate)
        return out

    def end(self) -> list[dict[str, Any]]:
        if not self.finished:
            raise NativeFault("the stream ended without a finishReason")
        open_ = sorted(set(self.calls) - set(self.finished))
        if open_:
            raise NativeFault(f"the stream ended without a finishReason for candidate "
                              f"{open_[0]}")
        self.done = True
        return [{"id": self.id, "object": "chat.completion.chunk", "model": self.model,
                 "choices": [], "usage": self.usage}] if self.usage else []
