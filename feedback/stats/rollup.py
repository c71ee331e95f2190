"""The roll-ups: every closed hour (and day) of decisions, outcomes and feedback, summed.

Three grains: 5-minute periods (``m``, kept for the last :data:`MINUTES_KEPT_S`, for
buckets under an hour), hours (``h``) and UTC days (``d``). :meth:`Rollup.refresh`
builds, oldest first, each hour that has closed (ended :data:`SETTLE_S` ago) and is not
built yet: one pass over its raw rows (into 5-minute rows when the hour is recent, the
hour's rows then summed from them), then each whole day from its hours. It also
rebuilds an hour that changed since it was built: feedback or an outcome committed since
the previous refresh (minus :data:`OVERLAP_S`, for commits in flight), decisions written
late, and, every refresh, the :data:`SWEEP` hours built longest ago, so that anything
else that changed an old hour (a record written after a long outage) is picked up within
a bounded time. An hour is rebuilt in one transaction, from the raw rows, so a rebuild
is always safe to repeat.

Questions read the roll-ups for the hours and days built so far (:meth:`horizons`) and
the raw rows for the rest: the current hour, and more while a first build catches up.
On PostgreSQL one process refreshes at a time (an advisory lock); the others skip.
:class:`Refresher` runs :meth:`Rollup.refresh` in a thread of the service.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, text

from feedback.errors import StoreError
from feedback.models import UTCDateTime, utcnow
from feedback.stats.connections import connection
from feedback.stats.sources import SOURCES, TABLES, Dialect, raw_select
from feedback.stats.window import DAY, HOUR, MINUTE, MINUTES_KEPT_S

log = logging.getLogger("routebandit.stats")

SETTLE_S = 120  # an hour is built once it ended this long ago (writes in flight land)
OVERLAP_S = 900  # changes are looked for this far before the previous refresh
SWEEP = 2  # hours rebuilt every refresh, longest-built first
ANALYZE_AFTER = 24  # hours built in one refresh after which the tables are analysed
_LOCK_KEY = 0x73746174  # "stat": the advisory lock serialising refreshes (PostgreSQL)
_STATE = "refresh"


@dataclass(frozen=True)
class Horizons:
    """Hours before ``hours`` and days before ``days`` are in the roll-ups, and 5-minute
    periods in ``[minutes[0], minutes[1])`` (Unix seconds; ``None``: none are)."""

    hours: int | None
    days: int | None
    minutes: tuple[int, int] | None = None


@dataclass(frozen=True)
class RefreshResult:
    hours: int  # hours built or rebuilt
    days: int
    seconds: float
    skipped: bool = False  # another process was refreshing


def _dt(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


def _ts(name: str, value: datetime) -> Any:
    return bindparam(name, value, type_=UTCDateTime())


class Rollup:
    """Builds and reads the roll-up tables of one database (a :class:`~feedback.store.Store`'s
    engine)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = Dialect(engine.dialect.name)
        self._lock = threading.Lock()

    # -- reading -----------------------------------------------------------------------
    def horizons(self, conn: Connection) -> Horizons:
        rows = {g: (lo, hi) for g, lo, hi in conn.execute(text(
            "SELECT grain, MIN(start), MAX(start) FROM stats_periods GROUP BY grain"))}
        h, d, m = rows.get("h"), rows.get("d"), rows.get("m")  # m: hours built in minutes
        return Horizons(hours=None if h is None else int(h[1]) + HOUR,
                        days=None if d is None else int(d[1]) + DAY,
                        minutes=None if m is None else (int(m[0]), int(m[1]) + HOUR))

    def last_refresh(self, conn: Connection) -> datetime | None:
        value: datetime | None = conn.execute(
            text("SELECT at FROM stats_state WHERE name = :n").bindparams(n=_STATE)
            .columns(at=UTCDateTime())).scalar()
        return value

    # -- building ----------------------------------------------------------------------
    def refresh(self, *, now: datetime | None = None, sweep: int = SWEEP,
                max_hours: int | None = None) -> RefreshResult:
        """Build what is missing and rebuild what changed (see the module docstring).

        ``max_hours`` bounds the hours built in this call (a first build over a large
        database then spreads over several calls). Raises :class:`StoreError`.
        """
        started = time.perf_counter()
        with self._lock, self._exclusive() as mine:
            if not mine:
                return RefreshResult(0, 0, time.perf_counter() - started, skipped=True)
            now = now or utcnow()
            hours, days = self._refresh(now, sweep, max_hours)
        return RefreshResult(hours, days, time.perf_counter() - started)

    @contextmanager
    def _exclusive(self) -> Iterator[bool]:
        if self.dialect.name != "postgresql":
            yield True
            return
        # A connection of its own, outside any transaction, holds the lock throughout.
        with connection(self.engine.execution_options(isolation_level="AUTOCOMMIT"),
                        tune=False) as conn:
            got = bool(conn.exec_driver_sql("SELECT pg_try_advisory_lock(%s)",
                                            (_LOCK_KEY,)).scalar())
            try:
                yield got
            finally:
                if got:
                    conn.exec_driver_sql("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))

    def _refresh(self, now: datetime, sweep: int, max_hours: int | None) -> tuple[int, int]:
        closed = (int(now.timestamp()) - SETTLE_S) // HOUR * HOUR  # hours before: closed
        with connection(self.engine) as conn:
            first: datetime | None = conn.execute(
                text("SELECT MIN(created_at) AS first FROM decisions")
                .columns(first=UTCDateTime())).scalar()
            previous = self.last_refresh(conn)
            built = {int(s) for s, in conn.execute(text(
                "SELECT start FROM stats_periods WHERE grain = 'h'"))}
            missing: set[int] = set()
            if first is not None:
                first_h = int(first.timestamp()) // HOUR * HOUR
                missing = {h for h in range(first_h, closed, HOUR) if h not in built}
            # Hours without a decision are only marked built (one statement for all).
            busy = self._busy_hours(conn, min(missing), closed) if missing else set()
            to_build = sorted(missing & busy)
            if max_hours is not None:
                left, to_build = to_build[max_hours:], to_build[:max_hours]
            else:
                left = []
            # ...up to the first busy hour left for a later call: built hours stay a prefix.
            empty = sorted(h for h in missing - busy if not left or h < left[0])
            todo = set(to_build)
            if previous is not None and built:
                since = previous - timedelta(seconds=OVERLAP_S)
                todo |= {h for h in self._changed_hours(conn, since) if h in built}
                late = int(since.timestamp()) // HOUR * HOUR
                todo |= {h for h in built if h >= late}
            if sweep > 0 and built and not missing:  # caught up: check old hours too
                todo |= {int(s) for s, in conn.execute(text(
                    "SELECT start FROM stats_periods WHERE grain = 'h' "
                    "ORDER BY built_at, start LIMIT :k").bindparams(k=sweep))}
            # Recent hours built without their 5-minute rows get them.
            recent = self._minutes_from(now)
            in_minutes = {int(s) for s, in conn.execute(text(
                "SELECT start FROM stats_periods WHERE grain = 'm'"))}
            todo |= {h for h in built if h >= recent and h not in in_minutes}
        ordered = sorted(h for h in todo if h < closed)
        self._mark_empty(empty, now, recent)
        for h in ordered:
            self._build_hour(h, now, minutes=h >= recent)
        self._prune_minutes(recent)
        built |= set(ordered) | set(empty)
        days_built = self._build_days(built, {h // DAY * DAY for h in ordered}, now)
        if len(ordered) >= ANALYZE_AFTER:  # a first build: the planner has no statistics
            with connection(self.engine, write=True) as conn:
                for table in (*TABLES, "stats_periods"):
                    conn.execute(text(f"ANALYZE {table}"))
        if not left:
            with connection(self.engine, write=True) as conn:
                conn.execute(text("DELETE FROM stats_state WHERE name = :n").bindparams(
                    n=_STATE))
                conn.execute(text("INSERT INTO stats_state (name, at) VALUES (:n, :at)")
                             .bindparams(_ts("at", now), n=_STATE))
        return len(ordered), days_built

    def _busy_hours(self, conn: Connection, lo: int, hi: int) -> set[int]:
        """The hours in ``[lo, hi)`` with at least one decision."""
        hour = f"({self.dialect.epoch('created_at')} / {HOUR}) * {HOUR}"
        stmt = text(f"SELECT DISTINCT {hour} FROM decisions WHERE created_at >= :lo "
                    f"AND created_at < :hi").bindparams(_ts("lo", _dt(lo)), _ts("hi", _dt(hi)))
        return {int(h) for h, in conn.execute(stmt)}

    def _mark_empty(self, hours: list[int], now: datetime, recent: int) -> None:
        """Record hours without decisions as built (recent ones in 5-minute rows too)."""
        if not hours:
            return
        rows = [{"g": "h", "s": h} for h in hours]
        rows += [{"g": "m", "s": h} for h in hours if h >= recent]
        with connection(self.engine, write=True) as conn:
            conn.execute(text("INSERT INTO stats_periods (grain, start, built_at) "
                              "VALUES (:g, :s, :at)").bindparams(_ts("at", now)), rows)

    def _changed_hours(self, conn: Connection, since: datetime) -> set[int]:
        """Hours of the decisions that got feedback or an outcome at ``since`` or later."""
        hour = f"({self.dialect.epoch('d.created_at')} / {HOUR}) * {HOUR}"
        out: set[int] = set()
        for table in ("feedback", "outcomes"):
            stmt = text(f"SELECT DISTINCT {hour} FROM {table} x JOIN decisions d "
                        f"ON d.id = x.decision_id WHERE x.created_at >= :since")
            out |= {int(h) for h, in conn.execute(stmt.bindparams(_ts("since", since)))}
        return out

    @staticmethod
    def _minutes_from(now: datetime) -> int:
        """The first hour whose 5-minute rows are kept."""
        return (int(now.timestamp()) - MINUTES_KEPT_S) // HOUR * HOUR

    def _build_hour(self, start: int, now: datetime, *, minutes: bool) -> None:
        """One hour from its raw rows, in one transaction: with ``minutes``, into 5-minute
        rows first and the hour's rows summed from them."""
        end = start + HOUR
        grain, size = ("m", MINUTE) if minutes else ("h", HOUR)
        with connection(self.engine, write=True) as conn:
            for table in TABLES:
                conn.execute(text(f"DELETE FROM {table} WHERE (grain = 'h' AND start = :s) "
                                  f"OR (grain = 'm' AND start >= :s AND start < :e)")
                             .bindparams(s=start, e=end))
            empty = conn.execute(text(
                "SELECT 1 FROM decisions WHERE created_at >= :lo AND created_at < :hi "
                "LIMIT 1").bindparams(_ts("lo", _dt(start)), _ts("hi", _dt(end)))
            ).first() is None
            for source in () if empty else SOURCES:
                cols = ", ".join(["grain", "start", *source.keys, *source.measure_names])
                select = raw_select(source, self.dialect, grain_s=size, lo="lo", hi="hi")
                conn.execute(text(f"INSERT INTO {source.table} ({cols}) "
                                  f"SELECT '{grain}', r.* FROM ({select}) r").bindparams(
                    _ts("lo", _dt(start)), _ts("hi", _dt(end))))
            if minutes and not empty:
                for table, (keys, measures) in TABLES.items():
                    self._sum_into(conn, table, keys, measures, "h", start, "m", end)
            self._mark(conn, "h", start, now)
            if minutes:
                self._mark(conn, "m", start, now)
            else:
                conn.execute(text("DELETE FROM stats_periods WHERE grain = 'm' AND "
                                  "start = :s").bindparams(s=start))

    @staticmethod
    def _sum_into(conn: Connection, table: str, keys: tuple[str, ...],
                  measures: tuple[str, ...], grain: str, start: int, source: str,
                  end: int) -> None:
        """``table``'s ``grain`` row at ``start``: its ``source`` rows up to ``end`` summed."""
        k = ", ".join(keys)
        sums = ", ".join(f"SUM({m})" for m in measures)
        conn.execute(text(
            f"INSERT INTO {table} (grain, start, {k}, {', '.join(measures)}) "
            f"SELECT '{grain}', :s, {k}, {sums} FROM {table} WHERE grain = '{source}' "
            f"AND start >= :s AND start < :e GROUP BY {k}").bindparams(s=start, e=end))

    def _prune_minutes(self, first: int) -> None:
        """Drop the 5-minute rows of hours before ``first``."""
        with connection(self.engine, write=True) as conn:
            for table in TABLES:
                conn.execute(text(f"DELETE FROM {table} WHERE grain = 'm' AND start < :s")
                             .bindparams(s=first))
            conn.execute(text("DELETE FROM stats_periods WHERE grain = 'm' AND start < :s")
                         .bindparams(s=first))

    def _build_days(self, built: set[int], changed: set[int], now: datetime) -> int:
        """(Re)build the days whose hours changed, and every whole day not built yet."""
        with connection(self.engine) as conn:
            have = {int(s) for s, in conn.execute(text(
                "SELECT start FROM stats_periods WHERE grain = 'd'"))}
        if not built:
            return 0
        last = max(built) + HOUR  # hours before this are built
        first = min(built) // DAY * DAY
        days = [d for d in range(first, last, DAY)
                if d + DAY <= last and (d in changed or d not in have)]
        for day in days:
            with connection(self.engine, write=True) as conn:
                for table, (keys, measures) in TABLES.items():
                    conn.execute(text(f"DELETE FROM {table} WHERE grain = 'd' AND start = :s")
                                 .bindparams(s=day))
                    self._sum_into(conn, table, keys, measures, "d", day, "h", day + DAY)
                self._mark(conn, "d", day, now)
        return len(days)

    def _mark(self, conn: Connection, grain: str, start: int, now: datetime) -> None:
        conn.execute(text("DELETE FROM stats_periods WHERE grain = :g AND start = :s")
                     .bindparams(g=grain, s=start))
        conn.execute(text("INSERT INTO stats_periods (grain, start, built_at) "
                          "VALUES (:g, :s, :at)").bindparams(_ts("at", now), g=grain,
                                                             s=start))

    def clear(self) -> None:
        """Forget every roll-up (the next refresh rebuilds them all)."""
        with connection(self.engine, write=True) as conn:
            for table in (*TABLES, "stats_periods", "stats_state"):
                conn.execute(text(f"DELETE FROM {table}"))


class Refresher:
    """Calls :meth:`Rollup.refresh` every ``interval_s`` seconds in a daemon thread.

    A failed refresh is logged and retried at the next interval (the questions read the
    raw rows for what the roll-ups lack, so answers stay right, only slower).
    """

    def __init__(self, rollup: Rollup, *, interval_s: float = 60.0,
                 max_hours: int | None = 24,
                 on_refresh: Callable[[RefreshResult], None] | None = None) -> None:
        self.rollup = rollup
        self.interval_s = interval_s
        self.max_hours = max_hours
        self.on_refresh = on_refresh
        self.failures = 0
        self.last: RefreshResult | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="routebandit-stats",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        wait = 0.0
        while not self._stop.wait(wait):
            wait = self.interval_s
            try:
                result = self.rollup.refresh(max_hours=self.max_hours)
            except StoreError as exc:
                self.failures += 1
                log.error("stats roll-up refresh failed (retried in %.0f s): %s",
                          self.interval_s, exc)
                continue
            except Exception:  # the thread's top level: report it, try again later
                self.failures += 1
                log.exception("stats roll-up refresh failed (retried in %.0f s)",
                              self.interval_s)
                continue
            self.last = result
            if self.on_refresh is not None:
                self.on_refresh(result)
            if self.max_hours is not None and result.hours >= self.max_hours:
                wait = 0.0  # a first build catching up: carry on at once


__all__ = ["OVERLAP_S", "SETTLE_S", "Horizons", "RefreshResult", "Refresher", "Rollup"]
