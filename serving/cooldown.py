"""Cooldown (a circuit breaker per model): skip a model that keeps failing.

After ``failures`` consecutive failures a model is *open*: routing skips it for
``seconds``. When that time is up the next call to it is a *probe* (only one at a time);
a successful probe closes the breaker, a failed one opens it again for twice as long,
up to ``max_seconds``. Probes are live requests, so failover stands behind them.

A refusal that says when to come back (``Retry-After`` on a 429 or 503) also holds the
model back until then, whatever the count of failures.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass
class _Breaker:
    failures: int = 0
    open_until: float = 0.0
    backoff: float = 0.0
    probing: bool = False
    hold_until: float = 0.0  # Retry-After


class Cooldown:
    """Per-model breakers; ``clock`` is injectable so tests need not sleep."""

    def __init__(
        self,
        *,
        failures: int = 3,
        seconds: float = 30.0,
        max_seconds: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failures < 1 or seconds < 0:
            raise ValueError("cooldown: failures must be >= 1 and seconds >= 0")
        self.threshold = failures
        self.seconds = seconds
        self.max_seconds = max_seconds
        self._clock = clock
        self._breakers: dict[str, _Breaker] = {}

    def state(self, model: str) -> str:
        """``closed``, ``open`` (skipped), ``probe`` (next call probes) or ``probing``."""
        b = self._breakers.get(model)
        if b is None:
            return "closed"
        if b.hold_until and self._clock() < b.hold_until:
            return "open"
        if b.failures < self.threshold:
            return "closed"
        if b.probing:
            return "probing"
        return "open" if self._clock() < b.open_until else "probe"

    def open_for(self, model: str) -> float:
        """Seconds until ``model`` may be tried again (0 if it may be now)."""
        b = self._breakers.get(model)
        if b is None or self.state(model) != "open":
            return 0.0
        until = max(b.hold_until, b.open_until if b.failures >= self.threshold else 0.0)
        return max(0.0, until - self._clock())

    def available(self, model: str) -> bool:
        """Whether routing may choose ``model`` now (closed, or due for a probe)."""
        return self.state(model) in ("closed", "probe")

    def allowed(self, models: Iterable[str]) -> list[str]:
        return [m for m in models if self.available(m)]

    def begin(self, model: str) -> bool:
        """Claim a call to ``model``; False when it is cooling down or already probed."""
        state = self.state(model)
        if state == "probe":
            self._breakers[model].probing = True
            return True
        return state == "closed"

    def success(self, model: str) -> None:
        self._breakers.pop(model, None)

    def failure(self, model: str, *, retry_after: float | None = None) -> None:
        """Count a failure; ``retry_after`` (seconds) also holds the model back that long
        (at most ``max_seconds``)."""
        b = self._breakers.setdefault(model, _Breaker())
        b.failures += 1
        if b.failures >= self.threshold:
            b.backoff = (min(b.backoff * 2, self.max_seconds) if b.probing and b.backoff
                         else self.seconds)
            b.open_until = self._clock() + b.backoff
            b.probing = False
        if retry_after is not None and retry_after > 0:
            b.hold_until = max(b.hold_until,
                               self._clock() + min(retry_after, self.max_seconds))
            b.probing = False

    def release(self, model: str) -> None:
        """Forget a claimed probe that never reached the model (e.g. the client left)."""
        b = self._breakers.get(model)
        if b is not None:
            b.probing = False
