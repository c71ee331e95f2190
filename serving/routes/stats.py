"""``GET /v1/stats/...``: what the router knows, summed over a time range (the dashboard's
data). Every answer is tenant scoped: an admin key (or development mode) sees every
tenant and may pick one with ``tenant``; a tenant key sees its own tenant only."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query, Request

from bandit.errors import RequestError, RouteBanditError
from feedback.stats import Reference, Stats, Window, window
from feedback.stats.figures import (
    Cooldown,
    Errors,
    Exploration,
    Feedback,
    Kinds,
    Latency,
    Learner,
    RegisteredVersion,
    Spend,
    Traffic,
    Versions,
    registered_version,
)
from serving.auth import Principal, authenticate
from serving.dependencies import service_of
from serving.errors import ForbiddenError
from serving.routes.body import INVALID
from serving.service import RouterService

router = APIRouter(prefix="/v1/stats", tags=["stats"])
T = TypeVar("T")
REGISTRY_TTL_S = 30.0
REGISTRY_LIMIT = 200

_RESPONSES: dict[int | str, dict[str, Any]] = {
    422: INVALID, 403: {"description": "A tenant key asked for another tenant."}}

Since = Annotated[str | None, Query(
    description="Start: ISO 8601 (UTC if no zone) or an age like `24h`, `7d`; default 24 "
    "hours before `until`. Moved back to the start of its bucket.",
    examples=["24h", "2026-01-31T00:00Z"])]
Until = Annotated[str | None, Query(
    description="End (exclusive): ISO 8601, an age, or `now` (the default).")]
Bucket = Annotated[str | None, Query(
    description="Bucket size: `auto` (the default: at most 100 buckets), or `1m` to `30m` "
    "dividing an hour (ranges up to 6h), or whole hours or days (`1h`, `6h`, `1d`).",
    examples=["auto", "5m", "1h", "1d"])]
Tenant = Annotated[str | None, Query(
    max_length=64, description="Only this tenant (admin keys; a tenant key sees its own).")]


@dataclass(frozen=True)
class Asked:
    """The window and tenant a request asks about, checked and scoped to its key."""

    window: Window
    tenant: str | None


def scope(principal: Principal, tenant: str | None) -> str | None:
    """The tenant an answer covers: any (or all) for an admin, its own for a tenant key."""
    if principal.admin:
        return tenant
    if tenant is not None and tenant != principal.tenant:
        raise ForbiddenError("tenant: a tenant key sees its own tenant only")
    return principal.tenant


async def asked(principal: Annotated[Principal, Depends(authenticate)],
                since: Since = None, until: Until = None, bucket: Bucket = None,
                tenant: Tenant = None) -> Asked:
    """Dependency: the checked window and the tenant the caller may see."""
    scoped = scope(principal, tenant)
    now = datetime.now(timezone.utc)
    return Asked(window(since=since, until=until, bucket=bucket, now=now), scoped)


def stats_of(request: Request) -> Stats:
    """The app's :class:`Stats` (one per app, over the service's store)."""
    stats: Stats | None = getattr(request.app.state, "stats", None)
    if stats is None:
        stats = request.app.state.stats = Stats(request.app.state.service.store.engine)
    return stats


async def _run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.to_thread(fn, *args, **kwargs)


AskedDep = Annotated[Asked, Depends(asked)]
StatsDep = Annotated[Stats, Depends(stats_of)]


@router.get("/scope", responses={401: {"description": "A key that is not valid."}})
async def get_scope(
    request: Request,
    service: Annotated[RouterService, Depends(service_of)],
    stats: StatsDep,
) -> dict[str, Any]:
    """Who the key is, the tenants it may see and the models (for the page's pickers);
    without a key, whether one is needed (``signed_in`` false)."""
    if not request.headers.get("authorization") and not request.app.state.keyring.dev_mode:
        return {"signed_in": False, "development_mode": False}  # a page asking first
    principal = await authenticate(request)
    tenants = await _run(stats.tenants) if principal.admin else [principal.tenant]
    return {
        "signed_in": True, "admin": principal.admin, "development_mode": principal.dev,
        "tenant": principal.tenant, "tenants": tenants,
        "models": [{"name": s.name, "input_price": s.input_price,
                    "output_price": s.output_price} for s in service.catalog],
        "default_reference": _default_reference(service),
        "policy_version": service.policy.version,
    }


@router.get("/traffic", responses=_RESPONSES)
async def traffic(a: AskedDep, stats: StatsDep) -> Traffic:
    """Decisions per model and bucket (the traffic share), and per decision kind."""
    return await _run(stats.traffic, a.window, tenant=a.tenant)


@router.get("/kinds", responses=_RESPONSES)
async def kinds(a: AskedDep, stats: StatsDep,
                limit: Annotated[int, Query(ge=1, le=100, description="Kinds shown.")] = 10,
                ) -> Kinds:
    """The most frequent kinds of prompt (task tags) with the models the policy chose."""
    return await _run(stats.kinds, a.window, tenant=a.tenant, limit=limit)


@router.get("/feedback", responses=_RESPONSES)
async def feedback(a: AskedDep, stats: StatsDep) -> Feedback:
    """Feedback coverage (decisions with a score) and mean score per model."""
    return await _run(stats.feedback, a.window, tenant=a.tenant)


@router.get("/spend", responses=_RESPONSES)
async def spend(
    a: AskedDep, stats: StatsDep, service: Annotated[RouterService, Depends(service_of)],
    reference: Annotated[str | None, Query(
        max_length=128, description="Catalog model whose prices the counterfactual uses "
        "(default: the most expensive)")] = None,
) -> Spend:
    """Spend per model, and the saving against a reference model's prices."""
    name = reference or _default_reference(service)
    ref = None
    if name is not None:
        if name not in service.catalog:
            raise RequestError(f"reference: no model {name!r} in the catalog (models: "
                               f"{', '.join(service.catalog.names)})")
        spec = service.catalog.get(name)
        ref = Reference(spec.name, spec.input_price, spec.output_price)
    return await _run(stats.spend, a.window, tenant=a.tenant, reference=ref)


@router.get("/latency", responses=_RESPONSES)
async def latency(a: AskedDep, stats: StatsDep) -> Latency:
    """Latency p50/p95/p99 and time to first token per model."""
    return await _run(stats.latency, a.window, tenant=a.tenant)


@router.get("/errors", responses=_RESPONSES)
async def errors(request: Request, a: AskedDep, stats: StatsDep,
                 service: Annotated[RouterService, Depends(service_of)]) -> Errors:
    """Call outcomes by status, failovers, and the models cooling down now."""
    found = await _run(stats.errors, a.window, tenant=a.tenant)
    gateway = getattr(request.app.state, "gateway", None)
    breaker = getattr(gateway, "cooldown", None)
    if breaker is None:
        return found
    cooling = [Cooldown(model=m, state=breaker.state(m)) for m in service.catalog.names]
    return replace(found, cooldowns=[c for c in cooling if c.state != "closed"],
                   cooldowns_known=True)


@router.get("/exploration", responses=_RESPONSES)
async def exploration(a: AskedDep, stats: StatsDep) -> Exploration:
    """The share of exploratory choices and the distribution of logged propensities."""
    return await _run(stats.exploration, a.window, tenant=a.tenant)


@router.get("/versions", responses=_RESPONSES)
async def versions(request: Request, a: AskedDep, stats: StatsDep,
                   principal: Annotated[Principal, Depends(authenticate)],
                   service: Annotated[RouterService, Depends(service_of)]) -> Versions:
    """Policy versions: which served when, and MLflow's with their off-policy estimates."""
    used = await _run(stats.versions, a.window, tenant=a.tenant)
    registry, note = await _registry(request, a.window)
    if not principal.admin and registry:
        # The estimates are over every tenant's traffic: an admin's to read.
        registry = [replace(v, dr=None, dr_low=None, dr_high=None, logged=None, n=None,
                            n_learned=None) for v in registry]
        note = "off-policy estimates cover every tenant's traffic: admin keys see them"
    return replace(used, serving=service.policy.version, registry=registry,
                   registry_note=note)


@router.get("/learner", responses=_RESPONSES)
async def learner(request: Request, a: AskedDep, stats: StatsDep,
                  principal: Annotated[Principal, Depends(authenticate)],
                  service: Annotated[RouterService, Depends(service_of)]) -> Learner:
    """Decisions waiting for feedback, feedback not learned yet, the last update."""
    found = await _run(stats.learner, a.window, tenant=a.tenant)
    found = replace(found, policy_version=service.policy.version)
    if principal.admin:  # counts of the shared policy: every tenant's
        found = replace(found, n_learned=service.policy.n_learned,
                        queued=service.learn_backlog,
                        role=str(getattr(service.learner, "role", "learner")))
    return found


def _default_reference(service: RouterService) -> str | None:
    specs = list(service.catalog)
    if not specs:
        return None
    return max(specs, key=lambda s: (s.input_price + s.output_price, s.name)).name


async def _registry(request: Request, w: Window) -> tuple[list[RegisteredVersion], str]:
    """MLflow's versions created in the window, and those holding an alias (cached)."""
    manager = getattr(request.app.state, "versions", None)
    if manager is None:
        return [], "policy versions are off in this service (setting policy_versions)"
    tracker = manager.tracker
    cache: dict[str, Any] | None = getattr(request.app.state, "stats_registry", None)
    if cache is None:
        cache = request.app.state.stats_registry = {}
    if cache.get("until", 0.0) < time.monotonic():
        try:
            found = await asyncio.to_thread(_recent, tracker)
        except RouteBanditError as exc:  # TrackingError: the store is down
            return [], f"MLflow is unavailable: {exc}"
        cache.update(found=found, until=time.monotonic() + REGISTRY_TTL_S)
    found = cache["found"]
    lo, hi = w.since.timestamp() * 1000, w.until.timestamp() * 1000
    shown = [v for v in found if lo <= v.created_ms < hi or v.aliases]
    note = "" if found or tracker.exists() else "no policy version logged to MLflow yet"
    if len(found) >= REGISTRY_LIMIT:
        note = f"the newest {REGISTRY_LIMIT} versions are searched"
    return [registered_version(v) for v in shown], note


def _recent(tracker: Any) -> list[Any]:
    if not tracker.exists():
        return []
    return list(tracker.recent_versions(limit=REGISTRY_LIMIT))
