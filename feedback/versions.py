"""What the running service needs from policy versions, without importing MLflow.

* :class:`PolicySource` loads the ``champion`` at start-up and, polled, hands back the new
  policy when the alias moves (a promotion or a rollback), so the service swaps it in.
* :class:`Split` decides which arm serves a request: ``off`` (champion only), ``shadow``
  (the challenger also decides on every request and only logs) or ``ab`` (a percentage of
  user keys, sticky by a stable hash, is served by the challenger).
* :class:`Arms` holds the champion and challenger and routes one request by the split.
* :class:`SnapshotSchedule` says when to snapshot: every N learned feedbacks or every T
  seconds, never more often than a floor (so a high feedback rate does not snapshot
  every few seconds), and on shutdown.

The registry is anything with ``alias_version`` and ``load_version`` (a
:class:`feedback.tracking.Tracker`); every call into it blocks, so async code calls
:meth:`PolicySource.poll` through ``asyncio.to_thread``.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bandit.decision import Decision
from bandit.errors import RouteBanditError
from bandit.features import Context
from bandit.policy import Policy
from bandit.reward import RewardWeights

CHAMPION = "champion"
CHALLENGER = "challenger"
MODES = ("off", "shadow", "ab")
SHADOW = "shadow"  # decision kind of a challenger's choice in shadow mode: logged, not served


class Registry(Protocol):
    def alias_version(self, alias: str) -> int | None: ...

    def load_version(self, ref: str | int) -> Policy: ...


class PolicySource:
    """The policy an alias points to, reloaded when the alias moves.

    >>> class Fake:
    ...     version = 1
    ...     def alias_version(self, alias): return self.version
    ...     def load_version(self, ref): return f"policy v{ref}"
    >>> reg = Fake(); src = PolicySource(reg)
    >>> src.load(), src.poll()
    ('policy v1', None)
    >>> reg.version = 2; src.poll(), src.version
    ('policy v2', 2)
    """

    def __init__(self, registry: Registry, alias: str = CHAMPION, *,
                 current: int | None = None) -> None:
        self.registry = registry
        self.alias = alias
        # ``current``: the version already serving (e.g. resumed from a checkpoint of
        # ``v3``), so the first poll does not reload it and lose what it learned since.
        self.version: int | None = current
        self._lock = threading.Lock()

    def load(self) -> Policy | None:
        """The policy the alias points to now (``None`` when the alias is unset)."""
        with self._lock:
            n = self.registry.alias_version(self.alias)
            if n is None:
                return None
            policy = self.registry.load_version(n)
            self.version = n
            return policy

    def poll(self) -> Policy | None:
        """The new policy if the alias moved since the last load or poll, else ``None``."""
        with self._lock:
            n = self.registry.alias_version(self.alias)
            if n is None or n == self.version:
                return None
            policy = self.registry.load_version(n)
            self.version = n
            return policy


@dataclass(frozen=True)
class Split:
    """How traffic is shared between champion and challenger.

    >>> ab = Split(mode="ab", percent=50.0)
    >>> ab.arm("alice") == ab.arm("alice")      # sticky per user key
    True
    >>> Split(mode="ab", percent=0.0).arm("alice"), Split(mode="ab", percent=100.0).arm("bob")
    ('champion', 'challenger')
    """

    mode: str = "off"
    percent: float = 0.0
    salt: str = "routebandit"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise RouteBanditError(f"split mode: must be one of {', '.join(MODES)}, "
                                   f"got {self.mode!r}")
        if not 0.0 <= self.percent <= 100.0:
            raise RouteBanditError(f"split percent: must be in [0, 100], got {self.percent!r}")

    def bucket(self, user_key: str) -> float:
        """A stable number in [0, 100) for a user key."""
        h = hashlib.sha256(f"{self.salt}:{user_key}".encode()).digest()
        return int.from_bytes(h[:8], "big") % 10_000 / 100.0

    def arm(self, user_key: str | None) -> str:
        """The arm that serves this user: always the champion unless in ``ab`` mode.

        A request without a user key is served by the champion (it cannot be sticky).
        """
        if self.mode != "ab" or user_key is None:
            return CHAMPION
        return CHALLENGER if self.bucket(user_key) < self.percent else CHAMPION


@dataclass(frozen=True)
class Routed:
    """The decision that serves the request and, in shadow mode, the one only logged."""

    served: Decision
    arm: str
    shadow: Decision | None = None


class Arms:
    """Champion and challenger, routed by a :class:`Split`; swap either at any time.

    Swapping replaces a reference, so a request in flight finishes with the policy it
    started with and none is dropped.
    """

    def __init__(self, champion: Policy, challenger: Policy | None = None,
                 split: Split | None = None) -> None:
        self.champion = champion
        self.challenger = challenger
        self.split = split or Split()

    def route(
        self,
        context: Context,
        *,
        user_key: str | None = None,
        weights: RewardWeights | None = None,
        allow: Collection[str] | None = None,
    ) -> Routed:
        champion, challenger, split = self.champion, self.challenger, self.split
        if challenger is None or split.mode == "off":
            return Routed(champion.decide(context, weights=weights, allow=allow), CHAMPION)
        if split.mode == "shadow":
            served = champion.decide(context, weights=weights, allow=allow)
            shadow = challenger.decide(context, weights=weights, allow=allow)
            return Routed(served, CHAMPION, shadow)
        arm = split.arm(user_key)
        policy = challenger if arm == CHALLENGER else champion
        return Routed(policy.decide(context, weights=weights, allow=allow), arm)

    def policy_for(self, decision: Decision) -> Policy:
        """The arm's policy that made ``decision`` (by version), to learn its feedback."""
        ch = self.challenger
        if ch is not None and decision.policy_version == ch.version != self.champion.version:
            return ch
        return self.champion


def serving_version(policy: Policy) -> int | None:
    """The registered version a live policy descends from (``v3`` -> 3), if any.

    >>> from bandit.catalog import Catalog
    >>> p = Policy(Catalog.from_dict({"models": [{"name": "a"}]}))
    >>> p.set_version("v3"); serving_version(p)
    3
    """
    v = policy.version
    return int(v[1:]) if v[:1] == "v" and v[1:].isdigit() else None


class Logger(Protocol):
    def log_policy_version(self, policy: Policy, *, examples: Sequence[Any] = (),
                           kind: str = "snapshot",
                           params: Mapping[str, Any] | None = None) -> Any: ...
    # (Tracker.log_policy_version also takes ``metrics``: passed only when there are some.)


class SnapshotSchedule:
    """Snapshot every ``every_n`` learned feedbacks or ``every_s`` seconds (if any new),
    but never sooner than ``min_s`` seconds after the previous snapshot (or start-up).

    >>> now = [0.0]
    >>> s = SnapshotSchedule(every_n=100, every_s=600.0, min_s=60.0, clock=lambda: now[0])
    >>> s.due(99), s.due(5000)     # 5,000 learned in the first minute: not yet
    (False, False)
    >>> now[0] = 60.0; s.due(99), s.due(100)
    (False, True)
    >>> s.mark(100); now[0] = 660.0; s.due(101)    # every_s passed: one new is enough
    True
    """

    def __init__(self, *, every_n: int = 1000, every_s: float = 900.0, min_s: float = 0.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if every_n < 1:
            raise RouteBanditError(f"snapshot every_n: must be at least 1, got {every_n!r}")
        if not every_s > 0:
            raise RouteBanditError(f"snapshot every_s: must be positive, got {every_s!r}")
        if not min_s >= 0:
            raise RouteBanditError(f"snapshot min_s: must be >= 0, got {min_s!r}")
        self.every_n = every_n
        self.every_s = every_s
        self.min_s = min_s
        self._clock = clock
        self._last_n = 0
        self._last_t = clock()

    def due(self, n_learned: int) -> bool:
        new = n_learned - self._last_n
        if new <= 0:
            return False
        elapsed = self._clock() - self._last_t
        return elapsed >= self.min_s and (new >= self.every_n or elapsed >= self.every_s)

    def pending(self, n_learned: int) -> bool:
        """Whether anything was learned since the last snapshot."""
        return n_learned > self._last_n

    def mark(self, n_learned: int) -> None:
        self._last_n = n_learned
        self._last_t = self._clock()


class Snapshotter:
    """Logs a copy of the live policy as a ``snapshot`` version when the schedule says so.

    ``examples()`` returns the window to score the snapshot on (e.g. the decisions since
    the previous snapshot: the live policy has learned them, so those estimates are
    in-sample and optimistic; ``routebandit evaluate`` on later traffic is the honest
    check). Calls block on MLflow: run them in a thread.
    """

    def __init__(self, tracker: Logger, *, schedule: SnapshotSchedule | None = None,
                 examples: Callable[[], Sequence[Any]] = tuple,
                 params: Callable[[], Mapping[str, Any]] = dict,
                 metrics: Callable[[], Mapping[str, float]] = dict) -> None:
        self.tracker = tracker
        self.schedule = schedule or SnapshotSchedule()
        self.examples = examples
        self.params = params  # more run parameters (the service's embedder, its judge)
        self.metrics = metrics  # more run metrics (the judge's agreement with people)
        self._lock = threading.Lock()

    def maybe(self, policy: Policy) -> Any:
        """Snapshot if due; return the new version or ``None``."""
        if not self.schedule.due(policy.n_learned):
            return None
        return self.snapshot(policy)

    def snapshot(self, policy: Policy, *, reason: str = "schedule") -> Any:
        """Snapshot now (e.g. on shutdown) unless nothing was learned since the last one."""
        with self._lock:
            copy = policy.clone()  # the live policy keeps serving and learning meanwhile
            n = copy.n_learned
            if not self.schedule.pending(n) or (reason == "schedule" and not self.schedule.due(n)):
                return None
            metrics = dict(self.metrics())
            version = self.tracker.log_policy_version(
                copy, examples=self.examples(), kind="snapshot",
                params={**self.params(), "snapshot.reason": reason,
                        "clusters": len(copy.clusters) if copy.clusters is not None else 0},
                **({"metrics": metrics} if metrics else {}))
            self.schedule.mark(copy.n_learned)
            return version
