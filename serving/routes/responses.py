"""``POST /v1/responses``: OpenAI's Responses API through the gateway (OpenAI's errors)."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from bandit.errors import RequestError
from serving.doors.responses import ResponsesWire, from_chat, to_chat
from serving.gateway import Answer, StreamAnswer
from serving.routes.chat import forward, invalid_error, openai_body
from serving.routes.door import EventStream

router = APIRouter(tags=["openai"])


@router.post("/v1/responses", response_model=None)
async def responses(request: Request) -> Response:
    """Route a Responses API request to a model, forward it and measure the call."""
    body = await openai_body(request)
    if isinstance(body, Response):
        return body
    try:
        chat = to_chat(body)
    except RequestError as exc:
        return invalid_error(exc)
    answer = await forward(request, chat, lambda: ResponsesWire(body))
    if isinstance(answer, Answer):
        out = from_chat(body, json.loads(answer.body))
        return JSONResponse(out, headers=answer.headers)
    if isinstance(answer, StreamAnswer):
        return EventStream(answer)
    return answer
