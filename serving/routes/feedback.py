"""``POST /v1/feedback``: score a decision; the reward is committed, then learned."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from serving.auth import authenticate
from serving.requests import Tag
from serving.routes.body import INVALID, DirectRoute, openapi_body, parse
from serving.service import RouterService

router = APIRouter(tags=["feedback"], route_class=DirectRoute)

# Bounded so that every reward stays a finite number: a million dollars, 11.6 days.
Cost = Annotated[float, Field(strict=True, ge=0, le=1e6, allow_inf_nan=False)]
Latency = Annotated[float, Field(strict=True, ge=0, le=1e9, allow_inf_nan=False)]
Tokens = Annotated[int, Field(strict=True, ge=0, le=100_000_000)]


class FeedbackIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"decision_id": "6f1c3e0b9a2d4c58b7e1f0a3c2d4e5f6", "score": 0.9},
                {"decision_id": "6f1c3e0b9a2d4c58b7e1f0a3c2d4e5f6", "score": 0.4,
                 "latency_ms": 1830, "input_tokens": 412, "output_tokens": 958,
                 "source": "thumbs"},
            ]
        },
    )

    decision_id: Annotated[Tag, Field(min_length=1)]
    score: Annotated[float, Field(strict=True, ge=0, le=1, allow_inf_nan=False)] = Field(
        description="Quality of the answer in [0, 1]."
    )
    latency_ms: Latency | None = None
    input_tokens: Tokens | None = None
    output_tokens: Tokens | None = None
    cost_usd: Cost | None = Field(
        None, description="Cost of the call; computed from the catalog when tokens are given."
    )
    source: Tag | None = Field(
        None, description="Who scored it, e.g. `user`, `judge`."
    )


class FeedbackOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{
                "decision_id": "6f1c3e0b9a2d4c58b7e1f0a3c2d4e5f6", "reward": 0.8712,
                "score": 0.9, "cost_usd": 0.00144, "latency_ms": 900.0, "duplicate": False,
                "feedback_seq": 42,
            }]
        }
    )

    decision_id: str
    reward: float
    score: float
    cost_usd: float = Field(description="Cost used in the reward (measured or estimated).")
    latency_ms: float = Field(description="Latency used in the reward.")
    duplicate: bool = Field(description="True when this exact feedback was already stored.")
    feedback_seq: int


@router.post("/v1/feedback", response_model=None,
             responses={200: {"model": FeedbackOut}, 422: INVALID},
             openapi_extra=openapi_body(FeedbackIn))
async def feedback(request: Request) -> Response:
    """Score a decision; returns the reward it produced (idempotent)."""
    # As in routes/route.py: the key first, then the body validated by pydantic's JSON
    # parser, the service straight from the app and the answer encoded directly
    # (FeedbackOut documents it, a test pins the two together).
    principal = await authenticate(request)
    body = await parse(request, FeedbackIn)
    service: RouterService = request.app.state.service
    result = await service.feedback(
        decision_id=body.decision_id, tenant=principal.tenant, score=body.score,
        latency_ms=body.latency_ms, input_tokens=body.input_tokens,
        output_tokens=body.output_tokens, cost_usd=body.cost_usd, source=body.source,
    )
    rec = result.record
    return Response(orjson.dumps({
        "decision_id": rec.decision_id, "reward": float(rec.reward), "score": float(rec.score),
        "cost_usd": float(rec.reward_cost_usd), "latency_ms": float(rec.reward_latency_ms),
        "duplicate": result.duplicate, "feedback_seq": rec.seq,
    }), media_type="application/json")
