"""The FastAPI application factory.

``create_app(settings)`` builds the app; its lifespan owns the store (engine), the
policy, the group-commit writer, the background learner and, when the gateway is
installed, the gateway (whose router lifespan builds it on ``app.state.service``).
Nothing happens at import time.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from bandit.catalog import Catalog, example_catalog_path
from bandit.errors import CatalogError, PolicyError
from bandit.policy import Policy, PolicyConfig
from feedback.store import Store
from feedback.wal import WAL_BACKSTOP_PAGES, WalCheckpointer
from serving import errors
from serving.auth import KeyRing
from serving.browsers import BrowserGuard
from serving.budget import start_budgets
from serving.cluster import ClusterSettings, make_learner, start_cluster
from serving.dashboard import install as install_dashboard
from serving.egress import EgressPolicy, Resolver
from serving.embedder import make_embedder
from serving.feature_key import check_feature_key, load_feature_key
from serving.grading import Grading
from serving.lane import DirectLane, lane_routes
from serving.limits import BodyLimit
from serving.metrics import Metrics
from serving.ratelimit import LimitSettings, RateLimit, counters_for
from serving.routes import body, decisions, feedback, health, models, policy, route, stats
from serving.service import RouterService
from serving.settings import Settings, SettingsError

log = logging.getLogger("routebandit")
SNAPSHOT_FLOOR_S = 60.0

DESCRIPTION = """\
routebandit routes each prompt to the LLM a contextual bandit expects to do best under
your reward weights (quality, cost, latency), and learns from the feedback you post.

Call `POST /v1/route`, use the model it returns, then `POST /v1/feedback` with the
`decision_id` and a score in [0, 1]. See docs/service.md.
"""


@dataclass(frozen=True)
class Preflight:
    """What start-up established before serving."""

    catalog: Catalog
    store: Store
    dev_mode: bool
    egress: EgressPolicy
    feature_key: bytes  # the secret words are hashed with (serving/feature_key.py)


def preflight(settings: Settings, *, resolver: Resolver | None = None) -> Preflight:
    """Validate everything the service needs; raise an error naming the bad setting.

    ``resolver`` resolves upstream host names for the egress policy (tests inject one).
    """
    try:
        catalog = Catalog.load(settings.catalog or example_catalog_path())
    except CatalogError as exc:
        raise SettingsError(f"setting 'catalog' (--catalog / ROUTEBANDIT_CATALOG): {exc}") from exc
    if settings.policy is not None and not settings.policy.expanduser().is_file():
        raise SettingsError(f"setting 'policy' ({settings.policy}): no such file")
    if settings.database_url is None:
        data_dir = settings.resolved_data_dir
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SettingsError(f"setting 'data_dir' ({data_dir}): {exc.strerror}") from exc
        if not os.access(data_dir, os.W_OK):
            raise SettingsError(f"setting 'data_dir' ({data_dir}): not writable")
    # On SQLite the service checkpoints the WAL from a thread (_start_wal_checkpoints);
    # SQLite's automatic checkpoint stays armed far above it, as a backstop. The CLI's
    # stores keep SQLite's default.
    background = settings.wal_checkpoint_interval_s > 0
    store = Store(settings.resolved_database_url,
                  wal_autocheckpoint=WAL_BACKSTOP_PAGES if background else None)
    dev_mode = store.count_api_keys() == 0
    if dev_mode and not settings.loopback:
        store.close()
        raise SettingsError(
            f"setting 'host' ({settings.host}): no API keys exist, so routebandit would run "
            "in development mode, which only binds to 127.0.0.1. Create a key with "
            "`routebandit keys create --tenant NAME` or use --host 127.0.0.1"
        )
    try:
        egress = _checked_egress(settings, catalog, dev_mode=dev_mode, resolver=resolver)
    except SettingsError:
        store.close()
        raise
    try:
        feature_key = load_feature_key(settings)
        check_feature_key(store, feature_key)  # the key every process sharing it uses
    except Exception:
        store.close()
        raise
    return Preflight(catalog=catalog, store=store, dev_mode=dev_mode, egress=egress,
                     feature_key=feature_key)


def _checked_egress(settings: Settings, catalog: Catalog, *, dev_mode: bool,
                    resolver: Resolver | None) -> EgressPolicy:
    """The upstream egress policy (serving/egress.py), the file catalog checked by it."""
    from serving.gateway_settings import egress_policy

    egress = egress_policy(settings.gateway, development=dev_mode,
                           database_url=settings.resolved_database_url, resolver=resolver)
    for i, spec in enumerate(catalog):
        try:
            egress.check_model(spec, f"models[{i}]", env=os.environ)
        except CatalogError as exc:
            raise SettingsError(f"setting 'catalog' (--catalog / ROUTEBANDIT_CATALOG): "
                                f"model {spec.name!r}: {exc}") from exc
    return egress


def _policy_factory(settings: Settings, catalog: Catalog) -> Policy:
    if settings.policy is not None:
        blob = settings.policy.expanduser().read_bytes()
        try:
            return Policy.from_bytes(blob)
        except PolicyError as exc:
            raise SettingsError(f"setting 'policy' ({settings.policy}): {exc}") from exc
    return Policy(
        catalog,
        config=PolicyConfig(exploration=settings.exploration),
        weights=settings.weights_for(None),
        seed=settings.seed,
    )


def create_app(settings: Settings, *, resolver: Resolver | None = None) -> FastAPI:
    """Build the service for ``settings`` (validated by ``load_settings``); ``resolver``
    resolves upstream host names for the egress policy (default: the system's)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pre = await asyncio.to_thread(preflight, settings, resolver=resolver)
        cluster = ClusterSettings()
        if pre.dev_mode:
            log.warning(
                "DEVELOPMENT MODE: no API keys exist, every request acts as an admin of "
                "every tenant; bound to %s only. Create keys with `routebandit keys create`.",
                settings.host,
            )
        service = RouterService(
            store=pre.store,
            catalog=pre.catalog,
            profiles={n: w.reward_weights() for n, w in settings.profiles.items()},
            default_profile=settings.default_profile,
            learner=make_learner(settings, pre.store, cluster),
            metrics=Metrics(),
            store_prompts=settings.store_prompts,
            feature_key=pre.feature_key,
            max_prompt_chars=settings.max_prompt_chars,
            flush_interval_s=settings.flush_interval_ms / 1000.0,
            decision_cache_size=settings.decision_cache_size,
            commit_timeout_s=settings.commit_timeout_s,
            shutdown_timeout_s=settings.shutdown_timeout_s,
            # Loads wordllama (embedder: local) or vets the endpoint (openai), or raises
            # EmbedderError naming the setting: start-up fails.
            embedder=await asyncio.to_thread(make_embedder, settings, egress=pre.egress),
        )
        app.state.settings = settings
        app.state.service = service
        app.state.keyring = KeyRing(pre.store, dev_mode=pre.dev_mode)
        app.state.egress = pre.egress  # the gateway's upstream calls use it too
        service.vet_model = functools.partial(pre.egress.check_model, env=os.environ)
        async with AsyncExitStack() as stack:
            stack.callback(pre.store.close)
            if service.embedder is not None:
                stack.push_async_callback(service.embedder.aclose)
            # Before service.start: stops after service.stop, with the writer's last batch.
            _start_wal_checkpoints(app, settings, service, pre.store, stack)
            await service.start(lambda: _policy_factory(settings, pre.catalog))
            await start_cluster(app, service, cluster, stack)  # stops after service.stop
            coordinator = getattr(app.state, "cluster", None)
            if coordinator is not None:  # only the leader grows the tree of meaning
                service.may_grow_clusters = lambda: bool(coordinator.learner.leader)
            stack.push_async_callback(service.stop)
            # Stops before service.stop: the last grades still reach the writer.
            await _start_grading(settings, service, stack)
            await start_budgets(service, pre.store, stack)
            await _start_versions(app, settings, service, pre.store, stack)
            _start_stats(settings, service, pre.store, stack)
            log.info("routebandit serving %d models, policy %s (%d learned), database %s",
                     len(service.catalog), service.policy.version, service.policy.n_learned,
                     pre.store.engine.url.render_as_string(hide_password=True))
            yield

    app = FastAPI(
        title="routebandit",
        summary="Adaptive LLM router: a contextual bandit picks the model for each prompt.",
        description=DESCRIPTION,
        version=_version(),
        lifespan=lifespan,
        docs_url=None,  # served from the package's own assets (install_dashboard)
        redoc_url=None,
        **fastapi_telemetry(settings.otel),
    )
    errors.install(app)
    # Innermost (added first): the limits below apply to the lane's requests too.
    app.add_middleware(DirectLane, routes=lane_routes(route.router, feedback.router))
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    limits = LimitSettings()
    if limits.enabled:  # counters in Redis, the shared PostgreSQL or memory (docs/deploy.md)
        app.add_middleware(RateLimit, settings=limits,
                           counters=lambda: counters_for(limits, app.state.service.store))
    # Outermost: no web page drives the service, development mode answers only this host.
    app.add_middleware(BrowserGuard, dev_mode=lambda: _dev_mode(app))
    for module in (route, feedback, decisions, models, policy, health, stats):
        for r in module.router.routes:  # a route's one-line docstring is its summary
            if isinstance(r, APIRoute) and r.summary is None and r.description:
                r.summary = r.description.strip().splitlines()[0]
        app.include_router(module.router)
    body.document(app, (route.RouteIn, feedback.FeedbackIn))  # validated by the routes
    install_dashboard(app)  # /dashboard, /docs and /redoc, with their assets
    _include_gateway_routes(app)
    return app


async def _start_grading(settings: Settings, service: RouterService,
                         stack: AsyncExitStack) -> None:
    """The judge and the implicit signals (serving/grading.py, docs/judge.md)."""
    grading = Grading(service, settings)
    await grading.start()
    service.grading = grading
    stack.push_async_callback(grading.stop)


def _dev_mode(app: FastAPI) -> bool:
    ring = getattr(app.state, "keyring", None)
    return ring is not None and bool(ring.dev_mode)


def _start_wal_checkpoints(app: FastAPI, settings: Settings, service: RouterService,
                           store: Store, stack: AsyncExitStack) -> None:
    """SQLite: checkpoint the WAL from a thread; a TRUNCATE one once the writer stopped."""
    if settings.wal_checkpoint_interval_s <= 0 or store.wal_path is None:
        return
    counter = service.metrics.wal_checkpoints
    checkpointer = WalCheckpointer(
        store, interval_s=settings.wal_checkpoint_interval_s,
        on_checkpoint=lambda mode, result, _seconds: counter.labels(mode, result).inc(),
    )
    checkpointer.start()
    stack.push_async_callback(asyncio.to_thread, checkpointer.stop)
    app.state.wal_checkpointer = checkpointer


def _start_stats(settings: Settings, service: RouterService, store: Store,
                 stack: AsyncExitStack) -> None:
    """Keep the dashboard's roll-ups fresh from a thread (feedback/stats/rollup.py)."""
    if settings.stats_refresh_s <= 0:
        return
    from feedback.stats import Refresher, Rollup

    refresher = Refresher(Rollup(store.engine), interval_s=settings.stats_refresh_s,
                          on_refresh=lambda r: service.metrics.observe_refresh(
                              r.seconds, hours=r.hours, skipped=r.skipped))
    refresher.start()
    stack.push_async_callback(asyncio.to_thread, refresher.stop)


async def _start_versions(app: FastAPI, settings: Settings, service: RouterService,
                          store: Store, stack: AsyncExitStack) -> None:
    """Serve the MLflow champion, follow promotions and snapshot (docs/mlflow.md)."""
    if not settings.policy_versions:
        return
    from feedback.tracking import Tracker, resolve_tracking_uri
    from feedback.versions import Split
    from serving.versioning import VersionManager

    uri = resolve_tracking_uri(settings.tracking_uri, data_dir=settings.resolved_data_dir)
    cluster = getattr(app.state, "cluster", None)
    manager = VersionManager(
        service, Tracker(uri), store=store, poll_interval_s=settings.versions_poll_s,
        snapshot_every=settings.snapshot_every, snapshot_interval_s=settings.snapshot_interval_s,
        # At most one snapshot a minute however fast feedback arrives (each costs a
        # second or more of CPU in this process), unless snapshot_interval_s asks for more.
        snapshot_min_interval_s=min(SNAPSHOT_FLOOR_S, settings.snapshot_interval_s),
        split=Split(settings.split_mode, settings.split_percent),
        may_snapshot=(lambda: True) if cluster is None else (lambda: cluster.learner.leader),
    )
    await manager.start()
    stack.push_async_callback(manager.stop)
    app.state.versions = manager


def prepare_tracking(settings: Settings) -> None:
    """Create the MLflow tracking store now if it is missing (``routebandit serve``).

    Otherwise the first snapshot creates it, under load: MLflow's migrations take seconds
    and compete with requests for the GIL. A store that cannot be reached is logged; the
    service starts anyway and retries at every poll.
    """
    if not settings.policy_versions:
        return
    from feedback.tracking import Tracker, resolve_tracking_uri

    uri = resolve_tracking_uri(settings.tracking_uri, data_dir=settings.resolved_data_dir)
    try:
        Tracker(uri).prepare(create=True)
    except Exception as exc:  # e.g. a tracking server that is down: serve without it
        log.warning("policy versions: cannot prepare the tracking store %s: %s", uri, exc)


def _include_gateway_routes(app: FastAPI) -> None:
    # The gateway authenticates itself (errors in OpenAI's format) and its router's
    # lifespan builds the Gateway on app.state.service.
    try:
        from serving.routes import chat, messages, responses
    except ImportError:  # the gateway is optional
        return
    app.include_router(chat.router)
    app.include_router(responses.router)  # other doors to the same gateway
    app.include_router(messages.router)


# OpenTelemetry's own placeholders: what its get_*_provider() return until one is set.
_PLACEHOLDER_PROVIDERS = frozenset({
    ("opentelemetry.trace", "ProxyTracerProvider"),
    ("opentelemetry.metrics._internal", "_ProxyMeterProvider"),
    ("opentelemetry._logs._internal", "ProxyLoggerProvider"),
})


def otel_configured() -> bool:
    """Whether OpenTelemetry is set up in this process, or asked for in its environment.

    A provider set already (``opentelemetry-instrument`` does so before the app is
    imported), FastAPI's ``FASTAPI_OTEL_AUTO_CONFIGURE=true``, or any ``OTEL_*``
    variable (exporter endpoints, service name, provider classes).
    """
    if any(name.startswith("OTEL_") for name in os.environ):
        return True
    if os.environ.get("FASTAPI_OTEL_AUTO_CONFIGURE", "").lower() == "true":
        return True
    try:
        from opentelemetry import _logs, metrics, trace
    except ImportError:
        return False
    providers = (trace.get_tracer_provider(), metrics.get_meter_provider(),
                 _logs.get_logger_provider())
    return any((type(p).__module__, type(p).__name__) not in _PLACEHOLDER_PROVIDERS
               for p in providers)


def fastapi_telemetry(mode: str) -> dict[str, Any]:
    """``FastAPI(...)`` arguments for its native OpenTelemetry (setting ``otel``).

    FastAPI (0.142 and later) asks OpenTelemetry at every request whether a provider
    is configured: three environment lookups, ~11 us of the ~400 us a ``/v1/route``
    costs in a loaded server. ``auto`` decides once, at start-up, and switches it off
    when nothing is configured; ``on`` keeps FastAPI's per-request check (for a
    provider set after the app is built), ``off`` switches it off.
    """
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}  # an older FastAPI: no native telemetry
    if mode == "on" or (mode == "auto" and otel_configured()):
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("routebandit")
    except PackageNotFoundError:
        return "0.0.0"


__all__ = ["Preflight", "create_app", "fastapi_telemetry", "otel_configured", "preflight",
           "prepare_tracking"]
