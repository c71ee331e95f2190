"""The stats of seven decisions (tests/stats_seed.py), computed by hand, on both databases.

Since 2026-03-08 00:00 until 2026-03-10 12:30 in daily buckets: d1-d4 (acme) on the 8th,
d5 and the shadow d6 (globex) on the 9th, d7 (acme) at 12:10 on the 10th, in the hour
the roll-ups do not hold yet (read from the raw tables).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace

import pytest

from feedback.stats import Reference, Stats, window
from feedback.stats.bins import LATENCY_ERROR, bin_ms
from feedback.store import Store
from tests import stats_seed
from tests.databases import BACKENDS, database_url

NOW = stats_seed.NOW
BIG = Reference("big", *stats_seed.PRICES["big"])


@pytest.fixture(scope="module", params=BACKENDS)
def stats(request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stats]:
    # Read only: one seeded database per backend for the module.
    for url in database_url(request.param, tmp_path_factory.mktemp("stats")):
        store = Store(url)
        stats_seed.small(store)
        s = Stats(store.engine)
        s.rollup.refresh(now=NOW)
        yield s
        store.close()


def days(since: str = "2026-03-08T00:00Z") -> object:
    return window(since=since, until=NOW, bucket="1d", now=NOW)


def approx(x: object) -> object:
    return pytest.approx(x, rel=1e-9, abs=1e-12)


def test_traffic(stats: Stats) -> None:
    t = stats.traffic(days())
    assert t.span.buckets == [1772928000, 1773014400, 1773100800]  # the 8th, 9th, 10th
    assert t.span.rolled_up_until == "2026-03-10T12:00:00+00:00"
    assert t.decisions == {"cheap": [2, 1, 1], "big": [2, 0, 0]}
    assert (t.models, t.kinds, t.shadow) == (["cheap", "big"], {"policy": 5, "failover": 1}, 1)


def test_kinds_top_and_the_rest(stats: Stats) -> None:
    k = stats.kinds(days(), limit=2)
    math_kind, untagged = k.kinds
    assert (math_kind.kind, math_kind.decisions, math_kind.scored) == ("math", 3, 3)
    assert math_kind.mean_score == approx((1.0 + 0.5 + 0.0) / 3)
    assert math_kind.cost_usd == approx(0.0003 + 0.003 + 0.00002)
    assert [(m.model, m.decisions) for m in math_kind.models] == [("cheap", 2), ("big", 1)]
    # ties break by name: "" (no task tag, d5) before "code" (d3)
    assert (untagged.kind, untagged.decisions, untagged.mean_score) == ("", 1, approx(0.2))
    assert (k.other_kinds, k.other_decisions) == (1, 1)


def test_feedback(stats: Stats) -> None:
    f = stats.feedback(days())
    assert (f.decisions, f.scored, f.coverage) == ([4, 1, 1], [3, 1, 1], [0.75, 1.0, 1.0])
    assert f.mean_score["big"] == [approx(0.65), None, None]
    cheap, big = f.models
    assert (cheap.model, cheap.decisions, cheap.scored) == ("cheap", 4, 3)
    assert (cheap.mean_score, cheap.mean_reward) == (approx(0.4), approx(0.3))
    assert (big.coverage, big.mean_score, big.mean_reward) == (1.0, approx(0.65), approx(0.35))


def test_spend_and_saving_against_the_reference(stats: Stats) -> None:
    s = stats.spend(days(), reference=BIG)
    by = {m.model: m for m in s.models}
    # cheap: d1 (1000 in, 500 out), d3 (1000, 0), d5 (500, 100, from feedback), d7 (200, 0)
    assert (by["cheap"].input_tokens, by["cheap"].output_tokens) == (2700, 600)
    assert by["cheap"].reference_cost_usd == approx((2700 * 10 + 600 * 40) / 1e6)
    assert by["cheap"].priced_cost_usd == approx(0.0003 + 0.0001 + 0.0002 + 0.00002)
    assert by["big"].saving_usd == approx((2000 * 10 + 600 * 40) / 1e6 - 0.0044)
    assert s.total_cost_usd == approx(0.00502)
    assert s.saving_usd_total == approx(0.095 - 0.00502)
    assert s.saving_share == approx((0.095 - 0.00502) / 0.095)
    assert s.saving_usd == [approx(0.0297 + 0.027 + 0.0099 + 0.0126), approx(0.0088),
                            approx(0.00198)]
    assert s.cost_usd["big"] == [approx(0.0044), 0.0, 0.0]
    assert s.unpriced == 0 and "same" not in s.method and "reference" in s.method


def test_latency_percentiles_from_bins(stats: Stats) -> None:
    lat = {m.model: m for m in stats.latency(days()).models}
    # successful calls: big 1000 and 2000 ms, cheap 100 ms (d3 failed, d7 was rejected)
    assert (lat["big"].calls, lat["cheap"].calls) == (2, 1)
    for got, exact in ((lat["big"].p50_ms, 1000), (lat["big"].p95_ms, 2000),
                       (lat["cheap"].p50_ms, 100), (lat["big"].ttft_p95_ms, 300),
                       (lat["cheap"].ttft_p50_ms, 40)):
        assert got is not None and abs(got / exact - 1) <= LATENCY_ERROR
    assert lat["big"].p50_ms == round(bin_ms(39), 1)  # 4 * log2(1000) = 39.86


def test_errors_and_failovers(stats: Stats) -> None:
    e = stats.errors(days())
    assert e.outcomes == [4, 0, 1] and e.failovers == [1, 0, 0]
    assert e.statuses == {"error": [1, 0, 0], "ok": [3, 0, 0], "rejected": [0, 0, 1]}
    cheap, big = e.models
    assert (cheap.model, cheap.statuses, cheap.error_rate) == (
        "cheap", {"error": 1, "ok": 1, "rejected": 1}, approx(2 / 3))
    assert (big.outcomes, big.error_rate, big.failovers) == (2, 0.0, 1)


def test_exploration_and_propensities(stats: Stats) -> None:
    x = stats.exploration(days())
    # d2 took big at 0.3 while cheap had 0.7; d7's 0.5 ties the best: not exploratory
    assert (x.decisions, x.exploratory) == ([3, 1, 1], [1, 0, 0])
    assert x.share == [approx(1 / 3), 0.0, 0.0]
    counted = {(b.low, b.high): b.decisions for b in x.propensities if b.decisions}
    assert counted == {(0.3, 0.35): 1, (0.5, 0.55): 1, (0.6, 0.65): 1, (0.7, 0.75): 1,
                       (0.9, 0.95): 1}


def test_versions_as_the_log_saw_them(stats: Stats) -> None:
    v = stats.versions(days())
    assert v.decisions == {"v1": [4, 0, 0], "v2": [0, 1, 1]}  # v3 only shadowed
    v1, v2 = v.used
    assert (v1.version, v1.scored, v1.mean_score) == ("v1", 3, approx((1 + 0.5 + 0.8) / 3))
    assert (v2.first_bucket, v2.last_bucket, v2.mean_score) == (1773014400, 1773100800,
                                                               approx(0.1))


def test_learner(stats: Stats) -> None:
    lr = stats.learner(days())
    assert (lr.decisions, lr.waiting, lr.unlearned, lr.last_checkpoint) == (6, 1, 5, None)
    assert lr.newest_feedback is not None


def test_a_tenant_sees_only_its_own(stats: Stats) -> None:
    assert stats.traffic(days(), tenant="acme").decisions == {"cheap": [2, 0, 1],
                                                              "big": [2, 0, 0]}
    globex = stats.feedback(days(), tenant="globex")
    assert (globex.decisions, [m.model for m in globex.models]) == ([0, 1, 0], ["cheap"])
    assert stats.spend(days(), tenant="globex", reference=BIG).total_cost_usd == approx(0.0002)
    assert stats.learner(days(), tenant="globex").unlearned == 1
    assert stats.kinds(days(), tenant="nobody").kinds == []
    assert stats.tenants() == ["acme", "globex"]


@pytest.mark.parametrize("bucket", ["1d", "1h", "15m"])
def test_rollups_and_raw_rows_agree(store: Store, bucket: str) -> None:
    stats_seed.small(store)
    s = Stats(store.engine)
    since = "2026-03-10T07:00Z" if bucket == "15m" else "2026-03-08T00:00Z"
    w = window(since=since, until=NOW, bucket=bucket, now=NOW)
    raw = [s.traffic(w), s.feedback(w), s.spend(w, reference=BIG), s.latency(w),
           s.errors(w), s.exploration(w), s.versions(w), s.kinds(w)]
    assert raw[0].span.rolled_up_until is None
    s.rollup.refresh(now=NOW)
    rolled = [s.traffic(w), s.feedback(w), s.spend(w, reference=BIG), s.latency(w),
              s.errors(w), s.exploration(w), s.versions(w), s.kinds(w)]
    for a, b in zip(raw, rolled, strict=True):
        assert replace(a, span=b.span) == _rounded(b, a)


def _rounded(b: object, a: object) -> object:
    # Sums of floats in another order: equal to the last few bits.
    def close(x: object, y: object) -> object:
        if isinstance(x, float) and isinstance(y, float):
            return y if math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-15) else x
        if isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
            return [close(p, q) for p, q in zip(x, y, strict=True)]
        if isinstance(x, dict) and isinstance(y, dict) and x.keys() == y.keys():
            return {k: close(x[k], y[k]) for k in x}
        if hasattr(x, "__dataclass_fields__") and type(x) is type(y):
            return replace(x, **{f: close(getattr(x, f), getattr(y, f))  # type: ignore[arg-type]
                                 for f in x.__dataclass_fields__})
        return x

    return close(b, a)
