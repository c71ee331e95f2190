"""Which stretches of a window each level of roll-ups answers, and which the raw rows.

The roll-ups hold 5-minute periods (recent ones), hours and UTC days (:mod:`.rollup`).
A question's window is covered by the coarsest level that fits each stretch: whole
days from the days, whole hours from the hours, whole 5-minute periods from those, and
the rest (at least the hour still open) from the raw tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from feedback.stats.rollup import Horizons
from feedback.stats.window import DAY, HOUR, MINUTE, Window


@dataclass(frozen=True)
class Part:
    """A stretch of the window read from one level: ``d``, ``h``, ``m`` or ``raw``."""

    level: str
    start: float
    end: float


def _ceil(x: float, step: int) -> int:
    return math.ceil(x / step) * step


def _floor(x: float, step: int) -> int:
    return int(x // step) * step


def plan(w: Window, horizons: Horizons, *, series: bool) -> list[Part]:
    """Which stretches of ``w`` come from the daily, hourly and 5-minute roll-ups and
    which from the raw tables: the coarsest level that fits each stretch. A series reads
    a level only if its bucket is a whole number of that level's periods.

    >>> from datetime import datetime, timezone
    >>> from feedback.stats.window import window
    >>> now = datetime(2026, 1, 3, 12, 30, tzinfo=timezone.utc)
    >>> w = window(since="2d", until=None, bucket="1h", now=now)
    >>> hour = int(now.timestamp()) // 3600 * 3600
    >>> hz = Horizons(hours=hour, days=1767398400, minutes=(hour - 86400, hour))
    >>> [p.level for p in plan(w, hz, series=True)], [p.level for p in plan(w, hz, series=False)]
    (['h', 'raw'], ['h', 'd', 'h', 'raw'])
    >>> w = window(since="3h", until=None, bucket="5m", now=now)
    >>> [p.level for p in plan(w, hz, series=True)]
    ['m', 'raw']
    """
    size = w.bucket_s
    levels: list[tuple[str, int, int | None, int]] = []  # coarse to fine: name, period,
    if horizons.days is not None and (not series or size % DAY == 0):  # first, end
        levels.append(("d", DAY, None, horizons.days))
    if horizons.hours is not None and (not series or size % HOUR == 0):
        levels.append(("h", HOUR, None, horizons.hours))
    if horizons.minutes is not None and (not series or size % MINUTE == 0):
        levels.append(("m", MINUTE, *horizons.minutes))
    return _cover(float(w.start_s), w.end_s, levels)


def _cover(lo: float, hi: float, levels: list[tuple[str, int, int | None, int]]
           ) -> list[Part]:
    if lo >= hi:
        return []
    if not levels:
        return [Part("raw", lo, hi)]
    (name, period, first, end), finer = levels[0], levels[1:]
    a = _ceil(lo if first is None else max(lo, first), period)
    b = min(_floor(hi, period), end)
    if b <= a:
        return _cover(lo, hi, finer)
    return [*_cover(lo, a, finer), Part(name, a, b), *_cover(b, hi, finer)]


__all__ = ["Part", "plan"]
