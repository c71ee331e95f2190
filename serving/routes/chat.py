"""``POST /v1/chat/completions``: the OpenAI-compatible gateway (errors in OpenAI's format).

The router's lifespan builds the :class:`~serving.gateway.Gateway` on the app's
``RouterService`` (``app.state.service``, whose metrics it counts on) and owns the
upstream httpx client; an app that already put a gateway on ``app.state.gateway``
(tests) keeps its own. A client that disconnects while the gateway waits for an
upstream has the gateway cancelled (``http.disconnect``): nobody is left to answer.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from bandit.errors import RequestError, RouteBanditError
from serving.browsers import is_json
from serving.errors import BodyTooLargeError, printable
from serving.gateway import (
    Answer,
    Gateway,
    GatewayError,
    StreamAnswer,
    UpstreamRejected,
    Wire,
)
from serving.gateway_settings import gateway_config, upstream_timeouts
from serving.requests import loads
from serving.routes.door import EventStream, admit, unless_client_leaves
from serving.settings import GatewaySettings
from serving.upstream import Upstream, new_clients


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Runs inside the app's lifespan, once ``app.state.service`` exists; it replaces a
    # gateway the app may have built with one made from the gateway settings.
    service = getattr(app.state, "service", None)
    if service is None:  # an app that brings its own gateway (tests of the gateway alone)
        yield
        return
    configured = getattr(getattr(app.state, "settings", None), "gateway", None)
    # An app built without settings (a gateway mounted alone) takes the defaults.
    gs = configured if isinstance(configured, GatewaySettings) else (
        GatewaySettings.model_validate({}))
    timeouts = upstream_timeouts(gs)
    previous: Gateway | None = getattr(app.state, "gateway", None)
    async with AsyncExitStack() as stack:
        # The egress policy start-up checked the catalog with (serving/egress.py).
        egress = getattr(app.state, "egress", None)
        clients = new_clients(gs.client_shards, timeouts=timeouts,
                              max_connections=gs.max_connections, transport=gs.transport,
                              egress=egress)
        for client in clients:
            stack.push_async_callback(client.aclose)
        gateway = Gateway(router=service,
                          upstream=Upstream(clients, env=os.environ, egress=egress,
                                            timeouts=timeouts),
                          config=gateway_config(gs), metrics=getattr(service, "metrics", None))
        stack.push_async_callback(gateway.aclose)
        app.state.gateway = gateway
        yield
        app.state.gateway = previous


router = APIRouter(tags=["openai"], lifespan=lifespan)

# routebandit's error kinds (serving.errors) in OpenAI's vocabulary
_OPENAI_TYPES = {401: "invalid_request_error", 403: "invalid_request_error",
                 404: "invalid_request_error", 409: "invalid_request_error",
                 413: "invalid_request_error", 422: "invalid_request_error",
                 402: "insufficient_quota"}


def openai_error(status_code: int, message: str, *, type: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None) -> JSONResponse:
    """An error body in OpenAI's format: ``{"error": {message, type, param, code}}``."""
    return JSONResponse({"error": {"message": printable(message), "type": type,
                                   "param": None if param is None else printable(param),
                                   "code": code}}, status_code=status_code, headers=headers)


def service_error(exc: Exception) -> JSONResponse:
    from serving.errors import error_response

    status, body = error_response(exc)
    err = body["error"]
    code = {401: "invalid_api_key"}.get(status, err.get("type"))
    retry = err.get("retry_after")
    return openai_error(status, err["message"], code=code, param=err.get("field"),
                        type=_OPENAI_TYPES.get(status, "server_error"),
                        headers=None if retry is None else {"Retry-After": str(retry)})


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(request: Request) -> Response:
    """Route a Chat Completions request to a model, forward it and measure the call."""
    body = await openai_body(request)
    if isinstance(body, Response):
        return body
    answer = await forward(request, body)
    if isinstance(answer, Answer):
        return Response(answer.body, media_type="application/json", headers=answer.headers)
    if isinstance(answer, StreamAnswer):
        return EventStream(answer)
    return answer


async def openai_body(request: Request) -> dict[str, Any] | Response:
    """The caller admitted and the request's JSON object, else the error to answer in
    OpenAI's shape (the doors OpenAI's clients speak share this)."""
    try:
        await admit(request)
    except RouteBanditError as exc:
        return service_error(exc)
    try:
        raw = await request.body()
    except BodyTooLargeError as exc:  # a body streamed past the limit (no Content-Length)
        return openai_error(413, str(exc.detail), code="request_too_large")
    if not is_json(request.headers.get("content-type")):
        return openai_error(415, "The request body must be JSON: send the header "
                            "'Content-Type: application/json'.", code="unsupported_media_type",
                            param="content-type")
    try:
        body: Any = loads(raw)
    except RequestError as exc:
        return invalid_error(exc)
    if not isinstance(body, dict):
        return openai_error(400, "The request body must be a JSON object.",
                            code="invalid_json")
    return body


async def forward(request: Request, chat: dict[str, Any],
                  wire: Callable[[], Wire] | None = None) -> Answer | StreamAnswer | Response:
    """The gateway's answer to a chat-shaped request, or its error in OpenAI's shape."""
    gateway: Gateway = request.app.state.gateway
    try:
        answer = await unless_client_leaves(request, gateway, chat, wire)
    except GatewayError as exc:
        return JSONResponse(exc.to_dict(), status_code=exc.status_code, headers=exc.headers)
    except UpstreamRejected as exc:  # an OpenAI-compatible upstream's own error body
        return Response(exc.body, status_code=exc.status_code, headers=exc.headers,
                        media_type=exc.headers.get("content-type", "application/json"))
    except RequestError as exc:  # a field the gateway refused
        return invalid_error(exc)
    except RouteBanditError as exc:  # the service's own (store unavailable, policy, ...)
        return service_error(exc)
    if answer is None:  # nobody to answer (499: nginx's "client closed request")
        return Response(status_code=499)
    return answer


def invalid_error(exc: RequestError) -> JSONResponse:
    message = str(exc)
    field, sep, _ = message.partition(": ")
    return openai_error(400, message, param=field if sep else None,
                        code="invalid_json" if field == "body" else "invalid_value")
