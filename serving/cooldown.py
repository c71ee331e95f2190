"""Cooldown (a circuit breaker per model): skip a model that keeps failing.

After ``failures`` consecutive failures a model is *open*: routing skips it for
``seconds``. When that time is up the next call to it is a *probe* (only one at a time);
a successful probe closes the breaker, a failed one opens it again for twice as long,
up to ``max_seconds``. Probes are live requests, so failover stands behind them.
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
        if b is None or b.failures < self.threshold:
            return "closed"
        if b.probing:
            return "probing"
        return "open" if self._clock() < b.open_until else "probe"

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

    def failure(self, model: str) -> None:
        b = self._breakers.setdefault(model, _Breaker())
        b.failures += 1
        if b.failures >= self.threshold:
            b.backoff = (min(b.backoff * 2, self.max_seconds) if b.probing and b.backoff
                         else self.seconds)
            b.open_until = self._clock() + b.backoff
            b.probing = False

    def release(self, model: str) -> None:
        """Forget a claimed probe that never reached the model (e.g. the client left)."""
        b = self._breakers.get(model)
        if b is not None:
            b.probing = False
