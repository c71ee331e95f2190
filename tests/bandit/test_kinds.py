"""Grades pooled per kind of prompt, and Thompson sampling over the pooled posteriors."""

from __future__ import annotations

import random

import numpy as np
import pytest

from bandit.catalog import Catalog, ModelSpec
from bandit.exploration import thompson
from bandit.features import featurize, parse_request
from bandit.kinds import KindStats, kind_of
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
