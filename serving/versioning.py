"""The running service and MLflow policy versions.

:class:`VersionManager` is started by the app's lifespan next to the
:class:`~serving.service.RouterService`. In the background it

* loads the ``champion`` at start-up (unless the live policy, resumed from a checkpoint,
  already descends from it) and swaps to a newly promoted or rolled-back version with
  ``RouterService.swap_policy``: a reference swap, so no request is dropped;
* keeps the ``challenger`` loaded for shadow and A/B modes (:attr:`arms`);
* snapshots the live policy every N learned feedbacks or T seconds, never more often
  than once a minute by default, and on shutdown; each snapshot is scored on the newest
  ``snapshot_window`` logged decisions (one query with a LIMIT).

Every MLflow call blocks, so each runs in a thread; a tracking store that is down is
logged and retried at the next poll, never raised into request handling. What a snapshot
imports (MLflow, pandas, matplotlib) is imported at start-up, with the store opened, so
that the first snapshot under load does not do it while holding the GIL.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Protocol

from bandit.errors import RouteBanditError
from bandit.policy import Policy
from feedback.versions import (
    CHALLENGER,
    CHAMPION,
    Arms,
    PolicySource,
    SnapshotSchedule,
    Snapshotter,
    Split,
    serving_version,
)
from serving.tasks import cancel

if TYPE_CHECKING:
    from feedback.tracking import Tracker

log = logging.getLogger("routebandit.versions")


class Service(Protocol):
    """What the manager needs of :class:`~serving.service.RouterService`."""

    @property
    def policy(self) -> Policy: ...

    async def swap_policy(self, policy: Policy) -> None: ...


class VersionManager:
    """Champion swaps, challenger arms and snapshots for one running service."""

    def __init__(
        self,
        service: Service,
        tracker: Tracker,
        *,
        store: Any = None,
        poll_interval_s: float = 10.0,
        snapshot_every: int = 1000,
        snapshot_interval_s: float = 900.0,
        snapshot_min_interval_s: float = 60.0,
        snapshot_window: int = 5000,
        split: Split | None = None,
        may_snapshot: Callable[[], bool] = lambda: True,
    ) -> None:
        self.service = service
        # In a cluster only the elected learner snapshots: the followers serve its
        # checkpoints, and a snapshot from each would log the same policy N times.
        self.may_snapshot = may_snapshot
        self.tracker = tracker
        self.store = store
        self.poll_interval_s = poll_interval_s
        self.snapshot_window = snapshot_window
        self.split = split or Split()
        self.champion_source = PolicySource(tracker, CHAMPION)
        self.challenger_source = PolicySource(tracker, CHALLENGER)
        self.challenger: Policy | None = None
        self.snapshots = Snapshotter(
            tracker,
            schedule=SnapshotSchedule(every_n=snapshot_every, every_s=snapshot_interval_s,
                                      min_s=snapshot_min_interval_s),
            examples=self._recent_examples,
            params=lambda: {"embedder": getattr(getattr(service, "embedder", None), "name",
                                                "none"), **_judged(service)[0]},
            metrics=lambda: _judged(service)[1],
        )
        self._since = datetime.now(timezone.utc)
        self._task: asyncio.Task[None] | None = None

    @property
    def arms(self) -> Arms:
        """Champion (the live policy) and challenger, routed by the split."""
        return Arms(self.service.policy, self.challenger, self.split)

    async def start(self) -> None:
        """Adopt the champion now, then poll in the background."""
        # MLflow draws a progress bar for every artifact download: not in a server log.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        live = self.service.policy
        self.champion_source.version = serving_version(live)
        self.snapshots.schedule.mark(live.n_learned)
        if self.split.mode != "off" and hasattr(self.service, "arms"):
            self.service.arms = lambda: self.arms  # RouterService.route asks per request
        try:
            if self.tracker.exists():  # never creates a store: `routebandit serve` does
                await asyncio.to_thread(self.tracker.prepare)
            await self.poll_once()
        except Exception:  # the router serves its checkpoint while tracking is down
            log.exception("policy versions: cannot reach the tracking store at start-up")
        self._task = asyncio.create_task(self._loop(), name="routebandit-versions")

    async def stop(self) -> None:
        """Stop polling and snapshot what was learned since the last snapshot."""
        await cancel(self._task)
        self._task = None
        if not self.tracker.exists() or not self.may_snapshot():
            return  # a shutdown alone creates no store; a follower never snapshots
        try:
            await asyncio.to_thread(self.snapshots.snapshot, self.service.policy,
                                    reason="shutdown")
        except RouteBanditError as exc:
            log.warning("shutdown snapshot failed: %s", exc)

    async def poll_once(self) -> None:
        """Swap to a moved champion, reload a moved challenger, snapshot if due."""
        try:
            if not self.tracker.exists():  # nothing promoted yet: keep serving, no store
                await self._maybe_snapshot()
                return
            new = await asyncio.to_thread(self.champion_source.poll)
            if new is not None:
                await self.service.swap_policy(new)
                self.snapshots.schedule.mark(new.n_learned)  # count from the new version
                log.info("serving policy %s (champion)", new.version)
            if self.split.mode != "off":
                challenger = await asyncio.to_thread(self.challenger_source.poll)
                if challenger is not None:
                    self.challenger = challenger
                    log.info("challenger %s (%s mode)", challenger.version, self.split.mode)
            await self._maybe_snapshot()
        except RouteBanditError as exc:
            log.warning("policy versions: %s (retrying in %.0f s)", exc, self.poll_interval_s)

    async def _maybe_snapshot(self) -> None:
        if not self.may_snapshot():
            return
        version = await asyncio.to_thread(self.snapshots.maybe, self.service.policy)
        if version is not None:
            self._since = datetime.now(timezone.utc)
            log.info("snapshot %s of %s", getattr(version, "name", version),
                     self.service.policy.version)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval_s)
            try:
                await self.poll_once()
            except Exception:  # reported, and retried at the next poll
                log.exception("policy versions: poll failed")

    def _recent_examples(self) -> Sequence[Any]:
        if self.store is None:
            return ()
        since = min(self._since, datetime.now(timezone.utc) - timedelta(hours=1))
        return list(self.store.logged(since, None, kind="policy", limit=self.snapshot_window))


def _judged(service: Any) -> tuple[dict[str, Any], dict[str, float]]:
    """The judge's calibration and agreement, for each snapshot's run (docs/judge.md)."""
    grading = getattr(service, "grading", None)
    if grading is None:
        return {}, {}
    params, metrics = grading.record()
    return dict(params), dict(metrics)
