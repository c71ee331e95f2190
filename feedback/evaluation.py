"""Scoring a policy on a window of logged decisions (no MLflow here).

Logged examples come from ``Store.logged(since, until)``; anything with the same
attributes (``decision``, ``reward``, ``quality``, ``cost_usd``, ``latency_ms``) works, so
tests feed synthetic logs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from bandit.decision import Decision
from bandit.ope import Estimate, QHat, Report, Scorer, evaluate
from bandit.reward import RewardWeights, reward


class Example(Protocol):
    """What ``feedback.store.LoggedExample`` provides."""

    @property
    def decision(self) -> Decision: ...

    @property
    def reward(self) -> float: ...

    @property
    def quality(self) -> float | None: ...

    @property
    def cost_usd(self) -> float | None: ...

    @property
    def latency_ms(self) -> float | None: ...


OUTCOMES = ("quality", "cost_usd", "latency_ms")


def rewards_under(examples: Sequence[Example], weights: RewardWeights | None) -> list[float]:
    """The examples' rewards, recomputed under ``weights`` where the outcome allows it.

    Comparing policies trained for different trade-offs is only fair under one reward;
    without ``weights`` the logged rewards are used as they are.
    """
    if weights is None:
        return [float(x.reward) for x in examples]
    out = []
    for x in examples:
        if x.quality is None:
            out.append(float(x.reward))
        else:
            out.append(reward(weights, quality=float(x.quality), cost_usd=float(x.cost_usd or 0.0),
                              latency_ms=float(x.latency_ms or 0.0)))
    return out


def score(
    target: Scorer,
    examples: Sequence[Example],
    *,
    weights: RewardWeights | None = None,
    greedy: bool = False,
    q_hat: QHat | None = None,
) -> Report:
    """IPS, SNIPS and DR estimates of ``target``'s mean reward, quality, cost and latency."""
    outcomes = {name: [getattr(x, name) for x in examples] for name in OUTCOMES}
    return evaluate(target, examples, greedy=greedy, q_hat=q_hat,
                    rewards=rewards_under(examples, weights), outcomes=outcomes)


def by_version(examples: Sequence[Example], *,
               weights: RewardWeights | None = None) -> dict[str, Estimate]:
    """Each serving policy version's observed mean reward on the traffic it served.

    In A/B mode both arms serve (and log) live traffic, so this on-policy comparison of
    the champion's and the challenger's decisions needs no importance weights.
    """
    rewards = rewards_under(examples, weights)
    groups: dict[str, list[float]] = {}
    for x, r in zip(examples, rewards, strict=True):
        groups.setdefault(x.decision.policy_version, []).append(r)
    return {v: Estimate.of_terms(rs) for v, rs in sorted(groups.items())}


@dataclass(frozen=True)
class Point:
    """Mean cost and quality of one policy or model (a point on the cost-quality plane)."""

    label: str
    cost_usd: float
    quality: float


def model_points(examples: Iterable[Example]) -> list[Point]:
    """Each model's observed mean cost and quality on the calls it actually served."""
    sums: dict[str, list[float]] = {}
    for x in examples:
        if x.quality is None:
            continue
        s = sums.setdefault(x.decision.model, [0.0, 0.0, 0.0])
        s[0] += 1
        s[1] += float(x.cost_usd or 0.0)
        s[2] += float(x.quality)
    return [Point(m, c / n, q / n) for m, (n, c, q) in sorted(sums.items())]


def report_point(label: str, report: Report) -> Point | None:
    """The (cost, quality) a report estimates for its policy, if it has both."""
    cost: Estimate | None = report.outcomes.get("cost_usd")
    quality: Estimate | None = report.outcomes.get("quality")
    if cost is None or quality is None or math.isnan(cost.value) or math.isnan(quality.value):
        return None
    return Point(label, cost.value, quality.value)


def observed_point(label: str, examples: Sequence[Example]) -> Point | None:
    """The logging policy's own observed mean cost and quality."""
    rows = [x for x in examples if x.quality is not None]
    if not rows:
        return None
    return Point(label, sum(float(x.cost_usd or 0.0) for x in rows) / len(rows),
                 sum(float(x.quality or 0.0) for x in rows) / len(rows))
