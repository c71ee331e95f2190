"""Reward: one documented function of quality, cost and latency.

.. math::

    r = w_q \\cdot q - w_c \\cdot \\frac{c}{\\$0.001} - w_l \\cdot \\frac{\\ell}{1000\\,ms}

* ``q`` is the answer's quality in [0, 1] (a feedback score or a grade),
* ``c`` the cost of the call in USD, counted in thousandths of a dollar (``COST_UNIT_USD``),
* ``l`` the latency in milliseconds, counted in seconds.

So ``cost_weight=0.02`` means "one thousandth of a dollar is worth 0.02 quality points"
and ``latency_weight=0.05`` means "one second of waiting is worth 0.05 quality points".
All weights are finite and non-negative, so the reward is monotone non-decreasing in
quality and non-increasing in cost and latency. A deployment sets default weights and
named profiles; a request may override any of them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from bandit.errors import RequestError

COST_UNIT_USD = 0.001
#: The largest weight accepted: 1,000 quality points per thousandth of a dollar (or per
#: second) is far past any sensible trade-off, and keeps every reward a finite number.
MAX_WEIGHT = 1_000.0
LATENCY_UNIT_MS = 1000.0


@dataclass(frozen=True)
class RewardWeights:
    """Weights of the reward's three terms.

    >>> w = RewardWeights(quality=1.0, cost=0.02, latency=0.0)
    >>> round(reward(w, quality=0.9, cost_usd=0.005, latency_ms=1200.0), 4)
    0.8
    >>> w.override({"cost": 0.1}).cost
    0.1
    """

    quality: float = 1.0
    cost: float = 0.02
    latency: float = 0.0

    def __post_init__(self) -> None:
        for name in ("quality", "cost", "latency"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise RequestError(f"weights.{name}: must be a number, got {value!r}")
            if not math.isfinite(value) or not 0 <= value <= MAX_WEIGHT:
                raise RequestError(
                    f"weights.{name}: must be a number from 0 to {MAX_WEIGHT:g}, "
                    f"got {value!r}"
                )
        if self.quality == 0 and self.cost == 0 and self.latency == 0:
            raise RequestError("weights: at least one weight must be positive")

    def override(self, changes: Mapping[str, Any] | None) -> RewardWeights:
        """These weights with some fields replaced; unknown names are an error."""
        if not changes:
            return self
        unknown = sorted(set(changes) - {"quality", "cost", "latency"})
        if unknown:
            raise RequestError(
                f"weights.{unknown[0]}: unknown weight (use quality, cost, latency)"
            )
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, float]:
        # Spelled out: dataclasses.asdict deep-copies and is slow on the request path.
        return {"quality": float(self.quality), "cost": float(self.cost),
                "latency": float(self.latency)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RewardWeights:
        return cls().override(raw) if raw else cls()


def reward(
    weights: RewardWeights,
    *,
    quality: float,
    cost_usd: float = 0.0,
    latency_ms: float = 0.0,
) -> float:
    """Reward of one answered call (see the module docstring for the formula).

    Raises :class:`~bandit.errors.RequestError` for a quality outside [0, 1] or a negative
    or non-finite cost or latency.
    """
    if not (isinstance(quality, (int, float)) and 0.0 <= quality <= 1.0):
        raise RequestError(f"quality: must be a number in [0, 1], got {quality!r}")
    for name, value in (("cost_usd", cost_usd), ("latency_ms", latency_ms)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise RequestError(f"{name}: must be a finite number >= 0, got {value!r}")
    value = (
        weights.quality * quality
        - weights.cost * (cost_usd / COST_UNIT_USD)
        - weights.latency * (latency_ms / LATENCY_UNIT_MS)
    )
    if not math.isfinite(value):  # a cost or latency near the float limit
        raise RequestError(f"cost_usd: the reward of cost {cost_usd!r} and latency "
                           f"{latency_ms!r} ms is not a finite number")
    return value


def penalty(weights: RewardWeights, *, cost_usd: float, latency_ms: float) -> float:
    """The cost-and-latency part of the reward, as a positive number to subtract."""
    return weights.cost * (cost_usd / COST_UNIT_USD) + weights.latency * (
        latency_ms / LATENCY_UNIT_MS
    )
