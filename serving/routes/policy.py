"""``/v1/policy``: the live policy's state and an on-demand checkpoint (admin)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict

from serving.auth import Principal, require_admin
from serving.dependencies import service_of
from serving.requests import ModelName
from serving.service import RouterService

router = APIRouter(tags=["policy"])


def _state(service: RouterService) -> dict[str, Any]:
    policy, cp = service.policy, service.learner.last_checkpoint
    return {
        "version": policy.version,
        "parent_version": policy.parent_version,
        "feature_version": policy.feature_version,
        "n_learned": policy.n_learned,
        "learn_backlog": service.learn_backlog,
        "uncheckpointed": service.learner.pending,
        # "learner" unless several processes share the database and another one learns
        "role": getattr(service.learner, "role", "learner"),
        "models": list(policy.catalog.names),
        # The newest changes of models it went through (docs/policy.md, "Adapting to
        # change"), oldest first, and each model's count since the policy began.
        "changes": [e.to_dict() for e in policy.changes[-20:]],
        "change_counts": policy.changes_detected(),
        "last_checkpoint": None if cp is None else {
            "id": cp.id, "created_at": cp.created_at.isoformat(), "reason": cp.reason,
            "n_learned": cp.n_learned, "last_feedback_seq": cp.last_feedback_seq,
        },
    }


@router.get("/v1/policy")
async def get_policy(
    _: Annotated[Principal, Depends(require_admin)],
    service: Annotated[RouterService, Depends(service_of)],
) -> dict[str, Any]:
    """The live policy: version, steps learned, last checkpoint (admin)."""
    return _state(service)


@router.post("/v1/policy/checkpoint")
async def checkpoint(
    _: Annotated[Principal, Depends(require_admin)],
    service: Annotated[RouterService, Depends(service_of)],
) -> dict[str, Any]:
    """Checkpoint the live policy now (admin)."""
    await service.checkpoint()
    return _state(service)


class ResetModel(BaseModel):
    """A model declared changed, and what to forget of it."""

    model_config = ConfigDict(extra="forbid")
    model: ModelName
    # Also its measured cost, latency and answer length (learned again from the
    # catalog's prices and the next calls).
    estimates: bool = True


@router.post("/v1/policy/reset-model")
async def reset_model(
    body: ResetModel,
    _: Annotated[Principal, Depends(require_admin)],
    service: Annotated[RouterService, Depends(service_of)],
) -> dict[str, Any]:
    """Declare a model changed: forget what was learned of it, keep the others' (admin)."""
    event = await service.reset_model(body.model, estimates=body.estimates)
    return {"change": event.to_dict(), "policy": _state(service)}
