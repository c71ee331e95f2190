"""The exact-match response cache: what is cacheable, LRU bound, time to live."""

from __future__ import annotations

from typing import Any

import pytest

from serving.cache import CachedAnswer, ResponseCache, cache_key

BASE = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}


@pytest.mark.parametrize(
    ("change", "cacheable"),
    [({}, True), ({"temperature": 0.7}, False), ({"temperature": None}, False),
     ({"stream": True}, False), ({"n": 2}, False), ({"n": 1}, True)],
    ids=["t0", "t07", "no-temperature", "stream", "n2", "n1"],
)
def test_only_deterministic_requests_are_cacheable(change: dict[str, Any],
                                                   cacheable: bool) -> None:
    assert (cache_key({**BASE, **change}) is not None) is cacheable


def test_key_ignores_transport_fields_and_order() -> None:
    a = cache_key({**BASE, "user": "u1"})
    b = cache_key(dict(reversed(list({**BASE, "user": "u2"}.items()))))
    assert a == b
    assert a != cache_key({**BASE, "max_tokens": 5})


def test_lru_and_ttl() -> None:
    now = [0.0]
    cache = ResponseCache(max_entries=2, ttl_s=10, clock=lambda: now[0])
    for k in "abc":
        cache.put(k, CachedAnswer(k.encode(), "m", k))
    assert cache.get("a") is None and len(cache) == 2
    assert cache.get("b") is not None
    now[0] = 11
    assert cache.get("b") is None
    assert (cache.hits, cache.misses) == (1, 2)
