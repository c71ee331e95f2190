"""``/v1/models``: the catalog (OpenAI's list format) and run-time changes (admin)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Response

from bandit.catalog import ModelSpec, parse_model
from serving.auth import Principal, authenticate, require_admin
from serving.dependencies import service_of
from serving.errors import NotFoundError
from serving.service import RouterService

router = APIRouter(tags=["models"])

_EXAMPLE = {
    "name": "mistral-small", "base_url": "https://api.mistral.ai/v1",
    "api_key_env": "MISTRAL_API_KEY", "input_price": 0.2, "output_price": 0.6,
    "context_window": 32000, "capabilities": ["json", "tools"], "latency_ms": 800,
}


# What a tenant (non-admin) key sees of a model: never where it lives (base_url, and the
# host that owned_by would otherwise derive from it) or which variable holds its key.
_TENANT_FIELDS = ("input_price", "output_price", "cached_input_price", "cache_write_price",
                  "context_window", "max_output_tokens", "capabilities", "latency_ms",
                  "provider")


def _entry(spec_dict: dict[str, Any], owner: str) -> dict[str, Any]:
    details = dict(spec_dict)
    name = details.pop("name")
    return {"id": name, "object": "model", "created": 0, "owned_by": owner,
            "routebandit": details}


def _tenant_entry(spec: ModelSpec) -> dict[str, Any]:
    details = spec.to_dict()
    shown = {"name": spec.name, **{k: details[k] for k in _TENANT_FIELDS if k in details}}
    return _entry(shown, spec.provider or "routebandit")


@router.get("/v1/models")
async def list_models(
    principal: Annotated[Principal, Depends(authenticate)],
    service: Annotated[RouterService, Depends(service_of)],
) -> dict[str, Any]:
    """The catalog, plus `auto` and `auto:<profile>`, in OpenAI's model-list format."""
    # Admin keys (and development mode) see every field; tenant keys what they need.
    data: list[dict[str, Any]] = [
        {"id": "auto", "object": "model", "created": 0, "owned_by": "routebandit"}
    ]
    data += [{"id": f"auto:{p}", "object": "model", "created": 0, "owned_by": "routebandit"}
             for p in service.profiles]
    data += [_entry(spec.to_dict(), spec.provider_name) if principal.admin
             else _tenant_entry(spec) for spec in service.catalog]
    return {"object": "list", "data": data}


@router.post("/v1/models", status_code=201)
async def add_model(
    spec: Annotated[dict[str, Any], Body(examples=[_EXAMPLE])],
    _: Annotated[Principal, Depends(require_admin)],
    service: Annotated[RouterService, Depends(service_of)],
) -> dict[str, Any]:
    """Add or replace a catalog model (admin); it is explored from its first request."""
    model = await service.add_model(parse_model(spec, "model"))
    return _entry(model.to_dict(), model.provider_name)


@router.delete("/v1/models/{name:path}", status_code=204, response_class=Response)
async def remove_model(
    name: str,
    _: Annotated[Principal, Depends(require_admin)],
    service: Annotated[RouterService, Depends(service_of)],
) -> Response:
    """Remove a catalog model (admin)."""
    if name not in service.catalog:
        raise NotFoundError(f"name: no model {name!r} in the catalog")
    await service.remove_model(name)
    return Response(status_code=204)
