"""Replay with a change of the world: how the bandit's choices follow it."""

from __future__ import annotations

import numpy as np
import pytest

from bandit.errors import RequestError
from bandit.outcomes import OutcomeTable
from bandit.replay import (
    Change,
    ReplayConfig,
    change_response,
    featurize_table,
    replay,
    replay_bandit,
    world_after,
)

RATES = {"good": 0.9, "ok": 0.6, "bad": 0.3, "star": 0.98}


def world(models: tuple[str, ...], n: int = 1500, seed: int = 0) -> OutcomeTable:
    """One template (a kind the policy pools), models right at fixed rates, equal costs."""
    rng = np.random.default_rng(seed)
    rate = np.array([RATES[m] for m in models])
    prompts = ["Answer the following question carefully please. "
               + " ".join(f"w{k}" for k in rng.integers(5000, size=5)) for _ in range(n)]
    return OutcomeTable.from_rows(
        [f"p{i}" for i in range(n)], ["t"] * n,
        ["test" if i % 10 == 0 else "train" for i in range(n)], prompts, models,
        quality=(rng.random((n, len(models))) < rate).astype(float),
        cost_usd=np.full((n, len(models)), 0.001), output_chars=np.full((n, len(models)), 400.0))


def only_report(table: OutcomeTable, change: Change, **config: object) -> object:
    result = replay(table, ReplayConfig(cost_weights=(0.0,), changes=(change,), **config))
    (report,) = result.changes
    (response,) = report.responses
    return result, report, response


def test_a_degraded_model_is_dropped() -> None:
    table = world(("good", "ok", "bad"))
    result, report, r = only_report(table, Change("degrade", "good", 400))
    assert report.threshold == 0.10 and report.window == 100
    assert r.share_before > 0.6
    assert r.decisions_to_cross is not None and r.decisions_to_cross < 300
    assert max(r.windows[3:]) < 0.1
    # The test split is the world after the change: the degraded model scores 0 there.
    good = next(p for p in result.baseline("single_models").points if p.model == "good")
    assert good.quality == 0.0
    assert dict(result.bandit.points[0].choices).get("good", 0.0) < 0.1


def test_an_added_model_is_not_offered_before_and_taken_after() -> None:
    table = world(("good", "ok", "bad", "star"))
    _, report, r = only_report(table, Change("add", "star", 400))
    assert report.threshold == 0.50
    assert r.share_before == 0.0  # never offered before its step
    assert r.decisions_to_cross is not None and r.decisions_to_cross < 300
    assert np.mean(r.windows[2:]) > 0.8


def test_a_price_rise_moves_traffic_away_at_a_cost_weight() -> None:
    table = world(("good", "ok", "bad"))
    change = Change("price", "good", 400, input_price=100.0, output_price=400.0)
    result = replay(table, ReplayConfig(cost_weights=(0.0, 0.3), changes=(change,)))
    (report,) = result.changes
    free, priced = report.responses
    assert report.threshold is None and free.decisions_to_cross is None
    assert free.share_before > 0.6 and priced.share_before > 0.6
    assert np.mean(free.windows[3:]) > 0.6  # quality alone: the price does not matter
    assert np.mean(priced.windows[3:]) < 0.1
    doc = result.to_dict()
    assert doc["config"]["changes"] == ["price:good@400=100,400"]
    assert doc["changes"][0]["by_cost_weight"][1]["windows"] == list(priced.windows)


def test_the_world_after_prices_by_the_catalog() -> None:
    table = world(("good", "ok"), n=20)
    ctx = featurize_table(table)
    after = world_after(table, ctx, [Change("price", "ok", 0, input_price=2.0,
                                            output_price=8.0)])
    expected = [(c.input_tokens * 2.0 + 100 * 8.0) / 1e6 for c in ctx]
    np.testing.assert_allclose(after.cost_usd[:, 1], expected)
    np.testing.assert_array_equal(after.cost_usd[:, 0], table.cost_usd[:, 0])
    assert world_after(table, ctx, []) is table


def test_only_the_stream_after_the_step_changes() -> None:
    table = world(("good", "ok", "bad"), n=400)
    ctx = featurize_table(table)
    config = ReplayConfig(cost_weights=(0.0,))
    plain = replay_bandit(table, ctx, cost_weight=0.0, config=config)
    late = replay_bandit(table, ctx, cost_weight=0.0, config=ReplayConfig(
        cost_weights=(0.0,), changes=(Change("degrade", "good", 300),)))
    assert late.train_choices[:301] == plain.train_choices[:301]
    assert late.train_choices != plain.train_choices


def test_crossing_counts_decisions_over_a_trailing_window() -> None:
    r = change_response([0] * 200 + [1] * 200, 0, Change("degrade", "m", 200),
                        cost_weight=0.0, window=50)
    assert r.share_before == 1.0 and r.windows == (0.0, 0.0, 0.0, 0.0)
    assert r.decisions_to_cross == 46  # 4 of the last 50 are the model's: 8% < 10%
    r = change_response([1] * 100 + [0] * 100, 0, Change("add", "m", 100),
                        cost_weight=0.0, window=50)
    assert r.share_before == 0.0 and r.decisions_to_cross == 26  # 26 of 50 > 50%
    never = change_response([1] * 200, 0, Change("add", "m", 100), cost_weight=0.0,
                            window=50)
    assert never.decisions_to_cross is None


@pytest.mark.parametrize(("changes", "match"), [
    ((Change("degrade", "nobody", 10),), "no model 'nobody'"),
    ((Change("degrade", "good", 10**6),), "past the last"),
    ((Change("add", "good", 5), Change("add", "ok", 5)), "every model is added later"),
], ids=["unknown-model", "past-the-end", "nothing-at-first"])
def test_bad_changes_are_refused(changes: tuple[Change, ...], match: str) -> None:
    with pytest.raises(RequestError, match=match):
        replay(world(("good", "ok"), n=50), ReplayConfig(cost_weights=(0.0,), changes=changes))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"kind": "explode", "model": "m", "step": 1}, "kind must be one of"),
    ({"kind": "degrade", "model": "m", "step": -1}, "step must be >= 0"),
    ({"kind": "price", "model": "m", "step": 1}, "needs both prices"),
    ({"kind": "add", "model": "m", "step": 1, "input_price": 1.0, "output_price": 1.0},
     "needs both prices"),
    ({"kind": "price", "model": "m", "step": 1, "input_price": -1.0, "output_price": 1.0},
     "finite and >= 0"),
], ids=["kind", "step", "price-without-prices", "prices-without-price", "negative-price"])
def test_a_change_is_validated(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(RequestError, match=match):
        Change(**kwargs)  # type: ignore[arg-type]


def test_two_changes_of_one_kind_and_model_are_refused() -> None:
    with pytest.raises(RequestError, match="give one"):
        ReplayConfig(changes=(Change("add", "m", 1), Change("add", "m", 2)))
