"""Noticing that a model changed: a two-sided CUSUM per model on its grades' surprise.

Providers update models behind the same name; a model regresses, starts refusing, or
gets better. The policy's evidence ages (``kind_memory``, :class:`bandit.kinds.KindStats`)
so that it follows slow drift at a bounded rate, but an abrupt change of a model that
has a long history behind it would still take hundreds of its grades to outweigh that
history. A :class:`ChangeDetector` watches each model's *surprise*: the grade minus
the mean grade the model has had on prompts of the same kind (the finest kind with
enough of its grades), which is zero on average while nothing changes, whatever the
kind. Page's cumulative sums of the surprise beyond a slack ``drift``,

.. math::

    S^-_t = \\max(0, S^-_{t-1} - r_t - \\delta), \\qquad
    S^+_t = \\max(0, S^+_{t-1} + r_t - \\delta),

stay near zero while the model answers as it used to; a model that starts answering
everything wrong adds ``mean - drift`` per grade and crosses ``threshold`` within a
couple of dozen of its grades. The policy then forgets what it knew of that model's
quality (:meth:`bandit.policy.Policy.reset_model`) and learns it afresh.

The defaults (``threshold`` 8, ``drift`` 0.25) were chosen on synthetic streams and the
drift benchmark (docs/policy.md, "Adapting to change"): grades in [0, 1] have a
standard deviation of at most 0.5, so a slack of 0.25 makes a false alarm from chance
alone practically impossible (the average run between false alarms of a Bernoulli(0.5)
stream is above a million grades), while a fall of 0.5 or more in a model's grades is
caught within about 35 of them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bandit.errors import PolicyError

#: Grades a model needs on a kind before its mean there is trusted as the baseline.
MIN_BASELINE_GRADES = 20


def fade(n: float, memory: float) -> float:
    """The weight left to ``n`` observations before one more is added, so that evidence
    counts ``memory`` observations at most (1.0: nothing fades; ``memory`` 0: never).

    Every running figure that ages (:class:`bandit.kinds.KindStats`,
    :class:`bandit.estimates.Estimates`) scales what it holds by this factor, then adds
    the new observation at full weight: an exponential forgetting with a half-life of
    about ``0.69 * memory`` observations.

    >>> fade(10, 0), fade(10, 100), fade(100, 100)
    (1.0, 1.0, 0.99)
    """
    if not memory or n + 1.0 <= memory:
        return 1.0
    return max(0.0, memory - 1.0) / n


@dataclass(frozen=True)
class ChangeEvent:
    """A change of a model: noticed by the detector (``source='detected'``) or declared by
    an operator (``source='operator'``), after ``at`` learning steps.

    >>> ChangeEvent(seq=1, model="m", at=500, source="detected", direction="down").to_dict()
    {'seq': 1, 'model': 'm', 'at': 500, 'source': 'detected', 'direction': 'down'}
    """

    seq: int
    model: str
    at: int
    source: str
    direction: str

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "model": self.model, "at": self.at, "source": self.source,
                "direction": self.direction}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ChangeEvent:
        return cls(seq=int(raw["seq"]), model=str(raw["model"]), at=int(raw["at"]),
                   source=str(raw["source"]), direction=str(raw["direction"]))


class ChangeDetector:
    """Two-sided CUSUM per model on the surprise of its grades.

    :meth:`observe` takes one grade's surprise (grade minus baseline mean) and returns
    ``"down"`` or ``"up"`` when the model's grades have shifted by more than the slack
    for long enough, else None; the model's sums then start again from zero.

    >>> det = ChangeDetector(threshold=8.0, drift=0.25)
    >>> [det.observe("m", 0.1) for _ in range(3)]
    [None, None, None]
    >>> next(i for i in range(100) if det.observe("m", -0.8))
    14
    >>> det.statistic("m")
    0.0
    """

    def __init__(self, *, threshold: float = 8.0, drift: float = 0.25) -> None:
        if not (math.isfinite(threshold) and threshold > 0):
            raise PolicyError(f"change_threshold: must be a positive number, got {threshold!r}")
        if not (math.isfinite(drift) and 0 <= drift < 1):
            raise PolicyError(f"change_drift: must be a number in [0, 1), got {drift!r}")
        self.threshold = float(threshold)
        self.drift = float(drift)
        # model -> [S-, S+]
        self._sums: dict[str, list[float]] = {}

    def observe(self, model: str, surprise: float) -> str | None:
        """Add one grade's surprise; the direction of a change once one is detected."""
        sums = self._sums.setdefault(model, [0.0, 0.0])
        sums[0] = max(0.0, sums[0] - surprise - self.drift)
        sums[1] = max(0.0, sums[1] + surprise - self.drift)
        if sums[0] > self.threshold:
            self.reset(model)
            return "down"
        if sums[1] > self.threshold:
            self.reset(model)
            return "up"
        return None

    def statistic(self, model: str) -> float:
        """The larger of the model's two sums (0: nothing unusual)."""
        sums = self._sums.get(model)
        return 0.0 if sums is None else max(sums)

    def reset(self, model: str) -> None:
        self._sums.pop(model, None)

    def to_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "drift": self.drift,
                "sums": {m: list(s) for m, s in self._sums.items()}}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, threshold: float,
                  drift: float) -> ChangeDetector:
        """Restore the sums; the thresholds are the configuration's (they may have been
        changed since)."""
        out = cls(threshold=threshold, drift=drift)
        for model, sums in raw.get("sums", {}).items():
            out._sums[str(model)] = [float(sums[0]), float(sums[1])]
        return out
