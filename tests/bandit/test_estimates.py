"""Cost and answer-length estimates, per model and per kind of prompt."""

from __future__ import annotations

import json
import random

import pytest

from bandit.catalog import ModelSpec
from bandit.estimates import MIN_FIT_OBSERVATIONS, Estimates, describe

SHORT = (1.0,) + (0.0,) * 23  # a kind of prompt answered in a few tokens
LONG = (0.0, 1.0) + (0.0,) * 22  # a kind answered at length


def _observe_mix(est: Estimates, model: str, n: int, *, priced: bool) -> None:
    rng = random.Random(0)
    for _ in range(n):
        long = rng.random() < 0.3
        out = rng.gauss(500, 20) if long else rng.gauss(10, 2)
        cost = None if priced else 1e-4 + out * 1e-5
        est.observe(model, input_tokens=200, output_tokens=out, cost_usd=cost,
                    latency_ms=None, sketch=LONG if long else SHORT)


def test_unpriced_cost_follows_the_kind_of_prompt() -> None:
    est = Estimates()
    _observe_mix(est, "m", 200, priced=False)
    spec = ModelSpec(name="m")
    short = est.cost_usd(spec, input_tokens=200, max_tokens=None, prompt=describe(200, SHORT))
    long = est.cost_usd(spec, input_tokens=200, max_tokens=None, prompt=describe(200, LONG))
    pooled = est.cost_usd(spec, input_tokens=200, max_tokens=None)
    assert short == pytest.approx(1e-4 + 10 * 1e-5, rel=0.1)
    assert long == pytest.approx(1e-4 + 500 * 1e-5, rel=0.1)
    assert short < pooled < long  # without the prompt: one figure for every kind


def test_priced_cost_uses_the_answer_length_of_the_kind() -> None:
    est = Estimates()
    _observe_mix(est, "m", 200, priced=True)
    spec = ModelSpec(name="m", input_price=1.0, output_price=10.0)
    long = est.cost_usd(spec, input_tokens=200, max_tokens=None, prompt=describe(200, LONG))
    assert long == pytest.approx(spec.call_cost_usd(input_tokens=200, output_tokens=500),
                                 rel=0.1)
    capped = est.cost_usd(spec, input_tokens=200, max_tokens=50, prompt=describe(200, LONG))
    assert capped == pytest.approx(spec.call_cost_usd(input_tokens=200, output_tokens=50))


def test_few_observations_fall_back_to_the_pooled_estimate() -> None:
    est = Estimates()
    _observe_mix(est, "m", MIN_FIT_OBSERVATIONS - 1, priced=False)
    spec = ModelSpec(name="m")
    with_prompt = est.cost_usd(spec, input_tokens=200, max_tokens=None,
                               prompt=describe(200, LONG))
    assert with_prompt == est.cost_usd(spec, input_tokens=200, max_tokens=None)


def test_fit_is_never_negative_far_from_its_data() -> None:
    est = Estimates()
    _observe_mix(est, "m", 200, priced=False)
    odd = describe(100_000, tuple(-1.0 for _ in range(24)))
    assert est.cost_usd(ModelSpec(name="m"), input_tokens=100_000, max_tokens=None,
                        prompt=odd) >= 0.0


def test_round_trip_keeps_every_estimate() -> None:
    est = Estimates()
    _observe_mix(est, "m", 120, priced=False)
    again = Estimates.from_dict(json.loads(json.dumps(est.to_dict())))
    for sketch in (SHORT, LONG):
        p = describe(200, sketch)
        assert again.cost_usd(ModelSpec(name="m"), input_tokens=200, max_tokens=None,
                              prompt=p) == est.cost_usd(ModelSpec(name="m"), input_tokens=200,
                                                        max_tokens=None, prompt=p)


def test_estimates_saved_before_the_fits_still_load() -> None:
    est = Estimates()
    _observe_mix(est, "m", 50, priced=False)
    raw = est.to_dict()
    del raw["cost_fit"], raw["output_fit"]
    old = Estimates.from_dict(raw)
    p = describe(200, LONG)
    assert old.cost_usd(ModelSpec(name="m"), input_tokens=200, max_tokens=None, prompt=p) \
        == est.cost_usd(ModelSpec(name="m"), input_tokens=200, max_tokens=None)


def test_stacked_fits_equal_each_fit_and_follow_new_observations() -> None:
    est = Estimates()
    _observe_mix(est, "priced", 200, priced=True)
    _observe_mix(est, "free", 200, priced=False)
    _observe_mix(est, "young", MIN_FIT_OBSERVATIONS - 1, priced=False)
    specs = [ModelSpec(name="priced", input_price=1.0, output_price=10.0),
             ModelSpec(name="free"), ModelSpec(name="young"), ModelSpec(name="unseen")]
    for sketch in (SHORT, LONG):
        x = describe(200, sketch)
        fits = est.fitted(specs, x)
        assert fits[0] == pytest.approx(est.output_fit["priced"].predict(x) * 100.0)
        assert fits[1] == pytest.approx(est.cost_fit["free"].predict(x) * 1e-3)
        assert fits[2:] == [None, None]
        for spec, fit in zip(specs, fits, strict=True):
            one = est.cost_usd(spec, input_tokens=200, max_tokens=None, prompt=x)
            assert est.cost_usd(spec, input_tokens=200, max_tokens=None, fit=fit) == one
    before = est.fitted(specs, describe(200, LONG))[1]
    for _ in range(50):  # the stack is rebuilt after new observations
        est.observe("free", input_tokens=200, output_tokens=None, cost_usd=0.05,
                    latency_ms=None, sketch=LONG)
    assert est.fitted(specs, describe(200, LONG))[1] > before
