"""``/healthz`` (alive), ``/readyz`` (can serve) and ``/metrics`` (Prometheus)."""

from __future__ import annotations

import asyncio
import os
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from feedback.errors import StoreError
from serving.dependencies import service_of
from serving.metrics import CONTENT_TYPE_LATEST
from serving.service import RouterService

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, Any]:
    """The process is alive; ``pid`` says which one answered (several share a host)."""
    return {"status": "ok", "pid": os.getpid()}


@router.get("/readyz", responses={503: {"description": "Not ready."}})
async def readyz(
    request: Request, service: Annotated[RouterService, Depends(service_of)]
) -> JSONResponse:
    """The service can route and take feedback (database reachable, learner running)."""
    checks: dict[str, Any] = {"policy": service.has_policy,
                              "writer": service.writer.running, "learner": service.ready}
    try:
        await asyncio.to_thread(service.store.ping)
        checks["database"] = True
    except StoreError:
        checks["database"] = False
    ok = all(checks.values())
    body = {"status": "ready" if ok else "not ready", "checks": checks,
            "policy_version": service.policy.version if checks["policy"] else None,
            "development_mode": request.app.state.keyring.dev_mode}
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/metrics")
async def metrics(request: Request,
                  service: Annotated[RouterService, Depends(service_of)]) -> Response:
    """Prometheus metrics."""
    service.metrics.learn_backlog.set(service.learn_backlog)
    breaker = getattr(getattr(request.app.state, "gateway", None), "cooldown", None)
    if breaker is not None:  # the gateway's circuit breakers, as they stand now
        for model in service.catalog.names:
            service.metrics.cooldown.labels(model).set(
                0 if breaker.state(model) == "closed" else 1)
    return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)
