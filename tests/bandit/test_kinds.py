"""Grades pooled per kind of prompt, and Thompson sampling over the pooled posteriors."""

from __future__ import annotations

import random

import numpy as np
import pytest

from bandit.catalog import Catalog, ModelSpec
from bandit.exploration import ThompsonPool, thompson
from bandit.features import featurize, parse_request
from bandit.kinds import KindStats, kind_of, kind_path, refine
from bandit.policy import Policy, PolicyConfig
from bandit.reward import RewardWeights

CATALOG = Catalog.of([ModelSpec(name="a"), ModelSpec(name="b"), ModelSpec(name="c")])
# Two templates: the same opening words, a different question each time.
TEMPLATES = {
    "quiz": "Answer with the letter of the correct choice. Question {}: which is bigger?",
    "code": "You are an expert programmer, write code for task {}.",
}
TRUTH = {"quiz": {"a": 0.9, "b": 0.5, "c": 0.3}, "code": {"a": 0.3, "b": 0.4, "c": 0.85}}


def _ctx(kind: str, i: int, **meta: str) -> object:
    return featurize(parse_request(prompt=TEMPLATES[kind].format(i), metadata=meta or None))


def test_kind_is_the_task_tag_else_the_template() -> None:
    assert kind_of(_ctx("quiz", 1)) == kind_of(_ctx("quiz", 2))
    assert kind_of(_ctx("quiz", 1)) != kind_of(_ctx("code", 1))
    assert kind_of(_ctx("quiz", 1, task="t1")) == "task=t1"
    assert kind_of(_ctx("code", 1, task="t1")) == "task=t1"
    system = featurize(parse_request(messages=[
        {"role": "system", "content": "You are terse"},
        {"role": "user", "content": TEMPLATES["quiz"].format(1)}]))
    assert kind_of(system) != kind_of(_ctx("quiz", 1))
    assert kind_of(featurize(parse_request(prompt=""))) is None


def test_stats_count_forget_the_oldest_kind_and_round_trip() -> None:
    stats = KindStats(max_kinds=2)
    for kind in ("k1", "k2", "k3", "k4"):  # seen once: not counted, not remembered
        stats.observe(kind, "z", 1.0)
    assert len(stats) == 0 and stats.counts("k1", ["z"]) == ([0.0], [0.0], 0.0)
    stats.observe("k1", "a", 1.0)
    stats.observe("k2", "a", 0.0)
    stats.observe("k1", "b", 0.5)  # k1 is now the most recent
    stats.observe("k3", "a", 1.0)  # forgets k2
    assert len(stats) == 2
    assert stats.counts("k2", ["a"]) == ([0.0], [0.0], 0.0)
    assert stats.counts("k1", ["a", "b", "c"]) == ([1.0, 1.0, 0.0], [1.0, 0.5, 0.0], 2.0)
    again = KindStats.from_dict(stats.to_dict())
    assert again.counts("k1", ["a", "b"]) == stats.counts("k1", ["a", "b"])
    assert again.counts("k3", ["a"]) == stats.counts("k3", ["a"])
    assert again.max_kinds == 2
    again.observe("k4", "a", 1.0)  # seen once before the round trip: counted now
    assert again.counts("k4", ["a"]) == ([1.0], [1.0], 1.0)


def test_one_off_prompts_do_not_fill_the_table() -> None:
    policy = Policy(CATALOG, seed=0)
    for i in range(300):
        prompt = f"Question number {i} of {i * 7}: is {i} prime? Think it through."
        d = policy.decide(featurize(parse_request(prompt=prompt)))
        policy.learn(d, 1.0, outcome={"quality": 1.0})
    assert len(policy.kinds) == 0
    assert len(policy.to_bytes()) < 100_000


def test_thompson_pmf_sums_to_one_keeps_a_floor_and_favours_the_better_model() -> None:
    rng = np.random.default_rng(3)
    pmf = thompson([0.8, 0.5, 0.2], [50, 50, 50], [0.0, 0.0, 0.0], quality_weight=1.0,
                   draws=64, rng=rng)
    assert sum(pmf) == pytest.approx(1.0)
    assert min(pmf) >= 1.0 / (3 * 65) - 1e-12
    assert pmf[0] > 0.9
    # A penalty large enough turns the choice around.
    pmf = thompson([0.8, 0.5, 0.2], [50, 50, 50], [0.6, 0.0, 0.0], quality_weight=1.0,
                   draws=64, rng=rng)
    assert pmf[1] > 0.9
    # Weak posteriors explore; strong ones do not.
    wide = thompson([0.6, 0.5], [2, 2], [0, 0], quality_weight=1.0, draws=400, rng=rng)
    narrow = thompson([0.6, 0.5], [2000, 2000], [0, 0], quality_weight=1.0, draws=400, rng=rng)
    assert 0.2 < wide[1] < 0.5
    assert narrow[1] < 0.01


def _exact_thompson(means: list[float], strengths: list[float]) -> np.ndarray:
    rng = np.random.default_rng(99)
    m, n = np.asarray(means), np.asarray(strengths)
    draws = rng.beta(m * n, (1 - m) * n, size=(200_000, len(m)))
    return np.bincount(draws.argmax(axis=1), minlength=len(m)) / len(draws)


def test_a_pool_estimates_the_thompson_pmf_and_renews_its_draws() -> None:
    means, strengths = [0.62, 0.58, 0.4], [60.0, 40.0, 30.0]
    pool, rng = ThompsonPool(64), np.random.default_rng(5)
    first = pool.pmf(means, strengths, [0, 0, 0], quality_weight=1.0, rng=rng)
    start = pool._samples.copy()
    pmfs = [pool.pmf(means, strengths, [0, 0, 0], quality_weight=1.0, rng=rng)
            for _ in range(400)]
    # Nothing learned, yet every row was redrawn (8 per decision), and the estimate moves.
    assert not np.isin(pool._samples, start).any()
    assert len({tuple(p) for p in [first, *pmfs]}) > 20
    # Each pmf estimates Thompson's from 64 draws: unbiased on average, 1/sqrt(64) noisy.
    exact = _exact_thompson(means, strengths)
    mean_pmf = np.mean(pmfs, axis=0)
    assert np.abs(mean_pmf - exact).max() < 0.03, (mean_pmf, exact)
    assert np.std([p[1] for p in pmfs]) < 0.1


class _CountingRng:
    def __init__(self) -> None:
        self.rng, self.variates = np.random.default_rng(1), 0

    def beta(self, a: np.ndarray, b: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        self.variates += size[0] * size[1]
        return self.rng.beta(a, b, size=size)


def test_a_pool_renews_a_window_of_draws_while_its_posteriors_drift() -> None:
    pool, rng = ThompsonPool(64), _CountingRng()
    for i in range(9):  # the prior means drift a little at every decision
        pool.pmf([0.6 + i * 1e-4, 0.5, 0.4], [50, 50, 50], [0, 0, 0],
                 quality_weight=1.0, rng=rng)  # type: ignore[arg-type]
    # 64 x 3 at the start, then 8 rows of 3 at each later decision: no model is graded,
    # yet after 8 decisions every draw has been renewed.
    assert rng.variates == 64 * 3 + 8 * 8 * 3
    pool.pmf([0.6, 0.5, 0.4], [50, 51, 50], [0, 0, 0], quality_weight=1.0,
             rng=rng)  # type: ignore[arg-type]
    assert rng.variates == 64 * 3 + 8 * 8 * 3 + 64 + 8 * 3  # b was graded: its column


def test_a_pool_follows_a_new_grade_and_a_moved_mean_at_once() -> None:
    pool, rng = ThompsonPool(64), np.random.default_rng(7)
    before = pool.pmf([0.8, 0.5], [100, 100], [0, 0], quality_weight=1.0, rng=rng)
    assert before[0] > 0.95
    # Model b was graded (its strength changed): its column is redrawn from the new
    # posterior, so the pmf turns at the very next decision.
    after = pool.pmf([0.8, 0.95], [100, 101], [0, 0], quality_weight=1.0, rng=rng)
    assert after[1] > 0.95
    # A posterior that narrows without moving (many grades at its mean) is redrawn too.
    wide = pool.pmf([0.6, 0.5], [5000, 2], [0, 0], quality_weight=1.0, rng=rng)
    narrow = pool.pmf([0.6, 0.5], [5000, 5000], [0, 0], quality_weight=1.0, rng=rng)
    assert wide[1] > 0.2 and narrow[1] < 0.02
    assert pool.pmf([0.8, 0.95], [100, 101], [0, 0], quality_weight=1.0, rng=rng)[1] > 0.95
    # Only b's prior mean moved (same strength): its draws move with it.
    moved = pool.pmf([0.8, 0.5], [100, 101], [0, 0], quality_weight=1.0, rng=rng)
    assert moved[0] > 0.95
    # Penalties are applied per decision, to the same draws.
    costly = pool.pmf([0.8, 0.5], [100, 101], [0.6, 0], quality_weight=1.0, rng=rng)
    assert costly[1] > 0.95
    # Another number of models starts the pool afresh.
    three = pool.pmf([0.1, 0.2, 0.9], [50, 50, 50], [0, 0, 0], quality_weight=1.0, rng=rng)
    assert len(three) == 3 and three[2] > 0.95


def _run(policy: Policy, steps: int, seed: int, *, learn: bool) -> float:
    rng = random.Random(seed)
    total = 0.0
    for i in range(steps):
        kind = rng.choice(list(TEMPLATES))
        d = policy.decide(_ctx(kind, i), explore=learn)
        q = 1.0 if rng.random() < TRUTH[kind][d.model] else 0.0
        total += q
        if learn:
            policy.learn(d, q, outcome={"quality": q})
    return total / steps


@pytest.mark.parametrize("exploration", ["thompson", "squarecb"])
def test_pooling_finds_the_best_model_per_template(exploration: str) -> None:
    config = PolicyConfig(exploration=exploration)
    policy = Policy(CATALOG, config=config, seed=2, weights=RewardWeights(cost=0.0))
    _run(policy, 600, seed=1, learn=True)
    assert _run(policy, 300, seed=9, learn=False) > 0.85
    for kind, best in (("quiz", "a"), ("code", "c")):
        means = policy.predict_quality(_ctx(kind, 10_000), policy.actions_for(_ctx(kind, 0)))
        assert ["a", "b", "c"][means.index(max(means))] == best


def test_only_the_chosen_models_grade_is_counted_and_revisits_count_nothing() -> None:
    policy = Policy(CATALOG, config=PolicyConfig(exploration="thompson"), seed=0)
    decisions = []
    for i in range(40):
        d = policy.decide(_ctx("quiz", i))
        policy.learn(d, 1.0, outcome={"quality": 1.0})
        decisions.append(d)
    kind = kind_of(_ctx("quiz", 0))
    ns, sums, total = policy.kinds.counts(kind, ["a", "b", "c"])
    chosen = [d.model for d in decisions[1:]]  # a kind's first grade only marks it seen
    assert ns == [float(chosen.count(m)) for m in ("a", "b", "c")]
    assert sums == ns and total == 39.0
    for d in decisions:
        policy.learn(d, 1.0, outcome={"quality": 1.0}, revisit=True)
    assert policy.kinds.counts(kind, ["a", "b", "c"]) == (ns, sums, total)


def test_thompson_decisions_log_their_probability_and_survive_a_reload() -> None:
    policy = Policy(CATALOG, config=PolicyConfig(exploration="thompson",
                                                 min_kind_grades=5), seed=4)
    for i in range(30):
        d = policy.decide(_ctx("code", i))
        q = 1.0 if d.model == "c" else 0.0
        policy.learn(d, q, outcome={"quality": q})
    d = policy.decide(_ctx("code", 99))
    assert d.probability == dict(d.pmf)[d.model]
    assert sum(p for _, p in d.pmf) == pytest.approx(1.0)
    assert policy.scores(d.context, d.actions) == policy.scores(d.context, d.actions)
    clone = Policy.from_bytes(policy.to_bytes())
    for i in range(50):
        ctx = _ctx("code" if i % 2 else "quiz", 200 + i)
        assert clone.decide(ctx) == policy.decide(ctx)


def test_a_reload_decides_alike_even_when_the_draws_decide_the_pmf() -> None:
    # Every model as good as the others: the pmf is whatever the draws say.
    policy = Policy(CATALOG, config=PolicyConfig(min_kind_grades=5), seed=8)
    rng = random.Random(8)
    for i in range(40):
        d = policy.decide(_ctx("quiz", i))
        q = float(rng.random() < 0.5)
        policy.learn(d, q, outcome={"quality": q})
    first = [policy.decide(_ctx("quiz", 100 + i)) for i in range(5)]  # fills a pool
    assert len({d.pmf for d in first}) > 1  # the pmf moves with the draws
    clone = Policy.from_bytes(policy.to_bytes())
    for i in range(20):
        ctx = _ctx("quiz", 200 + i)
        assert clone.decide(ctx) == policy.decide(ctx)


def test_pooling_off_is_the_regression_alone() -> None:
    policy = Policy(CATALOG, config=PolicyConfig(kind_pooling=False), seed=0)
    for i in range(30):
        d = policy.decide(_ctx("quiz", i))
        policy.learn(d, 1.0, outcome={"quality": 1.0})
    ctx = _ctx("quiz", 5)
    actions = policy.actions_for(ctx)
    assert policy.predict_quality(ctx, actions) == policy.predict_vw_quality(ctx, actions)
    assert len(policy.kinds) == 0


@pytest.mark.parametrize("field, value", [("prior_strength", 0.0), ("thompson_draws", 0),
                                          ("min_kind_grades", -1)])
def test_bad_pooling_settings_are_refused(field: str, value: float) -> None:
    from bandit.errors import PolicyError
    with pytest.raises(PolicyError, match=field):
        PolicyConfig(**{field: value})


def test_an_established_kinds_belief_is_the_same_for_every_prompt_of_it() -> None:
    """Choices within an established kind must not follow per-prompt guesses: a model
    tried only where the others look weak would get a mean from the hardest prompts."""
    policy = Policy(CATALOG, config=PolicyConfig(min_kind_grades=10), seed=1)
    first, second = _ctx("quiz", 1), _ctx("quiz", 777_777)
    for i in range(10):  # the first grade only marks the kind seen: 9 counted
        d = policy.decide(_ctx("quiz", i))
        policy.learn(d, 1.0, outcome={"quality": float(i % 2)})
    actions = policy.actions_for(first)
    assert (policy.predict_vw_quality(first, actions)
            != policy.predict_vw_quality(second, actions))
    assert policy.predict_quality(first, actions) != policy.predict_quality(second, actions)
    d = policy.decide(_ctx("quiz", 10))
    policy.learn(d, 1.0, outcome={"quality": 1.0})  # the tenth counted: established
    assert policy.predict_quality(first, actions) == policy.predict_quality(second, actions)


# -- finer kinds: clusters of meaning, coarse to fine --------------------------------------
def test_a_path_is_the_task_tag_alone_else_the_clusters_then_the_template() -> None:
    from bandit.clusters import with_clusters

    plain = _ctx("quiz", 1)
    assert kind_path(plain) == (kind_of(plain),)
    assert kind_path(with_clusters(plain, (2, 7))) == (
        "cluster=2", "cluster=7", kind_of(plain))
    assert kind_path(with_clusters(_ctx("quiz", 1, task="t1"), (2,))) == ("task=t1",)
    assert kind_path(featurize(parse_request(prompt=""))) == ()


def test_a_finer_kind_that_agrees_with_its_parent_changes_nothing() -> None:
    # 40 grades per model in the parent, 20 of them the child's, at the same rates.
    parent = ([40.0, 40.0, 40.0], [30.0, 20.0, 10.0])
    child = ([20.0, 20.0, 20.0], [15.0, 10.0, 5.0])
    means, strengths = refine([0.7, 0.5, 0.3], [48.0] * 3, parent, child, prior_strength=8)
    assert means == [0.7, 0.5, 0.3] and strengths == [48.0] * 3


def test_a_finer_kind_that_disagrees_counts_its_own_grades_and_no_more_than_its_parent()\
        -> None:
    parent = ([60.0, 60.0], [30.0, 30.0])
    child = ([30.0, 30.0], [29.0, 1.0])  # the child's best model is the other one
    means, strengths = refine([0.5, 0.5], [68.0, 68.0], parent, child, prior_strength=8)
    assert means[0] > 0.85 and means[1] < 0.15
    assert all(38.0 <= s <= 68.0 for s in strengths)
    # With few grades the same rates are not yet evidence enough.
    few = refine([0.5, 0.5], [68.0, 68.0], parent, ([2.0, 2.0], [2.0, 0.0]),
                 prior_strength=8)
    assert few == ([0.5, 0.5], [68.0, 68.0])


def test_a_policy_learns_what_a_finer_kind_wants_when_its_parent_is_mixed() -> None:
    # One coarse cluster holds both kinds of prompt; its children tell them apart. No
    # template helps: every prompt opens differently.
    from bandit.clusters import with_clusters

    policy = Policy(CATALOG, seed=4, weights=RewardWeights(cost=0.0))
    rng = random.Random(0)

    def ctx(kind: str, i: int) -> object:
        text = f"{i} {rng.random()} {'riddle' if kind == 'quiz' else 'program'} please"
        return with_clusters(featurize(parse_request(prompt=text)),
                             (1, 2 if kind == "quiz" else 3))

    for i in range(800):
        kind = rng.choice(list(TEMPLATES))
        d = policy.decide(ctx(kind, i))  # type: ignore[arg-type]
        q = 1.0 if rng.random() < TRUTH[kind][d.model] else 0.0
        policy.learn(d, q, outcome={"quality": q})
    for kind, best in (("quiz", "a"), ("code", "c")):
        c = ctx(kind, -1)
        means = policy.predict_quality(c, policy.actions_for(c))  # type: ignore[arg-type]
        assert ["a", "b", "c"][means.index(max(means))] == best
