"""What a decision is: the chosen model, its propensity and everything needed to learn."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from bandit.features import Context
from bandit.reward import RewardWeights


class Action(NamedTuple):
    """One candidate model as the policy saw it: its VW feature text and the expected
    cost (USD) and latency (ms) of calling it, as estimated when deciding.

    A named tuple: every decision builds one per eligible model, and a tuple is built
    in less than half the time of a frozen dataclass.
    """

    model: str
    features: str
    expected_cost_usd: float
    expected_latency_ms: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "features": self.features,
            "expected_cost_usd": self.expected_cost_usd,
            "expected_latency_ms": self.expected_latency_ms,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Action:
        return cls(
            model=str(raw["model"]),
            features=str(raw["features"]),
            expected_cost_usd=float(raw["expected_cost_usd"]),
            expected_latency_ms=float(raw["expected_latency_ms"]),
        )


@dataclass(frozen=True)
class Decision:
    """One routing decision.

    ``pmf`` lists every eligible model with the probability the policy gave it, in the
    order of ``actions``; ``probability`` is that of the chosen model, logged so that
    learning and off-policy evaluation stay unbiased.
    """

    model: str
    index: int
    probability: float
    pmf: tuple[tuple[str, float], ...]
    policy_version: str
    feature_version: str
    weights: RewardWeights
    context: Context
    actions: tuple[Action, ...]
    explored: bool = True
    predicted_quality: tuple[float, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ranking(self) -> list[tuple[str, float]]:
        """Eligible models, most probable first."""
        return sorted(self.pmf, key=lambda kv: (-kv[1], kv[0]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "index": self.index,
            "probability": self.probability,
            "pmf": [[m, p] for m, p in self.pmf],
            "policy_version": self.policy_version,
            "feature_version": self.feature_version,
            "weights": self.weights.to_dict(),
            "context": self.context.to_dict(),
            "actions": [a.to_dict() for a in self.actions],
            "explored": self.explored,
            "predicted_quality": list(self.predicted_quality),
            # Written only when there is something: payloads without it read as before.
            **({"extra": dict(self.extra)} if self.extra else {}),
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Decision:
        return cls(
            model=str(raw["model"]),
            index=int(raw["index"]),
            probability=float(raw["probability"]),
            pmf=tuple((str(m), float(p)) for m, p in raw["pmf"]),
            policy_version=str(raw["policy_version"]),
            feature_version=str(raw["feature_version"]),
            weights=RewardWeights.from_dict(raw["weights"]),
            context=Context.from_dict(raw["context"]),
            actions=tuple(Action.from_dict(a) for a in raw["actions"]),
            explored=bool(raw.get("explored", True)),
            predicted_quality=tuple(float(q) for q in raw.get("predicted_quality", ())),
            extra=dict(raw.get("extra", {})),
        )
