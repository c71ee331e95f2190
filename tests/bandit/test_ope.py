"""Off-policy estimators against values known in closed form on synthetic logs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bandit.decision import Action, Decision
from bandit.errors import PolicyError
from bandit.features import Context
from bandit.ope import Estimate, MeanRewardModel, doubly_robust, evaluate, ips, snips
from bandit.reward import RewardWeights

K = 4
MEANS = np.array([0.2, 0.5, 0.8, 0.35])  # Bernoulli reward of each action


def uniform_log(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    actions = rng.integers(0, K, size=n)
    rewards = (rng.random(n) < MEANS[actions]).astype(float)
    return actions, rewards, np.full(n, 1.0 / K)


def test_ips_is_unbiased_on_a_uniform_logger() -> None:
    # E[IPS] = sum_a pi(a) * MEANS[a]; averaged over 400 logs of 200 the mean has se ~0.004
    rng = np.random.default_rng(0)
    pi = np.array([0.1, 0.2, 0.6, 0.1])
    truth = float(pi @ MEANS)
    values = []
    for _ in range(400):
        a, r, mu = uniform_log(200, rng)
        values.append(ips(r, mu, pi[a]).value)
    assert abs(np.mean(values) - truth) < 0.015


@pytest.mark.parametrize("target", [2, 1, 0], ids=["best", "middle", "worst"])
def test_snips_and_dr_agree_with_ips_on_a_large_sample(target: int) -> None:
    rng = np.random.default_rng(1)
    a, r, mu = uniform_log(40_000, rng)
    p = (a == target).astype(float)
    q = MEANS + 0.1  # a deliberately wrong reward model: DR must still be unbiased
    est_ips = ips(r, mu, p)
    est_snips = snips(r, mu, p)
    est_dr = doubly_robust(r, mu, p, q_logged=q[a], q_target=np.full(a.size, q[target]))
    for est in (est_ips, est_snips, est_dr):
        assert abs(est.value - MEANS[target]) < 0.02
    assert abs(est_snips.value - est_ips.value) < 0.02
    assert abs(est_dr.value - est_ips.value) < 0.02


def test_dr_with_the_true_reward_model_has_lower_variance() -> None:
    rng = np.random.default_rng(2)
    a, r, mu = uniform_log(5_000, rng)
    p = (a == 2).astype(float)
    est_dr = doubly_robust(r, mu, p, q_logged=MEANS[a], q_target=np.full(a.size, MEANS[2]))
    assert est_dr.stderr < ips(r, mu, p).stderr


def test_on_policy_ips_is_the_sample_mean_exactly() -> None:
    rng = np.random.default_rng(3)
    a, r, mu = uniform_log(1_000, rng)
    assert ips(r, mu, mu).value == pytest.approx(r.mean())
    assert snips(r, mu, mu).value == pytest.approx(r.mean())


def test_snips_is_invariant_to_a_reward_shift() -> None:
    rng = np.random.default_rng(4)
    a, r, mu = uniform_log(1_000, rng)
    p = np.array([0.1, 0.2, 0.6, 0.1])[a]
    assert snips(r + 3.0, mu, p).value == pytest.approx(snips(r, mu, p).value + 3.0)


@pytest.mark.parametrize("estimator", ["ips", "snips", "dr"])
def test_95_percent_intervals_cover(estimator: str) -> None:
    rng = np.random.default_rng(5)
    pi = np.array([0.1, 0.2, 0.6, 0.1])
    truth = float(pi @ MEANS)
    hits = 0
    reps = 400
    for _ in range(reps):
        a, r, mu = uniform_log(300, rng)
        if estimator == "ips":
            est = ips(r, mu, pi[a])
        elif estimator == "snips":
            est = snips(r, mu, pi[a])
        else:
            q = np.full(K, 0.5)
            est = doubly_robust(r, mu, pi[a], q_logged=q[a], q_target=np.full(a.size, pi @ q))
        hits += est.covers(truth)
    # binomial(400, 0.95) has sd ~0.011: 0.91..0.99 is a comfortable band
    assert 0.91 <= hits / reps <= 0.99


def test_bad_inputs_raise_policy_error() -> None:
    with pytest.raises(PolicyError, match="propensities"):
        ips([1.0], [0.0], [1.0])
    with pytest.raises(PolicyError, match="1-d arrays of one length"):
        snips([1.0, 2.0], [0.5], [1.0])


def test_empty_log_gives_nan() -> None:
    assert np.isnan(Estimate.of_terms([]).value)


def test_reward_model_shrinks_sparse_cells() -> None:
    q = MeanRewardModel.fit(
        [("a", ("t=1",), 1.0)] * 8 + [("a", ("t=2",), 0.0)] * 8 + [("b", (), 0.0)], prior=2.0
    )
    assert q.predict("a", ("t=1",)) > q.predict("a", ("t=3",)) > q.predict("a", ("t=2",))
    assert q.predict("a", ("t=3",)) == pytest.approx(q.predict("a", ("t=unknown",)))


# -- through Decisions ------------------------------------------------------------------


@dataclass
class Row:
    decision: Decision
    reward: float


class FixedScorer:
    def __init__(self, pmf: list[float]) -> None:
        self.pmf = pmf

    def scores(self, context: Context, actions: tuple[Action, ...]) -> list[float]:
        return list(self.pmf)


def synthetic_decisions(n: int, seed: int) -> list[Row]:
    rng = np.random.default_rng(seed)
    ctx = Context(namespaces={"t": ("task=x",)}, numeric={}, input_tokens=10)
    actions = tuple(Action(f"m{i}", f"|a m=m{i}", 0.0, 0.0) for i in range(K))
    pmf = tuple((f"m{i}", 1.0 / K) for i in range(K))
    rows = []
    for a, r in zip(*uniform_log(n, rng)[:2], strict=True):
        d = Decision(model=f"m{a}", index=int(a), probability=1.0 / K, pmf=pmf,
                     policy_version="v1", feature_version="f1", weights=RewardWeights(),
                     context=ctx, actions=actions)
        rows.append(Row(d, float(r)))
    return rows


def test_evaluate_ranks_a_better_target_higher() -> None:
    rows = synthetic_decisions(4_000, seed=6)
    good = evaluate(FixedScorer([0.0, 0.0, 1.0, 0.0]), rows)
    bad = evaluate(FixedScorer([1.0, 0.0, 0.0, 0.0]), rows)
    for name in ("ips", "snips", "dr"):
        assert getattr(good, name).value == pytest.approx(MEANS[2], abs=0.05)
        assert getattr(good, name).low > getattr(bad, name).high
    assert good.logged.value == pytest.approx(MEANS.mean(), abs=0.03)
    assert good.share == {"m0": 0.0, "m1": 0.0, "m2": 1.0, "m3": 0.0}
    assert good.ess == pytest.approx(len(rows) / K, rel=0.1)


def test_evaluate_greedy_one_hot_and_outcomes() -> None:
    rows = synthetic_decisions(2_000, seed=7)
    report = evaluate(
        FixedScorer([0.1, 0.2, 0.4, 0.3]),
        rows,
        greedy=True,
        outcomes={"quality": [float(x.decision.index) for x in rows]},
    )
    assert report.share["m2"] == 1.0
    assert report.outcomes["quality"].value == pytest.approx(2.0)
    metrics = report.metrics("ope.")
    assert {"ope.ips", "ope.dr_low", "ope.share.m2", "ope.quality"} <= set(metrics)


# -- properties ---------------------------------------------------------------------------

logs_strategy = st.integers(min_value=2, max_value=60).flatmap(
    lambda n: st.tuples(
        st.lists(st.floats(-5, 5), min_size=n, max_size=n),
        st.lists(st.floats(0.01, 1.0), min_size=n, max_size=n),
        st.lists(st.floats(0.0, 1.0), min_size=n, max_size=n),
    )
)


@settings(max_examples=60, deadline=None)
@given(logs_strategy)
def test_snips_stays_within_the_observed_rewards(log: tuple[list[float], ...]) -> None:
    r, mu, p = log
    est = snips(r, mu, p)
    if sum(p) > 0:
        assert min(r) - 1e-9 <= est.value <= max(r) + 1e-9


@settings(max_examples=60, deadline=None)
@given(logs_strategy)
def test_dr_with_a_zero_reward_model_is_ips(log: tuple[list[float], ...]) -> None:
    r, mu, p = log
    zeros = [0.0] * len(r)
    assert doubly_robust(r, mu, p, q_logged=zeros, q_target=zeros).value == pytest.approx(
        ips(r, mu, p).value, abs=1e-9
    )


@settings(max_examples=60, deadline=None)
@given(logs_strategy)
def test_intervals_contain_their_estimate(log: tuple[list[float], ...]) -> None:
    r, mu, p = log
    for est in (ips(r, mu, p), snips(r, mu, p)):
        if not np.isnan(est.value):
            assert est.low <= est.value <= est.high
