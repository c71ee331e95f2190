"""The body size limit (serving/limits.py) refuses a body whose Content-Length is over it
before any route runs, in the format the path's clients parse."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI, Request

from serving.limits import BodyLimit


def _app() -> FastAPI:
    app = FastAPI()
    app.add_middleware(BodyLimit, max_bytes=1024)

    async def echo(request: Request) -> dict[str, int]:
        return {"n": len(await request.body())}

    app.post("/v1/route")(echo)
    app.post("/v1/chat/completions")(echo)
    return app


async def _post(path: str, size: int) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app()),
                                 base_url="http://127.0.0.1") as client:
        return await client.post(path, content=b" " * size,
                                 headers={"content-type": "application/json"})


async def test_a_chat_body_over_the_limit_is_refused_in_openai_format() -> None:
    r = await _post("/v1/chat/completions", 2048)
    assert r.status_code == 413
    assert r.json() == {"error": {
        "message": "body: larger than the limit of 1024 bytes",
        "type": "invalid_request_error", "param": None, "code": "request_too_large"}}


async def test_other_bodies_over_the_limit_are_refused_in_routebandit_format() -> None:
    r = await _post("/v1/route", 2048)
    assert r.status_code == 413
    assert r.json() == {"error": {"type": "payload_too_large", "field": "body",
                                  "message": "body: larger than the limit of 1024 bytes"}}


@pytest.mark.parametrize("path", ["/v1/route", "/v1/chat/completions"])
async def test_bodies_within_the_limit_pass(path: str) -> None:
    r = await _post(path, 1024)
    assert r.status_code == 200 and r.json() == {"n": 1024}
