"""Cascade checks on an answer: empty, truncated, refusal, invalid JSON."""

from __future__ import annotations

from typing import Any

import pytest

from serving.checks import completion_problem, wants_json


def body(content: Any, finish: str = "stop", **msg: Any) -> dict[str, Any]:
    return {"choices": [{"finish_reason": finish,
                         "message": {"role": "assistant", "content": content, **msg}}]}


@pytest.mark.parametrize(
    ("answer", "json_expected", "problem"),
    [
        (body("Paris."), False, None),
        (body(""), False, "empty"),
        (body(None), False, "empty"),
        (body(None, tool_calls=[{"id": "1"}]), False, None),
        (body("The capital is", "length"), False, "truncated"),
        (body("I'm sorry, but I can't help with that."), False, "refusal"),
        (body("I cannot assist with this request."), False, "refusal"),
        (body("Sorry for the wait: the answer is 4."), False, None),
        (body(None, refusal="no"), False, "refusal"),
        (body('{"a": 1}'), True, None),
        (body('{"a": 1'), True, "invalid_json"),
        ({"choices": []}, False, "empty"),
    ],
    ids=["ok", "empty", "null", "tool-call", "truncated", "sorry", "cannot", "sorry-ok",
         "refusal-field", "json", "bad-json", "no-choices"],
)
def test_completion_problem(answer: dict[str, Any], json_expected: bool,
                            problem: str | None) -> None:
    assert completion_problem(answer, json_expected=json_expected) == problem


def test_wants_json() -> None:
    assert wants_json({"response_format": {"type": "json_object"}})
    assert wants_json({"response_format": {"type": "json_schema", "json_schema": {}}})
    assert not wants_json({"response_format": {"type": "text"}})
    assert not wants_json({})
