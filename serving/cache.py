"""Exact-match response cache for deterministic requests (``temperature`` 0), off by default.

Keys hash the whole request as sent by the client (minus transport-only fields), so two
requests share an answer only when every field that can change it is equal.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

_IGNORED = frozenset({"stream", "stream_options", "user"})


@dataclass(frozen=True)
class CachedAnswer:
    body: bytes
    model: str
    decision_id: str


def cache_key(body: Mapping[str, Any]) -> str | None:
    """The key of a cacheable request, or None (non-zero temperature, n > 1, streamed)."""
    if body.get("stream") or body.get("temperature") not in (0, 0.0):
        return None
    if body.get("n") not in (None, 1):
        return None
    blob = json.dumps({k: v for k, v in body.items() if k not in _IGNORED},
                      sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class ResponseCache:
    """A bounded LRU with a time-to-live per entry."""

    def __init__(self, *, max_entries: int = 1024, ttl_s: float = 3600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, CachedAnswer]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> CachedAnswer | None:
        item = self._items.get(key)
        if item is None or item[0] < self._clock():
            if item is not None:
                del self._items[key]
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return item[1]

    def put(self, key: str, answer: CachedAnswer) -> None:
        self._items[key] = (self._clock() + self.ttl_s, answer)
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)
