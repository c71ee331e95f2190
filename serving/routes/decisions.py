"""``GET /v1/decisions/{id}``: a decision with its outcome and feedback (audit)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from serving.auth import Principal, authenticate
from serving.dependencies import service_of
from serving.service import RouterService, meaning

router = APIRouter(tags=["audit"])


@router.get(
    "/v1/decisions/{decision_id}",
    responses={404: {"description": "No such decision for this tenant."}},
)
async def get_decision(
    decision_id: str,
    principal: Annotated[Principal, Depends(authenticate)],
    service: Annotated[RouterService, Depends(service_of)],
) -> dict[str, Any]:
    """A decision with its outcome and feedback."""
    rec = await service.get_decision(decision_id, principal.tenant)
    d = rec.decision
    return {
        "decision_id": rec.decision_id,
        "created_at": rec.created_at.isoformat(),
        "tenant": rec.tenant,
        "user_key": rec.user_key,
        "task": rec.task,
        "kind": rec.kind,
        **meaning(d),
        "model": d.model,
        "probability": d.probability,
        "pmf": [{"model": m, "probability": p} for m, p in d.pmf],
        "policy_version": d.policy_version,
        "feature_version": d.feature_version,
        "weights": d.weights.to_dict(),
        "context": d.context.to_dict(),
        "expected": {a.model: {"cost_usd": a.expected_cost_usd,
                               "latency_ms": a.expected_latency_ms} for a in d.actions},
        "prompt_text": rec.prompt_text,
        "outcome": None if rec.outcome is None else rec.outcome.to_dict(),
        "feedback": None if rec.feedback is None else rec.feedback.to_dict(),
    }
