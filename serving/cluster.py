"""Several serving processes, one learner (``ROUTEBANDIT_CLUSTER_*``; docs/deploy.md).

With ``ROUTEBANDIT_CLUSTER_ENABLED=1`` every process sharing the PostgreSQL database
serves routes, chat and feedback for any decision, and runs a
:class:`~feedback.election.ClusterLearner`: one process, elected by an advisory lock,
learns every feedback and publishes checkpoints; the others serve the newest checkpoint
and stand by to take over. :class:`Coordinator` ticks the election every ``poll_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from feedback.election import AdvisoryLock, ClusterLearner
from feedback.learner import Learner
from feedback.store import Store
from serving.settings import Settings, SettingsError
from serving.tasks import cancel

log = logging.getLogger("routebandit.cluster")


class ClusterSettings(BaseSettings):
    """Whether this process is one of several sharing a PostgreSQL database."""

    model_config = SettingsConfigDict(env_prefix="ROUTEBANDIT_CLUSTER_", extra="forbid",
                                      frozen=True)

    enabled: bool = Field(default=False, description="Elect one learner through PostgreSQL.")
    poll_s: float = Field(
        default=1.0, gt=0, le=60,
        description="Election, learning and new-checkpoint poll interval.")
    lookup_grace_s: float = Field(
        default=1.5, ge=0, le=10,
        description="Feedback for a decision another process has not written yet waits "
        "this long for it (decisions are written within flush_interval_ms).")
    lock_name: str = Field(default="routebandit-learner", min_length=1)


def make_learner(settings: Settings, store: Store, cluster: ClusterSettings) -> Learner:
    """The plain learner, or the elected one when clustering is on (PostgreSQL only)."""
    kwargs: dict[str, Any] = {"checkpoint_every": settings.checkpoint_every,
                              "checkpoint_interval_s": settings.checkpoint_interval_s,
                              "learn_forced": settings.learn_forced}
    if not cluster.enabled:
        return Learner(store, **kwargs)
    if store.dialect != "postgresql":
        raise SettingsError("setting 'cluster_enabled' (ROUTEBANDIT_CLUSTER_ENABLED): several "
                            "processes need a shared PostgreSQL database_url, not "
                            f"{store.dialect}")
    return ClusterLearner(store, AdvisoryLock(store.url, cluster.lock_name), **kwargs)


class Coordinator:
    """Ticks a :class:`ClusterLearner` and swaps the service to each policy it hands back."""

    def __init__(self, service: Any, learner: ClusterLearner, *, poll_s: float) -> None:
        self.service = service
        self.learner = learner
        self.poll_s = poll_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.tick()  # the first process up becomes the learner before serving
        self._task = asyncio.create_task(self._loop(), name="routebandit-cluster")

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None
        await asyncio.to_thread(self.learner.close)

    async def tick(self) -> None:
        policy = await asyncio.to_thread(self.learner.tick)
        if policy is not None:
            await self.service.swap_policy(policy)
            log.info("serving policy %s (%d learned) as %s", policy.version,
                     policy.n_learned, self.learner.role)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.tick()
            except Exception:  # the database may be down: reported, retried next tick
                log.exception("cluster: tick failed")


async def start_cluster(app: Any, service: Any, cluster: ClusterSettings,
                        stack: contextlib.AsyncExitStack) -> None:
    """Start the coordinator when the service runs a :class:`ClusterLearner`."""
    learner = service.learner
    if not isinstance(learner, ClusterLearner):
        return
    service.lookup_grace_s = cluster.lookup_grace_s
    coordinator = Coordinator(service, learner, poll_s=cluster.poll_s)
    # Registered before the caller's later callbacks: it stops (and releases the lock)
    # after the service's final checkpoint, which the lock fences.
    await coordinator.start()
    stack.push_async_callback(coordinator.stop)
    app.state.cluster = coordinator


__all__ = ["ClusterSettings", "Coordinator", "make_learner", "start_cluster"]
