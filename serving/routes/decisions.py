"""``GET /v1/decisions/{id}``: a decision with its outcome and feedback (audit)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from feedback.records import DecisionRecord
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
        # Every feedback the decision has (posted, the judge's, implicit signals'), and
        # the one the router learns from (docs/judge.md).
        "feedbacks": _feedbacks(rec),
        "learned_from": _learned_from(rec),
    }


def _feedbacks(rec: DecisionRecord) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    fb = rec.feedback
    if fb is not None and fb.grade_id is None:  # posted (a promoted grade is listed below)
        out.append({"source": fb.source or "client", "kind": "posted", "score": fb.score,
                    "created_at": fb.created_at.isoformat(), "status": "learned",
                    "learned": True})
    for g in rec.grades:
        learned = fb is not None and fb.grade_id == g.id
        out.append({**g.to_dict(), "kind": "grade", "learned": learned})
    return out


def _learned_from(rec: DecisionRecord) -> dict[str, Any] | None:
    fb = rec.feedback
    if fb is None:
        return None
    return {"source": fb.source or "client", "feedback_seq": fb.seq, "grade_id": fb.grade_id,
            "score": fb.score, "reward": fb.reward, "in_checkpoint": rec.learned,
            "corrected": rec.corrected}
