"""``POST /v1/route``: choose a model for a prompt."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from serving.auth import authenticate
from serving.calls import RouteRequest
from serving.requests import (
    Content,
    Metadata,
    ModelName,
    Tag,
    UnicodeTree,
    WeightsIn,
    check_tenant,
)
from serving.routes.body import INVALID, DirectRoute, openapi_body, parse
from serving.service import RouterService, meaning

router = APIRouter(tags=["routing"], route_class=DirectRoute)

class RouteIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"messages": [{"role": "user", "content": "Prove that sqrt(2) is irrational."}],
                 "profile": "quality", "metadata": {"task": "math"}},
                {"prompt": "Translate 'good morning' into French.",
                 "models": ["gpt-5-mini", "llama-3.3-70b-instruct"],
                 "weights": {"cost": 0.1}, "max_tokens": 64},
            ]
        },
    )

    messages: Annotated[list[dict[str, Any]], UnicodeTree] | None = Field(
        None, description="OpenAI-style chat messages (give this or `prompt`)."
    )
    prompt: Content | None = Field(None, description="A single user prompt.")
    models: Annotated[list[ModelName], Field(min_length=1, max_length=256)] | None = Field(
        None, description="Allow-list of catalog models."
    )
    weights: WeightsIn | None = None
    profile: Tag | None = Field(None, description="Named reward profile, e.g. `cheap`.")
    metadata: Metadata | None = None
    max_tokens: Annotated[int, Field(strict=True, ge=1, le=100_000_000)] | None = None
    tools: Annotated[list[Any], UnicodeTree] | None = Field(
        None, description="Needs a model with tool calling.")
    response_format: Annotated[dict[str, Any], UnicodeTree] | None = Field(
        None, description="JSON mode (`json_object` or `json_schema`) needs `json`.")
    reasoning_effort: Tag | None = Field(
        None, description="A reasoning effort (`low`, `high`, ...) needs `reasoning`.")
    modalities: Annotated[list[Tag], Field(max_length=8)] | None = Field(
        None, description="Output modalities: `audio` among them needs `audio`.")


class Ranked(BaseModel):
    model: str
    probability: float


class RouteOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{
                "decision_id": "6f1c3e0b9a2d4c58b7e1f0a3c2d4e5f6", "model": "gpt-5-mini",
                "probability": 0.81, "policy_version": "local", "feature_version": "f1",
                "kind": "policy",
                "prompt_kind": "cluster=17", "prompt_kind_source": "cluster",
                "embedding": "ok",
                "ranking": [{"model": "gpt-5-mini", "probability": 0.81},
                            {"model": "gpt-5", "probability": 0.19}],
            }]
        }
    )

    decision_id: str
    model: str
    probability: float
    ranking: list[Ranked]
    policy_version: str
    feature_version: str
    kind: str
    prompt_kind: str | None = Field(
        None, description="The kind of prompt the policy pooled grades over (its finest).")
    prompt_kind_source: str = Field(
        "none", description="Where that kind came from: tag, template, cluster or none.")
    embedding: str = Field(
        "off", description="ok, off (no embedder), empty (a blank turn), or why it fell "
        "back: timeout, error, malformed (the decision then went on without clusters).")


@router.post("/v1/route", response_model=None,
             responses={200: {"model": RouteOut}, 422: INVALID},
             openapi_extra=openapi_body(RouteIn))
async def route(request: Request) -> Response:
    """Choose a model for a prompt and log the decision."""
    # The hottest path, so no FastAPI dependency or declared body (~10 us each per
    # request): the key is checked first (401 before any body error), then the body is
    # validated in one step by pydantic's JSON parser (routes/body.py).
    principal = await authenticate(request)
    body = await parse(request, RouteIn)
    service: RouterService = request.app.state.service
    meta = body.metadata.model_dump(exclude_none=True) if body.metadata else {}
    tenant = principal.tenant
    check_tenant(body.metadata, tenant, "metadata")
    weights = body.weights.model_dump(exclude_none=True) if body.weights else None
    decision_id, d = await service.route(
        RouteRequest(
            messages=body.messages, prompt=body.prompt, max_tokens=body.max_tokens,
            tools=body.tools, response_format=body.response_format, metadata=meta,
            profile=body.profile, weights=weights,
            allow=None if body.models is None else tuple(body.models), tenant=tenant,
            reasoning_effort=body.reasoning_effort, modalities=body.modalities,
        )
    )
    # The hot path: encoded directly (RouteOut documents it; a test pins the two together).
    return Response(orjson.dumps({
        "decision_id": decision_id, "model": d.model, "probability": d.probability,
        "ranking": [{"model": m, "probability": p} for m, p in d.ranking],
        "policy_version": d.policy_version, "feature_version": d.feature_version,
        "kind": "policy", **meaning(d),
    }), media_type="application/json")
