"""The join of a decision with its feedback into a reward.

A caller's score is the quality; cost and latency come from the most direct
measurement available: the feedback's own ``cost_usd`` / tokens (priced by the
catalog) / ``latency_ms``, else the outcome the gateway recorded, else the estimate
the policy made when it decided (so a score alone still yields an honest reward).
"""

from __future__ import annotations

from dataclasses import dataclass

from bandit.catalog import Catalog
from bandit.decision import Decision
from bandit.reward import RewardWeights
from bandit.reward import reward as reward_of
from feedback.records import OutcomeRecord


@dataclass(frozen=True)
class Chosen:
    """What a reward needs to know of a decision (small enough to cache by the thousand)."""

    model: str
    weights: RewardWeights
    expected_cost_usd: float
    expected_latency_ms: float

    @classmethod
    def of(cls, decision: Decision) -> Chosen:
        action = decision.actions[decision.index]
        return cls(decision.model, decision.weights, action.expected_cost_usd,
                   action.expected_latency_ms)


@dataclass(frozen=True)
class Reward:
    value: float
    cost_usd: float
    latency_ms: float
    # Measured values only (None when unknown): they feed the policy's estimates.
    measured: dict[str, float | None]


def feedback_reward(
    decision: Decision | Chosen,
    *,
    catalog: Catalog,
    score: float,
    latency_ms: float | None = None,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    cost_usd: float | None = None,
    outcome: OutcomeRecord | None = None,
) -> Reward:
    """The reward of ``decision`` given a score in [0, 1] and what was measured.

    >>> from bandit import Catalog, Policy, featurize, parse_request
    >>> cat = Catalog.from_dict({"models": [{"name": "a", "input_price": 1.0}]})
    >>> d = Policy(cat).decide(featurize(parse_request(prompt="hi")))
    >>> r = feedback_reward(d, catalog=cat, score=1.0, input_tokens=1000, output_tokens=0)
    >>> round(r.cost_usd, 6), round(r.value, 4)
    (0.001, 0.98)
    """
    chosen = decision if isinstance(decision, Chosen) else Chosen.of(decision)
    o = outcome
    in_tok = input_tokens if input_tokens is not None else (o.input_tokens if o else None)
    out_tok = output_tokens if output_tokens is not None else (o.output_tokens if o else None)
    measured_cost = cost_usd if cost_usd is not None else (o.cost_usd if o else None)
    measured_latency = latency_ms if latency_ms is not None else (o.latency_ms if o else None)

    cost: float | None = cost_usd
    if cost is None and (input_tokens is not None or output_tokens is not None):
        cost = _priced(catalog, chosen.model, input_tokens or 0, output_tokens or 0)
    if cost is None and outcome is not None:
        cost = outcome.cost_usd
        if cost is None and (outcome.input_tokens is not None or outcome.output_tokens is not None):
            cost = _priced(catalog, chosen.model, outcome.input_tokens or 0,
                           outcome.output_tokens or 0)
    if cost is None:
        cost = chosen.expected_cost_usd
    latency = measured_latency if measured_latency is not None else chosen.expected_latency_ms
    value = reward_of(chosen.weights, quality=score, cost_usd=cost, latency_ms=latency)
    return Reward(
        value=value,
        cost_usd=cost,
        latency_ms=latency,
        measured={
            # The score is what the policy learns as the chosen model's quality.
            "quality": float(score),
            "input_tokens": None if in_tok is None else float(in_tok),
            "output_tokens": None if out_tok is None else float(out_tok),
            "cost_usd": None if measured_cost is None else float(measured_cost),
            "latency_ms": None if measured_latency is None else float(measured_latency),
        },
    )


def _priced(catalog: Catalog, model: str, input_tokens: int, output_tokens: int) -> float | None:
    if model not in catalog:
        return None
    return catalog.get(model).call_cost_usd(input_tokens=input_tokens,
                                            output_tokens=output_tokens)
