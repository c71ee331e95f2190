"""Synthetic logged traffic with known per-model quality (for tests, docs and demos).

Three kinds of prompt (code, maths, chat) and a catalog whose models are good at
different kinds and cost different amounts; a uniform logger picks models, so every
decision's probability is known exactly and off-policy estimates have a closed-form truth.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from bandit.catalog import Catalog
from bandit.decision import Decision
from bandit.features import featurize, parse_request
from bandit.policy import Policy
from bandit.reward import RewardWeights, reward

PROMPTS = {
    "code": ["Write a Python function that {v} a list", "Fix this bug: def f(x): return x.{v}()",
             "Refactor the class so it {v} the input"],
    "math": ["Solve the equation 3x + {n} = 17", "What is the integral of x^{n}?",
             "Prove that the sum of {n} odd numbers is odd"],
    "chat": ["Tell me a short story about a {v} cat", "Say hello to my friend who {v}",
             "Suggest a name for a dog that {v}"],
}
VERBS = ("sorts", "reverses", "filters", "jumps", "sleeps", "sings")
# Probability of a good answer by model and kind, and the cost of one call.
QUALITY = {
    "small": {"code": 0.3, "math": 0.2, "chat": 0.85},
    "coder": {"code": 0.9, "math": 0.5, "chat": 0.4},
    "large": {"code": 0.8, "math": 0.9, "chat": 0.8},
}
COST_USD = {"small": 0.0001, "coder": 0.0005, "large": 0.004}
LATENCY_MS = {"small": 300.0, "coder": 600.0, "large": 1500.0}


def catalog() -> Catalog:
    return Catalog.from_dict({"models": [
        {"name": m, "input_price": COST_USD[m] * 1000, "output_price": COST_USD[m] * 1000,
         "latency_ms": LATENCY_MS[m]} for m in QUALITY]})


@dataclass(frozen=True)
class LoggedExample:
    """Same fields as ``feedback.store.LoggedExample``."""

    decision: Decision
    reward: float
    quality: float | None
    cost_usd: float | None
    latency_ms: float | None
    created_at: datetime
    decision_id: str
    kind: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)


def expected_reward(model: str, kind: str, weights: RewardWeights) -> float:
    return reward(weights, quality=QUALITY[model][kind], cost_usd=COST_USD[model],
                  latency_ms=LATENCY_MS[model])


def traffic(n: int, *, seed: int = 0, weights: RewardWeights | None = None,
            start: datetime | None = None) -> list[LoggedExample]:
    """``n`` decisions by a uniform logger with Bernoulli quality, one per minute."""
    rng = random.Random(seed)
    w = weights or RewardWeights()
    t0 = start or datetime(2026, 1, 1, tzinfo=timezone.utc)
    logger = Policy(catalog(), weights=w, seed=seed)
    logger.set_version("uniform")
    out = []
    for i in range(n):
        kind = rng.choice(sorted(PROMPTS))
        text = rng.choice(PROMPTS[kind]).format(v=rng.choice(VERBS), n=rng.randint(2, 9))
        ctx = featurize(parse_request(prompt=text))
        actions = logger.actions_for(ctx, weights=w)
        k = len(actions)
        index = rng.randrange(k)
        model = actions[index].model
        d = Decision(model=model, index=index, probability=1.0 / k,
                     pmf=tuple((a.model, 1.0 / k) for a in actions), policy_version="uniform",
                     feature_version=ctx.feature_version, weights=w, context=ctx,
                     actions=actions)
        q = 1.0 if rng.random() < QUALITY[model][kind] else 0.0
        r = reward(w, quality=q, cost_usd=COST_USD[model], latency_ms=LATENCY_MS[model])
        out.append(LoggedExample(d, r, q, COST_USD[model], LATENCY_MS[model],
                                 t0 + timedelta(minutes=i), f"d{seed}-{i}", kind))
    return out
