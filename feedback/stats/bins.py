"""Histogram bins the roll-ups count latencies and propensities in.

Latencies (ms) fall in log-spaced bins, four per doubling: bin ``k`` holds
``[2**(k/4), 2**((k+1)/4))``, bin 0 everything under 2**(1/4) ms and the last bin
everything from 2**20 ms (17 minutes) on. A percentile read from them is the geometric
middle of its bin, within 9 % of the exact value. Propensities fall in 20 bins of 0.05.

>>> latency_bin(1000.0), round(bin_ms(latency_bin(1000.0)))
(39, 939)
>>> propensity_bin(0.5), propensity_bin(1.0), propensity_range(19)
(10, 19, (0.95, 1.0))
"""

from __future__ import annotations

import math
from collections.abc import Callable

STEPS_PER_DOUBLING = 4
LATENCY_BINS = 81  # bins 0..80; 80 holds 2**20 ms and more
PROPENSITY_BINS = 20
#: The largest relative error of a percentile read from a latency bin (2**(1/8) - 1).
LATENCY_ERROR = 2 ** (1 / (2 * STEPS_PER_DOUBLING)) - 1

_TOP = LATENCY_BINS - 1
_TOP_MS = 2.0 ** (_TOP / STEPS_PER_DOUBLING)
_SCALE = STEPS_PER_DOUBLING / math.log(2)


def latency_bin(ms: float) -> int:
    """The bin of a latency in milliseconds (what :func:`latency_bin_sql` computes)."""
    if ms < 1:
        return 0
    if ms >= _TOP_MS:
        return _TOP
    return int(math.log(ms) * _SCALE)


def bin_ms(k: int) -> float:
    """The value a percentile falling in latency bin ``k`` reads as (its geometric middle)."""
    return float(2.0 ** ((k + 0.5) / STEPS_PER_DOUBLING))


def latency_bin_sql(expr: str, floor: Callable[[str], str]) -> str:
    """SQL computing :func:`latency_bin` of ``expr``; ``floor`` writes the SQL of the
    integer part of a non-negative number (``ln`` is PostgreSQL's and SQLite's; the store
    registers one on SQLite builds without math functions)."""
    return (f"CASE WHEN {expr} < 1 THEN 0 WHEN {expr} >= {_TOP_MS!r} THEN {_TOP} "
            f"ELSE {floor(f'ln({expr}) * {_SCALE!r}')} END")


def propensity_bin(p: float) -> int:
    return min(int(p * PROPENSITY_BINS), PROPENSITY_BINS - 1)


def propensity_bin_sql(expr: str, floor: Callable[[str], str]) -> str:
    return (f"CASE WHEN {expr} >= 1 THEN {PROPENSITY_BINS - 1} "
            f"ELSE {floor(f'{expr} * {PROPENSITY_BINS}')} END")


def propensity_range(k: int) -> tuple[float, float]:
    """The propensities bin ``k`` holds, ``[low, high)`` (the last includes 1)."""
    return (round(k / PROPENSITY_BINS, 10), round((k + 1) / PROPENSITY_BINS, 10))


__all__ = ["LATENCY_BINS", "LATENCY_ERROR", "PROPENSITY_BINS", "bin_ms", "latency_bin",
           "latency_bin_sql", "propensity_bin", "propensity_bin_sql", "propensity_range"]
