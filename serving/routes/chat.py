"""``POST /v1/chat/completions`` and ``GET /v1/models`` in OpenAI's format."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from serving.gateway import Answer, Gateway, GatewayError, UpstreamRejected

router = APIRouter(tags=["openai"])


def openai_error(status_code: int, message: str, *, type: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None) -> JSONResponse:
    """An error body in OpenAI's format: ``{"error": {message, type, param, code}}``."""
    return JSONResponse({"error": {"message": message, "type": type, "param": param,
                                   "code": code}}, status_code=status_code, headers=headers)


def gateway_of(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


def _tenant(request: Request) -> str | None:
    # The auth dependency (serving/auth.py) stores the caller's tenant on request.state.
    tenant = getattr(request.state, "tenant", None)
    return tenant if isinstance(tenant, str) else None


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(request: Request) -> Response:
    """Route a Chat Completions request to a model, forward it and measure the call."""
    raw = await request.body()
    try:
        body: Any = json.loads(raw)
    except ValueError:
        return openai_error(400, "We could not parse the JSON body of your request.",
                            code="invalid_json")
    if not isinstance(body, dict):
        return openai_error(400, "The request body must be a JSON object.",
                            code="invalid_json")
    gateway = gateway_of(request)
    try:
        answer = await gateway.chat(body, tenant=_tenant(request),
                                    user_key=getattr(request.state, "user_key", None))
    except GatewayError as exc:
        return JSONResponse(exc.to_dict(), status_code=exc.status_code, headers=exc.headers)
    except UpstreamRejected as exc:
        return Response(exc.body, status_code=exc.status_code, headers=exc.headers,
                        media_type=exc.headers.get("content-type", "application/json"))
    if isinstance(answer, Answer):
        return Response(answer.body, media_type="application/json", headers=answer.headers)
    return StreamingResponse(answer.events, media_type="text/event-stream",
                             headers={**answer.headers, "cache-control": "no-cache",
                                      "x-accel-buffering": "no"})


def models_list(gateway: Gateway) -> dict[str, Any]:
    """``auto``, ``auto:<profile>`` and the catalog as OpenAI model objects; catalog
    entries carry their details under ``routebandit``."""
    data: list[dict[str, Any]] = [
        {"id": "auto", "object": "model", "created": 0, "owned_by": "routebandit"}]
    for name in gateway.router.profiles:
        data.append({"id": f"auto:{name}", "object": "model", "created": 0,
                     "owned_by": "routebandit"})
    for spec in gateway.router.catalog:
        details = spec.to_dict()
        details.pop("name", None)
        data.append({"id": spec.name, "object": "model", "created": 0,
                     "owned_by": spec.provider_name, "routebandit": details})
    return {"object": "list", "data": data}


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    """List ``auto``, the reward profiles and the catalog in OpenAI's format."""
    return models_list(gateway_of(request))
