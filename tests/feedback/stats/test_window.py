from __future__ import annotations

from datetime import datetime, timezone

import pytest

from feedback.stats.window import WindowError, window

NOW = datetime(2026, 3, 10, 12, 30, tzinfo=timezone.utc)


@pytest.mark.parametrize(("since", "until", "bucket", "field", "says"), [
    ("1h", "2h", None, "since", "must be before until"),
    ("yesterday", None, None, "since", "ISO 8601"),
    (None, "soon", None, "until", "ISO 8601"),
    ("500d", None, None, "since", "more than the 400 days"),
    ("2h", None, "7m", "bucket", "does not divide an hour"),
    ("2h", None, "30s", "bucket", "shorter than the smallest bucket"),
    ("2d", None, "90m", "bucket", "not a whole number of hours"),
    ("3d", None, "5m", "bucket", "kept for the last 2d"),
    ("3h", None, "1m", "bucket", "cover at most 2h"),
    ("300d", None, "1h", "bucket", "more than 1000"),
    ("2h", None, "fast", "bucket", "expected a duration"),
], ids=["reversed", "since-word", "until-word", "too-long", "7m", "30s", "90m",
        "minutes-too-old", "raw-too-long", "too-many", "bucket-word"])
def test_bad_windows_name_the_parameter(since: str | None, until: str | None,
                                        bucket: str | None, field: str, says: str) -> None:
    with pytest.raises(WindowError) as info:
        window(since=since, until=until, bucket=bucket, now=NOW)
    assert str(info.value).startswith(f"{field}: ")
    assert says in str(info.value)


@pytest.mark.parametrize(("since", "bucket", "size", "start"), [
    ("1h", "auto", 60, "2026-03-10T11:30:00+00:00"),
    ("6h", "auto", 300, "2026-03-10T06:30:00+00:00"),
    ("24h", "auto", 3600, "2026-03-09T12:00:00+00:00"),
    ("2d", "15m", 900, "2026-03-08T12:30:00+00:00"),
    ("7d", "auto", 3 * 3600, "2026-03-03T12:00:00+00:00"),
    ("30d", "auto", 86400, "2026-02-08T00:00:00+00:00"),
    ("2026-03-09T10:17:00Z", "1h", 3600, "2026-03-09T10:00:00+00:00"),
    ("2026-03-09T10:17:00", "3600", 3600, "2026-03-09T10:00:00+00:00"),
], ids=["1h", "6h", "24h", "15m", "7d", "30d", "iso", "naive-seconds"])
def test_buckets_and_alignment(since: str, bucket: str, size: int, start: str) -> None:
    w = window(since=since, until="now", bucket=bucket, now=NOW)
    assert (w.bucket_s, w.since.isoformat(), w.until) == (size, start, NOW)
    assert w.buckets[0] == w.start_s and w.buckets[-1] < NOW.timestamp()
