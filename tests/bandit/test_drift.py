"""Adapting to change: evidence that ages, change detection, reset-model (bandit/drift.py)."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest

from bandit.catalog import Catalog, ModelSpec
from bandit.drift import ChangeDetector, ChangeEvent
from bandit.errors import PolicyError
from bandit.estimates import Estimates
from bandit.features import Context, featurize, parse_request
from bandit.kinds import KindStats
from bandit.policy import Policy, PolicyConfig
from bandit.reward import RewardWeights

MODELS = ("a", "b", "c")
# Quality of each model on each of four kinds of prompt: "a" is the best everywhere.
QUALITY = {"a": (0.9, 0.85, 0.9, 0.8), "b": (0.7, 0.6, 0.75, 0.65),
           "c": (0.55, 0.6, 0.5, 0.6)}
WEIGHTS = RewardWeights(quality=1.0, cost=0.0, latency=0.0)


def _contexts(n: int = 400) -> list[tuple[int, Context]]:
    rng = random.Random(7)
    out = []
    for i in range(n):
        kind = i % 4
        words = " ".join(rng.choice("alpha beta gamma delta omega sigma".split())
                         for _ in range(5))
        prompt = f"Please answer the topic{kind} question below carefully: {words} {i}"
        out.append((kind, featurize(parse_request(prompt=prompt))))
    return out


CONTEXTS = _contexts()


def _policy(**config: object) -> Policy:
    return Policy(Catalog.of(ModelSpec(name=m) for m in MODELS),
                  config=dataclasses.replace(PolicyConfig(), **config), weights=WEIGHTS,
                  seed=3)


def _run(policy: Policy, steps: int, rng: random.Random, *, broken: frozenset[str] = frozenset(),
         ) -> list[str]:
    chosen = []
    for _ in range(steps):
        kind, ctx = CONTEXTS[rng.randrange(len(CONTEXTS))]
        d = policy.decide(ctx)
        p = 0.0 if d.model in broken else QUALITY[d.model][kind]
        q = float(rng.random() < p)
        policy.learn(d, q, outcome={"quality": q})
        chosen.append(d.model)
    return chosen


def _crossing(chosen: list[str], model: str, below: float, window: int = 100) -> int | None:
    for t in range(window, len(chosen) + 1):
        if chosen[t - window : t].count(model) / window < below:
            return t
    return None


# -- the detector ---------------------------------------------------------------------

@pytest.mark.parametrize("p", [0.1, 0.5, 0.9], ids=["p0.1", "p0.5", "p0.9"])
def test_detector_is_quiet_on_a_stationary_stream(p: float) -> None:
    rng = np.random.default_rng(0)
    det = ChangeDetector()
    grades = (rng.random(20_000) < p).astype(float)
    # the baseline itself estimated from the stream, as the policy does
    alarms = [det.observe("m", g - p) for g in grades]
    assert not any(alarms)


@pytest.mark.parametrize(("before", "after", "within"),
                         [(0.9, 0.0, 20), (0.8, 0.2, 40), (0.2, 0.9, 40)],
                         ids=["broken", "worse", "better"])
def test_detector_catches_a_shift(before: float, after: float, within: int) -> None:
    rng = np.random.default_rng(1)
    det = ChangeDetector()
    for g in (rng.random(2_000) < before):
        assert det.observe("m", float(g) - before) is None
    for n, g in enumerate(rng.random(1_000) < after, start=1):
        direction = det.observe("m", float(g) - before)
        if direction is not None:
            assert direction == ("down" if after < before else "up")
            assert n <= within
            return
    pytest.fail("the shift was never detected")


def test_detector_rejects_bad_settings() -> None:
    with pytest.raises(PolicyError, match="change_threshold"):
        ChangeDetector(threshold=0)
    with pytest.raises(PolicyError, match="change_drift"):
        ChangeDetector(drift=1.5)
    with pytest.raises(PolicyError, match="kind_memory"):
        PolicyConfig(kind_memory=10)
    with pytest.raises(PolicyError, match="change_drift"):
        PolicyConfig(change_drift=float("nan"))


# -- evidence that ages ---------------------------------------------------------------

def test_kind_evidence_is_bounded_and_follows_a_drift() -> None:
    stats = KindStats(memory=100)
    for _ in range(5_000):
        stats.observe("head=x", "a", 1.0)
    ns, sums, total = stats.counts("head=x", ["a"])
    assert ns[0] == pytest.approx(100) and total == pytest.approx(100)
    for _ in range(100):
        stats.observe("head=x", "a", 0.0)
    ns, sums, _ = stats.counts("head=x", ["a"])
    # 100 grades of 0 after 5,000 of 1: with memory 100 the mean is near exp(-1)
    assert sums[0] / ns[0] == pytest.approx(np.exp(-1), abs=0.02)
    forever = KindStats()
    for q in [1.0] * 5_001 + [0.0] * 100:
        forever.observe("head=x", "a", q)
    ns, sums, _ = forever.counts("head=x", ["a"])
    assert sums[0] / ns[0] > 0.97


def test_estimates_follow_a_change_at_a_bounded_rate() -> None:
    spec = ModelSpec(name="m")
    est = Estimates(memory=100)
    for _ in range(10_000):
        est.observe("m", input_tokens=100, output_tokens=50, cost_usd=0.001, latency_ms=500)
    for _ in range(200):
        est.observe("m", input_tokens=100, output_tokens=50, cost_usd=0.02, latency_ms=5000)
    assert est.latency_ms(spec) > 4000
    assert est.cost_usd(spec, input_tokens=100, max_tokens=None) > 0.015
    frozen = Estimates()
    for _ in range(10_000):
        frozen.observe("m", input_tokens=100, output_tokens=50, cost_usd=0.001, latency_ms=500)
    for _ in range(200):
        frozen.observe("m", input_tokens=100, output_tokens=50, cost_usd=0.02, latency_ms=5000)
    assert frozen.latency_ms(spec) < 700


# -- the policy -----------------------------------------------------------------------

@pytest.mark.parametrize("history", [1_000, 8_000], ids=["short", "long"])
def test_a_broken_model_loses_its_traffic_within_300_decisions(history: int) -> None:
    rng = random.Random(history)
    policy = _policy()
    before = _run(policy, history, rng)
    assert before[-500:].count("a") / 500 > 0.6  # the best model had the traffic
    assert policy.changes == ()  # and no change was seen where there was none
    after = _run(policy, 600, rng, broken=frozenset({"a"}))
    crossed = _crossing(after, "a", 0.10)
    assert crossed is not None and crossed <= 300, crossed
    assert after[300:].count("a") / 300 < 0.10
    assert [(e.model, e.source, e.direction) for e in policy.changes] == [
        ("a", "detected", "down")]
    assert policy.changes_detected() == {"a": 1}


def test_without_ageing_a_long_history_reacts_slowly() -> None:
    # What the ageing is for: the same change after the same history, with it off.
    rng = random.Random(8_000)
    policy = _policy(kind_memory=0, estimate_memory=0, detect_changes=False)
    _run(policy, 8_000, rng)
    after = _run(policy, 600, rng, broken=frozenset({"a"}))
    crossed = _crossing(after, "a", 0.10)
    assert crossed is None or crossed > 300


def test_stationary_traffic_triggers_no_detection_in_10000_decisions() -> None:
    policy = _policy()
    _run(policy, 10_000, random.Random(11))
    assert policy.changes == ()
    assert all(policy.change_statistic(m) < policy.config.change_threshold for m in MODELS)


def test_drift_state_survives_a_checkpoint_round_trip() -> None:
    rng = random.Random(5)
    policy = _policy()
    _run(policy, 2_000, rng)
    _run(policy, 60, rng, broken=frozenset({"a"}))
    policy.reset_model("b")
    _run(policy, 30, rng, broken=frozenset({"c"}))
    copy = Policy.from_bytes(policy.to_bytes())
    assert copy.changes == policy.changes and copy.changes_detected() == (
        policy.changes_detected())
    for m in MODELS:
        assert copy.change_statistic(m) == policy.change_statistic(m)
    assert copy.kinds.to_dict() == policy.kinds.to_dict()
    # both go on deciding and detecting alike
    a = _run(policy, 300, random.Random(9), broken=frozenset({"c"}))
    b = _run(copy, 300, random.Random(9), broken=frozenset({"c"}))
    assert a == b and copy.changes == policy.changes


def test_reset_model_widens_one_model_and_keeps_the_others() -> None:
    rng = random.Random(6)
    policy = _policy()
    _run(policy, 3_000, rng)
    kinds_before = policy.kinds.to_dict()
    features_before = {a.model: a.features for a in policy.actions_for(CONTEXTS[0][1])}
    event = policy.reset_model("a")
    assert isinstance(event, ChangeEvent) and (event.model, event.source) == ("a", "operator")
    for kind, row in policy.kinds.to_dict()["kinds"]:
        old = dict(kinds_before["kinds"])[kind]
        assert "a" not in row
        assert {m: c for m, c in old.items() if m != "a"} == row  # the others' untouched
    features_after = {a.model: a.features for a in policy.actions_for(CONTEXTS[0][1])}
    assert features_after["a"] != features_before["a"]  # a new identity for VW
    assert features_after["b"] == features_before["b"]
    assert "a" not in policy.estimates.latency and "a" not in policy.estimates.output_tokens
    # the posterior of "a" is wide again (its prior's strength only), the others' not
    beliefs = policy._beliefs(CONTEXTS[0][1], policy.actions_for(CONTEXTS[0][1]))
    strengths = dict(zip(MODELS, beliefs.strengths, strict=True))
    assert strengths["a"] == pytest.approx(policy.config.prior_strength)
    assert strengths["b"] > 2 * policy.config.prior_strength
    with pytest.raises(PolicyError, match="not in the catalog"):
        policy.reset_model("nope")


def test_a_catalog_price_change_acts_on_the_next_decision() -> None:
    catalog = Catalog.of([ModelSpec(name="cheap", input_price=0.1, output_price=0.1),
                          ModelSpec(name="dear", input_price=10.0, output_price=10.0)])
    weights = RewardWeights(quality=1.0, cost=1.0, latency=0.0)
    policy = Policy(catalog, weights=weights, seed=1)
    ctx = featurize(parse_request(prompt="x " * 2000))
    assert policy.decide(ctx, explore=False).model == "cheap"
    policy.set_catalog(Catalog.of([ModelSpec(name="cheap", input_price=100.0,
                                             output_price=100.0),
                                   ModelSpec(name="dear", input_price=10.0,
                                             output_price=10.0)]))
    d = policy.decide(ctx, explore=False)
    assert d.model == "dear"
    costs = {a.model: a.expected_cost_usd for a in d.actions}
    assert costs["cheap"] > costs["dear"]
