"""The time range and bucket size a stats question asks about, checked.

``since`` and ``until`` are ISO 8601 times (UTC when they carry no zone) or ages such as
``24h`` or ``7d`` (that long before now); ``until`` may also be ``now``. A bucket is a
duration (``5m``, ``1h``, ``1d`` or seconds) or ``auto``. Buckets are aligned to the Unix
epoch (days start at 00:00 UTC) and ``since`` is moved back to the start of its bucket,
so every bucket is whole except the last, which ends at ``until``.

Buckets of 5, 10, 15, 20 or 30 minutes read the 5-minute roll-ups, kept for the last
:data:`MINUTES_KEPT_S` (two days); other buckets under an hour (1 to 4, 6 or 12 minutes)
are summed from the raw tables and cover at most :data:`MAX_RAW_RANGE_S` (two hours);
an hour or more reads the hourly and daily roll-ups.

>>> from datetime import datetime, timezone
>>> now = datetime(2026, 1, 2, 12, 30, tzinfo=timezone.utc)
>>> w = window(since="24h", until=None, bucket="auto", now=now)
>>> w.since.isoformat(), w.bucket_s, len(w.buckets)
('2026-01-01T12:00:00+00:00', 3600, 25)
>>> window(since="2h", until=None, bucket="7m", now=now)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
feedback.stats.window.WindowError: bucket: 7m does not divide an hour (use 1m, 2m, ...)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from bandit.errors import RequestError

HOUR = 3600
DAY = 86400
MINUTE = 300  # the 5-minute roll-ups' period
MINUTES_KEPT_S = 2 * DAY  # how long they are kept
MIN_BUCKET_S = 60
MAX_BUCKETS = 1000
MAX_RANGE_S = 400 * DAY
MAX_RAW_RANGE_S = 2 * HOUR
DEFAULT_RANGE_S = DAY
#: The ``auto`` bucket: the smallest of these giving at most ``AUTO_BUCKETS`` buckets.
AUTO_LADDER = (60, MINUTE, HOUR, 3 * HOUR, 6 * HOUR, DAY, 7 * DAY, 30 * DAY)
AUTO_BUCKETS = 100

_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": HOUR, "d": DAY, "w": 7 * DAY}


class WindowError(RequestError):
    """A time range or bucket size the stats cannot answer (422, naming the parameter)."""


@dataclass(frozen=True)
class Window:
    """``[since, until)`` in buckets of ``bucket_s`` seconds; ``since`` on a bucket edge."""

    since: datetime
    until: datetime
    bucket_s: int

    @property
    def start_s(self) -> int:
        return int(self.since.timestamp())

    @property
    def end_s(self) -> float:
        return self.until.timestamp()

    @property
    def buckets(self) -> list[int]:
        """The start (Unix seconds) of every bucket, oldest first."""
        return list(range(self.start_s, math.ceil(self.end_s), self.bucket_s))


def duration_s(text: str, field: str) -> int:
    """``90s``, ``5m``, ``2h``, ``7d``, ``1w`` or a number of seconds."""
    raw = text.strip().lower()
    if raw.isdigit():
        return int(raw)
    m = _DURATION.match(raw)
    if m is None:
        raise WindowError(f"{field}: expected a duration like 5m, 1h or 7d; got {text!r}")
    return int(m.group(1)) * _UNIT_S[m.group(2)]


def label(seconds: int) -> str:
    """A duration as the shortest of ``Nd``, ``Nh``, ``Nm``, ``Ns``."""
    for unit, size in (("d", DAY), ("h", HOUR), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def when(text: str | datetime | None, field: str, now: datetime) -> datetime | None:
    """A time given as ISO 8601, an age before ``now`` (``24h``) or ``now``."""
    if text is None or isinstance(text, datetime):
        return _utc(text) if isinstance(text, datetime) else None
    raw = text.strip()
    if raw == "" or raw.lower() == "now":
        return None if raw == "" else now
    if _DURATION.match(raw.lower()):
        return now - timedelta(seconds=duration_s(raw, field))
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise WindowError(f"{field}: expected an ISO 8601 time (2026-01-31T12:00Z), an age "
                          f"like 24h or 7d, or now; got {text!r}") from None
    return _utc(value)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else \
        value.astimezone(timezone.utc)


def window(*, since: str | datetime | None, until: str | datetime | None,
           bucket: str | int | None, now: datetime) -> Window:
    """The checked window; raises :class:`WindowError` naming ``since``, ``until`` or
    ``bucket``."""
    end = when(until, "until", now) or now
    start = when(since, "since", now) or end - timedelta(seconds=DEFAULT_RANGE_S)
    if start.year < 1971 or end.year > 9000:
        raise WindowError("since: out of range" if start.year < 1971 else
                          "until: out of range")
    if start >= end:
        raise WindowError(f"since: must be before until ({start.isoformat()} is not before "
                          f"{end.isoformat()})")
    span = (end - start).total_seconds()
    if span > MAX_RANGE_S:
        raise WindowError(f"since: the range is {span / DAY:.0f} days, more than the "
                          f"{MAX_RANGE_S // DAY} days the stats answer")
    size = _bucket(bucket, span)
    aligned = datetime.fromtimestamp(int(start.timestamp()) // size * size, timezone.utc)
    n = math.ceil(span / size)  # (one more when since is moved back to a bucket edge)
    if n > MAX_BUCKETS:
        raise WindowError(f"bucket: {label(size)} over {label(int(span))} gives {n} buckets, "
                          f"more than {MAX_BUCKETS}; use a larger bucket")
    if size < HOUR and size % MINUTE == 0 and (now - aligned).total_seconds() > \
            MINUTES_KEPT_S:
        raise WindowError(f"bucket: {label(size)} buckets read the 5-minute roll-ups, kept "
                          f"for the last {label(MINUTES_KEPT_S)}; the range starts "
                          f"{label(int((now - start).total_seconds()) // 60 * 60)} ago: use "
                          f"a bucket of 1h or more")
    if size < HOUR and size % MINUTE and span > MAX_RAW_RANGE_S:
        raise WindowError(f"bucket: {label(size)} buckets are summed from the raw tables and "
                          f"cover at most {label(MAX_RAW_RANGE_S)}; the range is "
                          f"{label(int(span))}: use 5m buckets or more")
    return Window(since=aligned, until=end, bucket_s=size)


def _bucket(bucket: str | int | None, span: float) -> int:
    if bucket is None or (isinstance(bucket, str) and bucket.strip().lower() in ("", "auto")):
        for size in AUTO_LADDER:
            if span / size <= AUTO_BUCKETS and (size % MINUTE == 0 or span <= MAX_RAW_RANGE_S):
                return size
        return AUTO_LADDER[-1]
    size = bucket if isinstance(bucket, int) else duration_s(bucket, "bucket")
    shown = label(size) if size > 0 else str(bucket)
    if size < MIN_BUCKET_S:
        raise WindowError(f"bucket: {shown} is shorter than the smallest bucket, 1m")
    if size < HOUR and HOUR % size:
        divisors = [label(s) for s in range(60, HOUR, 60) if HOUR % s == 0]
        raise WindowError(f"bucket: {shown} does not divide an hour (use "
                          f"{', '.join(divisors[:-1])} or {divisors[-1]})")
    if size >= HOUR and size % HOUR:
        raise WindowError(f"bucket: {shown} is not a whole number of hours")
    return size


__all__ = ["DAY", "HOUR", "MAX_BUCKETS", "MAX_RAW_RANGE_S", "MINUTE", "MINUTES_KEPT_S",
           "Window", "WindowError",
           "duration_s", "label", "when", "window"]
