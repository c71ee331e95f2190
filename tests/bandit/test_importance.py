"""The cap on importance weights in the policy's quality regression."""

from __future__ import annotations

import dataclasses
import random

import pytest

from bandit.catalog import Catalog, ModelSpec
from bandit.errors import PolicyError
from bandit.features import featurize, parse_request
from bandit.policy import Policy, PolicyConfig

CATALOG = Catalog.of([ModelSpec(name="good"), ModelSpec(name="bad")])


def _estimate_error(cap: float, seed: int) -> float:
    """Mean absolute error of VW's learned qualities after explored, rare grades.

    "good" is right 80% of the time and "bad" 40%. Grades arrive as a real explorer
    would log them: "good" chosen with probability 0.97, "bad" with 0.03.
    """
    policy = Policy(CATALOG, config=PolicyConfig(max_importance_weight=cap), seed=seed)
    ctx = featurize(parse_request(prompt="what is the boiling point of water?"))
    rng = random.Random(seed)
    truth = {"good": 0.8, "bad": 0.4}
    for _ in range(600):
        d = policy.decide(ctx, explore=False)
        model = "bad" if rng.random() < 0.03 else "good"
        index = [a.model for a in d.actions].index(model)
        probability = 0.03 if model == "bad" else 0.97
        logged = dataclasses.replace(d, model=model, index=index, probability=probability)
        q = 1.0 if rng.random() < truth[model] else 0.0
        policy.learn(logged, q, outcome={"quality": q})
    actions = policy.actions_for(ctx)
    predicted = dict(zip([a.model for a in actions], policy.predict_vw_quality(ctx, actions),
                         strict=True))
    return sum(abs(predicted[m] - truth[m]) for m in truth) / len(truth)


def test_capped_weights_estimate_a_rarely_explored_model_better() -> None:
    capped = sum(_estimate_error(1.0, s) for s in range(6)) / 6
    uncapped = sum(_estimate_error(1e6, s) for s in range(6)) / 6
    assert capped < uncapped
    assert capped < 0.12


@pytest.mark.parametrize("bad", [0.5, 0.0, float("nan"), float("inf")],
                         ids=["below-one", "zero", "nan", "inf"])
def test_max_importance_weight_is_validated(bad: float) -> None:
    with pytest.raises(PolicyError, match="max_importance_weight"):
        PolicyConfig(max_importance_weight=bad)


def test_config_without_the_field_loads_with_the_default() -> None:
    raw = PolicyConfig().to_dict()
    del raw["max_importance_weight"]
    assert PolicyConfig.from_dict(raw).max_importance_weight == 1.0
