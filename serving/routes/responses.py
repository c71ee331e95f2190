"""``POST /v1/responses``: OpenAI's Responses API through the gateway (OpenAI's errors)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from bandit.errors import RequestError, RouteBanditError
from serving.browsers import is_json
from serving.doors.responses import ResponsesWire, from_chat, to_chat
from serving.errors import BodyTooLargeError
from serving.gateway import Answer, Gateway, GatewayError, UpstreamRejected
from serving.requests import loads
from serving.routes.chat import invalid_error, openai_error, service_error
from serving.routes.door import EventStream, admit, unless_client_leaves

router = APIRouter(tags=["openai"])


@router.post("/v1/responses", response_model=None)
async def responses(request: Request) -> Response:
    """Route a Responses API request to a model, forward it and measure the call."""
    try:
        await admit(request)
    except RouteBanditError as exc:
        return service_error(exc)
    try:
        raw = await request.body()
    except BodyTooLargeError as exc:
        return openai_error(413, str(exc.detail), code="request_too_large")
    if not is_json(request.headers.get("content-type")):
        return openai_error(415, "The request body must be JSON: send the header "
                            "'Content-Type: application/json'.", code="unsupported_media_type",
                            param="content-type")
    try:
        body: Any = loads(raw)
        if not isinstance(body, dict):
            return openai_error(400, "The request body must be a JSON object.",
                                code="invalid_json")
        chat = to_chat(body)
    except RequestError as exc:
        return invalid_error(exc)
    gateway: Gateway = request.app.state.gateway
    try:
        answer = await unless_client_leaves(request, gateway, chat,
                                             lambda: ResponsesWire(body))
    except GatewayError as exc:
        return JSONResponse(exc.to_dict(), status_code=exc.status_code, headers=exc.headers)
    except UpstreamRejected as exc:  # an OpenAI-compatible upstream's own error body
        return Response(exc.body, status_code=exc.status_code, headers=exc.headers,
                        media_type=exc.headers.get("content-type", "application/json"))
    except RequestError as exc:
        return invalid_error(exc)
    except RouteBanditError as exc:
        return service_error(exc)
    if answer is None:
        return Response(status_code=499)
    if isinstance(answer, Answer):
        out = from_chat(body, json.loads(answer.body))
        return JSONResponse(out, headers=answer.headers)
    return EventStream(answer)
