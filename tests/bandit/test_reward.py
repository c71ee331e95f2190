"""bandit/reward.py: the formula, validation, and monotonicity properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bandit.errors import RequestError
from bandit.reward import RewardWeights, reward

weights = st.builds(
    RewardWeights,
    quality=st.floats(0.01, 10), cost=st.floats(0, 10), latency=st.floats(0, 10),
)
quality = st.floats(0, 1)
money = st.floats(0, 10)
millis = st.floats(0, 1e6)


def test_formula() -> None:
    w = RewardWeights(quality=2.0, cost=0.5, latency=0.1)
    assert reward(w, quality=0.5, cost_usd=0.002, latency_ms=3000) == pytest.approx(
        2 * 0.5 - 0.5 * 2 - 0.1 * 3
    )


@given(weights, quality, quality, money, millis)
def test_monotone_in_quality(w: RewardWeights, q1: float, q2: float, c: float, lat: float) -> None:
    lo, hi = sorted((q1, q2))
    assert reward(w, quality=lo, cost_usd=c, latency_ms=lat) <= reward(
        w, quality=hi, cost_usd=c, latency_ms=lat)


@given(weights, quality, money, money, millis)
def test_non_increasing_in_cost(w: RewardWeights, q: float, c1: float, c2: float,
                                lat: float) -> None:
    lo, hi = sorted((c1, c2))
    assert reward(w, quality=q, cost_usd=hi, latency_ms=lat) <= reward(
        w, quality=q, cost_usd=lo, latency_ms=lat)


@given(weights, quality, money, millis, millis)
def test_non_increasing_in_latency(w: RewardWeights, q: float, c: float, l1: float,
                                   l2: float) -> None:
    lo, hi = sorted((l1, l2))
    assert reward(w, quality=q, cost_usd=c, latency_ms=hi) <= reward(
        w, quality=q, cost_usd=c, latency_ms=lo)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"quality": -1}, "weights.quality"), ({"cost": math.nan}, "weights.cost"),
     ({"latency": math.inf}, "weights.latency"), ({"cost": "1"}, "weights.cost"),
     ({"quality": 0, "cost": 0, "latency": 0}, "weights")],
)
def test_bad_weights_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(RequestError, match=f"^{field}"):
        RewardWeights(**kwargs)


def test_override_rejects_unknown_names() -> None:
    with pytest.raises(RequestError, match="weights.speed"):
        RewardWeights().override({"speed": 1})
    assert RewardWeights().override({"cost": 0.5, "latency": None}).cost == 0.5


@pytest.mark.parametrize(
    "kwargs",
    [{"quality": 1.5}, {"quality": math.nan}, {"quality": 0.5, "cost_usd": -1},
     {"quality": 0.5, "latency_ms": math.inf}],
)
def test_bad_outcomes_raise(kwargs: dict) -> None:
    with pytest.raises(RequestError):
        reward(RewardWeights(), **kwargs)
