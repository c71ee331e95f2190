from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from feedback.stats import Stats, window
from feedback.stats.bins import latency_bin, propensity_bin
from feedback.stats.rollup import Horizons
from feedback.stats.sources import Dialect
from feedback.store import Store
from tests import stats_seed
from tests.databases import database_url

NOW = stats_seed.NOW


def test_sql_bins_are_the_python_bins(store: Store) -> None:
    sql = Dialect(store.dialect)
    values = [0.0, 0.5, 1.0, 1.1, 1.2, 2.0, 39.9, 40.0, 99.99, 1000.0, 2047.9, 2048.0,
              123456.7, 1048575.9, 1048576.0, 5e7]
    with store.engine.connect() as conn:
        for v in values:
            got = conn.execute(text(f"SELECT {sql.snippets()['latency_bin']}".replace(
                "COALESCE(o.latency_ms, f.latency_ms)", ":v")), {"v": v}).scalar()
            assert got == latency_bin(v), v
        for p in (0.0, 0.049, 0.05, 0.33, 0.5, 0.7, 0.999, 1.0):
            got = conn.execute(text(f"SELECT {sql.snippets()['propensity_bin']}".replace(
                "d.probability", ":p")), {"p": p}).scalar()
            assert got == propensity_bin(p), p


def test_refresh_builds_closed_hours_and_days(store: Store) -> None:
    stats_seed.small(store)
    s = Stats(store.engine)
    result = s.rollup.refresh(now=NOW)
    # 2026-03-08 10:00 (the first decision's hour) up to 2026-03-10 12:00 is built: the
    # three hours with decisions from their rows, the 47 others only marked; two days.
    assert (result.hours, result.days, result.skipped) == (3, 2, False)
    with store.engine.connect() as conn:
        # 5-minute rows for the hours of the last two days: 2026-03-08 12:00 on
        assert s.rollup.horizons(conn) == Horizons(hours=1773144000, days=1773100800,
                                                   minutes=(1772971200, 1773144000))
    again = s.rollup.refresh(now=NOW, sweep=0)
    # What changed since the last refresh is rebuilt: here the hours of d1, d2, d4 and d5
    # (on two days), whose feedback the store stamped with the real clock, after NOW.
    assert (again.hours, again.days) == (3, 2)
    # The sweep adds the hours built longest ago (all at NOW here: the first by start,
    # 10:00 to 14:00 on the 8th, two of which changed anyway).
    assert s.rollup.refresh(now=NOW, sweep=5).hours == 3 + 5 - 2
    # Two days later the 5-minute rows of those hours are gone (the hours stay).
    s.rollup.refresh(now=NOW + timedelta(days=2), sweep=0)
    with store.engine.connect() as conn:
        hz = s.rollup.horizons(conn)
        kept = conn.execute(text("SELECT MIN(start) FROM stats_traffic WHERE grain = 'm'"))
        assert hz.minutes is not None and hz.minutes[0] == 1773144000
        assert kept.scalar() == 1773144600  # d7's period (12:10): the oldest kept


def test_late_feedback_rebuilds_its_hour(store: Store) -> None:
    stats_seed.small(store)
    s = Stats(store.engine)
    s.rollup.refresh(now=NOW)
    w = window(since="2026-03-08T00:00Z", until=NOW, bucket="1d", now=NOW)
    assert s.feedback(w).scored == [3, 1, 1]
    store.record_feedback(decision_id="d3", tenant="acme", score=0.3, reward=0.1,
                          reward_cost_usd=0.0001, reward_latency_ms=5000)
    assert s.feedback(w).scored == [3, 1, 1]  # the roll-up of d3's hour is stale...
    s.rollup.refresh(now=NOW + timedelta(minutes=1), sweep=0)
    assert s.feedback(w).scored == [4, 1, 1]  # ...until the next refresh


def test_a_first_build_can_be_spread_over_several_refreshes(store: Store) -> None:
    stats_seed.small(store)
    s = Stats(store.engine)
    w = window(since="2026-03-08T00:00Z", until=NOW, bucket="1h", now=NOW)
    raw = s.traffic(w).decisions
    assert s.rollup.refresh(now=NOW, max_hours=2).hours == 2
    with store.engine.connect() as conn:  # built: every hour before the third busy one
        assert s.rollup.horizons(conn).hours == 1773046800  # 2026-03-09 09:00
    assert s.traffic(w).decisions == raw
    assert s.rollup.refresh(now=NOW, max_hours=2).hours == 1
    assert s.traffic(w).decisions == raw


@pytest.mark.postgres
def test_one_process_refreshes_at_a_time(tmp_path: Path) -> None:
    urls = database_url("postgres", tmp_path)
    url = next(urls)
    store = Store(url)
    try:
        other = create_engine(url)
        with other.connect() as conn:
            conn.exec_driver_sql("SELECT pg_advisory_lock(%s)", (0x73746174,))
            assert Stats(store.engine).rollup.refresh(now=NOW).skipped
            conn.exec_driver_sql("SELECT pg_advisory_unlock(%s)", (0x73746174,))
        other.dispose()
        assert not Stats(store.engine).rollup.refresh(now=NOW).skipped
    finally:
        store.close()
        next(urls, None)
