"""``POST /v1/messages``: Anthropic's Messages API through the gateway (Anthropic's errors)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from bandit.errors import RequestError, RouteBanditError
from serving.browsers import is_json
from serving.doors.messages import VERSION, AnthropicWire, count_tokens, error_body, from_chat
from serving.doors.messages import to_chat as messages_to_chat
from serving.errors import BodyTooLargeError, error_response, printable
from serving.gateway import Answer, Gateway, GatewayError, UpstreamRejected
from serving.requests import loads
from serving.routes.door import EventStream, admit, unless_client_leaves

router = APIRouter(tags=["anthropic"])


def anthropic_error(status: int, message: str,
                    headers: dict[str, str] | None = None) -> JSONResponse:
    """An error body in Anthropic's format: ``{"type": "error", "error": {type, message}}``."""
    return JSONResponse(error_body(status, printable(message)), status_code=status,
                        headers=headers)


def _service_error(exc: Exception) -> JSONResponse:
    status, body = error_response(exc)
    err = body["error"]
    retry = err.get("retry_after")
    return anthropic_error(status, err["message"],
                           None if retry is None else {"Retry-After": str(retry)})


def _gateway_error(exc: GatewayError) -> JSONResponse:
    # Every model overloaded is Anthropic's 529; a field keeps its name in the message.
    status = 529 if exc.code == "upstream_overloaded" else exc.status_code
    message = str(exc)
    if exc.param and not message.startswith(f"{exc.param}:"):
        message = f"{exc.param}: {message}"
    return anthropic_error(status, message, exc.headers)


def _rejected(exc: UpstreamRejected) -> JSONResponse:
    # An OpenAI-compatible upstream's own refusal, retold in Anthropic's shape.
    try:
        message = str(json.loads(exc.body)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        message = f"the upstream model refused the request ({exc.status_code})"
    headers = {k: v for k, v in exc.headers.items() if k.startswith("x-routebandit-")}
    return anthropic_error(exc.status_code, message, headers)


async def _admitted(request: Request) -> tuple[dict[str, Any] | None, JSONResponse | None]:
    """The request's JSON body once the caller is known, or the error to answer."""
    try:
        await admit(request, x_api_key=True)
    except RouteBanditError as exc:
        return None, _service_error(exc)
    version = request.headers.get("anthropic-version")
    if version is not None and not VERSION.fullmatch(version):
        return None, anthropic_error(400, "anthropic-version: must be a date such as "
                                     "2023-06-01")
    try:
        raw = await request.body()
    except BodyTooLargeError as exc:
        return None, anthropic_error(413, str(exc.detail))
    if not is_json(request.headers.get("content-type")):
        return None, anthropic_error(415, "content-type: the request body must be JSON "
                                     "(send 'Content-Type: application/json')")
    try:
        body: Any = loads(raw)
    except RequestError as exc:
        return None, anthropic_error(400, str(exc))
    if not isinstance(body, dict):
        return None, anthropic_error(400, "body: must be a JSON object")
    return body, None


@router.post("/v1/messages", response_model=None)
async def messages(request: Request) -> Response:
    """Route an Anthropic Messages request to a model, forward it and measure the call."""
    body, refused = await _admitted(request)
    if body is None:
        assert refused is not None
        return refused
    try:
        chat = messages_to_chat(body)
    except RequestError as exc:
        return anthropic_error(400, str(exc))
    gateway: Gateway = request.app.state.gateway
    try:
        answer = await unless_client_leaves(request, gateway, chat,
                                             lambda: AnthropicWire(body))
    except GatewayError as exc:
        return _gateway_error(exc)
    except UpstreamRejected as exc:
        return _rejected(exc)
    except RequestError as exc:
        return anthropic_error(400, str(exc))
    except RouteBanditError as exc:
        return _service_error(exc)
    if answer is None:
        return Response(status_code=499)
    if isinstance(answer, Answer):
        return JSONResponse(from_chat(body, json.loads(answer.body)), headers=answer.headers)
    return EventStream(answer)


@router.post("/v1/messages/count_tokens", response_model=None)
async def count_message_tokens(request: Request) -> Response:
    """Estimate a Messages request's input tokens (the router's estimator, no upstream)."""
    body, refused = await _admitted(request)
    if body is None:
        assert refused is not None
        return refused
    try:
        chat = messages_to_chat(body, count_only=True)
    except RequestError as exc:
        return anthropic_error(400, str(exc))
    return JSONResponse({"input_tokens": count_tokens(chat)})
