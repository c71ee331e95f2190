"""Bodies validated by the routes themselves (serving/routes/body.py) answer exactly as a
body declared to FastAPI would, and stay documented in the OpenAPI schema."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field

from serving import errors
from serving.routes import body


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int = Field(strict=True, ge=1)


class Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[dict[str, Any]] | None = None
    inner: Inner | None = None


def _apps() -> tuple[FastAPI, FastAPI]:
    declared, parsed = FastAPI(), FastAPI()
    errors.install(declared)
    errors.install(parsed)

    @declared.post("/x")
    async def by_fastapi(payload: Outer) -> dict[str, Any]:
        return {"set": sorted(payload.model_fields_set), "inner": payload.inner}

    @parsed.post("/x", openapi_extra=body.openapi_body(Outer))
    async def by_route(request: Request) -> dict[str, Any]:
        payload = await body.parse(request, Outer)
        return {"set": sorted(payload.model_fields_set), "inner": payload.inner}

    body.document(parsed, [Outer])
    return declared, parsed


RAW = [
    b'{"inner": {"n": 3}, "items": [{"a": 1}]}', b"", b"null", b"[1]", b'"s"', b"{bad",
    b'{"inner": {"n": 0}}', b'{"inner": {"n": 1.0}}', b'{"inner": {"n": "2"}}',
    b'{"items": "x"}', b'{"other": 1}', b'{"x": "\\ud800"}', b'{"items": [{"a": NaN}]}',
    b'\xef\xbb\xbf{"inner": {"n": 2}}', b'{"items": [{"a": "\xff"}]}', b'{} trailing',
    b'{"items": [{"a": ' + b"[" * 500 + b"]" * 500 + b"}]}",
    b'{"items": [{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}]}",
]
CONTENT_TYPES = ["application/json", "application/json; charset=utf-8",
                 "application/problem+json", "text/plain", None]


@pytest.mark.parametrize("raw", RAW, ids=range(len(RAW)))
@pytest.mark.parametrize("content_type", CONTENT_TYPES)
async def test_answers_are_those_of_a_declared_body(raw: bytes, content_type: str | None
                                                    ) -> None:
    headers = {"content-type": content_type} if content_type else {}
    answers = []
    for app in _apps():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://127.0.0.1") as client:
            r = await client.post("/x", content=raw, headers=headers)
            answers.append((r.status_code, r.text))
    assert answers[0] == answers[1]


def test_the_body_is_documented() -> None:
    _, parsed = _apps()
    schema = parsed.openapi()
    op = schema["paths"]["/x"]["post"]
    assert op["requestBody"]["required"] is True
    ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert ref == "#/components/schemas/Outer"
    found = schema["components"]["schemas"]
    assert found["Outer"]["properties"]["inner"]["anyOf"][0]["$ref"] == \
        "#/components/schemas/Inner"
    assert found["Inner"]["properties"]["n"]["minimum"] == 1
