"""Answer checks for cascade mode: is this answer good enough not to escalate?

Each check looks at one assistant message (a non-streamed choice, or the text assembled
from a stream) and returns why it fails, or None.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

_APOSTROPHE = "['\u2019]"
_REFUSAL_RE = re.compile(
    rf"^\s*(?:(?:I{_APOSTROPHE}?m|I am)\s+(?:very\s+|really\s+|so\s+)?sorry|sorry|"
    rf"I apologi[sz]e|as an AI[^.,]{{0,60}})?[,.!:]?\s*(?:but\s+)?"
    rf"I\s*(?:can{_APOSTROPHE}?t|cannot|can not|won{_APOSTROPHE}?t|will not|"
    rf"(?:am|{_APOSTROPHE}m)\s+(?:not able|unable) to)\s+"
    r"(?:help|assist|comply|provide|do that|answer|fulfil+|share|generate|create|write|"
    r"support)",
    re.IGNORECASE,
)


def wants_json(request: Mapping[str, Any]) -> bool:
    fmt = request.get("response_format")
    return isinstance(fmt, Mapping) and fmt.get("type") in ("json_object", "json_schema")


def answer_problem(
    *,
    content: str | None,
    finish_reason: str | None,
    refusal: str | None = None,
    tool_calls: bool = False,
    json_expected: bool = False,
) -> str | None:
    """Why the answer should be escalated: ``empty``, ``truncated``, ``refusal``,
    ``invalid_json``; None when it passes."""
    text = content or ""
    if refusal:
        return "refusal"
    if finish_reason == "length":
        return "truncated"
    if not text.strip() and not tool_calls:
        return "empty"
    if text and _REFUSAL_RE.match(text[:200]):
        return "refusal"
    if json_expected and not tool_calls:
        try:
            json.loads(text)
        except ValueError:
            return "invalid_json"
    return None


def completion_problem(body: Mapping[str, Any], *, json_expected: bool) -> str | None:
    """:func:`answer_problem` for the first choice of a Chat Completions body."""
    choices = body.get("choices") or []
    if not choices or not isinstance(choices[0], Mapping):
        return "empty"
    choice = choices[0]
    msg = choice.get("message") or {}
    return answer_problem(
        content=msg.get("content") if isinstance(msg.get("content"), str) else None,
        finish_reason=choice.get("finish_reason"),
        refusal=msg.get("refusal"),
        tool_calls=bool(msg.get("tool_calls") or msg.get("function_call")),
        json_expected=json_expected,
    )
