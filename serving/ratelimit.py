"""Rate limits per API key: requests and tokens per minute, shared by every process.

Plain ASGI middleware in front of ``/v1/route``, the gateway's doors
(``/v1/chat/completions``, ``/v1/responses``, ``/v1/messages``) and ``/v1/feedback``.
The caller is the API key itself (its SHA-256, never the key; ``x-api-key`` on the
Messages door), so a limit costs no key lookup; without a key (development mode) the
client address. Each request counts 1 request and ``ceil(body bytes / 4)`` tokens (the
prompt is nearly all of a body; a model's answer is not known before the call).
Counters are fixed one-minute windows, kept in Redis when ``ROUTEBANDIT_REDIS_URL`` is
set, else in the PostgreSQL database the processes share, else (SQLite, one process) in
memory. Over a limit the answer is ``429`` with ``Retry-After`` (seconds to the next
window) and says which limit, in the service's error format (OpenAI's or Anthropic's on
their doors).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("routebandit.ratelimit")

WINDOW_S = 60
LIMITED_PATHS = ("/v1/route", "/v1/chat/completions", "/v1/responses", "/v1/messages",
                 "/v1/messages/count_tokens", "/v1/feedback")
# The doors that answer in OpenAI's error format, and those in Anthropic's.
OPENAI_PATHS = ("/v1/chat/completions", "/v1/responses")
ANTHROPIC_PATHS = ("/v1/messages", "/v1/messages/count_tokens")


class LimitSettings(BaseSettings):
    """``ROUTEBANDIT_RATE_*`` limits and ``ROUTEBANDIT_REDIS_URL``."""

    model_config = SettingsConfigDict(env_prefix="ROUTEBANDIT_", extra="ignore", frozen=True)

    rate_requests_per_min: int | None = Field(
        default=None, ge=1, description="Requests per minute per API key (off: no limit).")
    rate_tokens_per_min: int | None = Field(
        default=None, ge=1, description="Estimated tokens per minute per API key.")
    redis_url: str | None = Field(default=None, description="Shared counters in Redis.")

    @property
    def enabled(self) -> bool:
        return self.rate_requests_per_min is not None or self.rate_tokens_per_min is not None


class Counters(Protocol):
    def add(self, bucket: str, window: int, amount: int) -> int:
        """Add ``amount`` to the bucket's counter of ``window``; return the new total."""
        ...


class MemoryCounters:
    """One process's counters (SQLite development mode)."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()

    def add(self, bucket: str, window: int, amount: int) -> int:
        with self._lock:
            if len(self._counts) > 100_000:  # drop past windows
                self._counts = {k: v for k, v in self._counts.items() if k[1] >= window}
            total = self._counts.get((bucket, window), 0) + amount
            self._counts[(bucket, window)] = total
            return total


class RedisCounters:
    def __init__(self, url: str) -> None:
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)

    def add(self, bucket: str, window: int, amount: int) -> int:
        key = f"routebandit:rate:{bucket}:{window}"
        pipe = self._redis.pipeline()
        pipe.incrby(key, amount)
        pipe.expire(key, 2 * WINDOW_S)
        total, _ = pipe.execute()
        return int(total)


class DatabaseCounters:
    """Counters in the shared PostgreSQL database (table ``rate_counters``)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self._last_sweep = 0.0

    def add(self, bucket: str, window: int, amount: int) -> int:
        with self.engine.begin() as conn:
            total = conn.exec_driver_sql(
                "INSERT INTO rate_counters (bucket, window_start, count) VALUES (%s, %s, %s) "
                "ON CONFLICT (bucket, window_start) DO UPDATE "
                "SET count = rate_counters.count + EXCLUDED.count RETURNING count",
                (bucket, window, amount)).scalar_one()
            now = time.monotonic()
            if now - self._last_sweep > WINDOW_S:
                self._last_sweep = now
                conn.exec_driver_sql("DELETE FROM rate_counters WHERE window_start < %s",
                                     (window - WINDOW_S,))
        return int(total)


def counters_for(settings: LimitSettings, store: Any) -> Counters:
    if settings.redis_url:
        return RedisCounters(settings.redis_url)
    if getattr(store, "dialect", None) == "postgresql":
        return DatabaseCounters(store.engine)
    return MemoryCounters()


class RateLimit:
    """The middleware (see the module docstring). A counter store that fails lets the
    request through and logs: the limiter must not take the router down with it."""

    def __init__(self, app: ASGIApp, *, settings: LimitSettings,
                 counters: Callable[[], Counters]) -> None:
        self.app = app
        self.settings = settings
        self._make = counters  # called on first use: the store exists only once serving
        self._made: Counters | None = None

    def _counters(self) -> Counters:
        if self._made is None:
            self._made = self._make()
        return self._made

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope.get("method") != "POST"
                or scope.get("path") not in LIMITED_PATHS):
            await self.app(scope, receive, send)
            return
        caller, length = _caller(scope)
        now = time.time()
        window = int(now // WINDOW_S) * WINDOW_S
        retry_after = max(1, math.ceil(window + WINDOW_S - now))
        checks = []
        if self.settings.rate_requests_per_min is not None:
            checks.append(("requests", 1, self.settings.rate_requests_per_min))
        if self.settings.rate_tokens_per_min is not None:
            checks.append(("tokens", max(1, math.ceil(length / 4)),
                           self.settings.rate_tokens_per_min))
        for what, amount, limit in checks:
            try:
                total = await asyncio.to_thread(self._counters().add, f"{what}:{caller}",
                                                window, amount)
            except Exception as exc:  # Redis or the database down
                log.error("rate limit counters unavailable, not limiting: %s",
                          exc.__class__.__name__)
                break
            if total > limit:
                await _too_many(scope, send, what, limit, retry_after)
                return
        await self.app(scope, receive, send)


def _caller(scope: Scope) -> tuple[str, int]:
    auth, length = b"", 0
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            auth = value
        elif name == b"x-api-key" and not auth:  # Anthropic's header (the Messages door)
            auth = b"Bearer " + value
        elif name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                length = 0
    if auth:
        token = auth.partition(b" ")[2].strip() or auth
        return "key:" + hashlib.sha256(token).hexdigest()[:32], length
    client = scope.get("client") or ("unknown", 0)
    return f"addr:{client[0]}", length


async def _too_many(scope: Scope, send: Send, what: str, limit: int, retry_after: int) -> None:
    message = (f"rate limit exceeded: more than {limit} {what} per minute for this API key; "
               f"retry after {retry_after} s")
    if scope.get("path") in OPENAI_PATHS:
        body: dict[str, Any] = {"error": {"message": message, "type": "rate_limit_error",
                                          "param": None, "code": "rate_limit_exceeded"}}
    elif scope.get("path") in ANTHROPIC_PATHS:
        body = {"type": "error", "error": {"type": "rate_limit_error", "message": message}}
    else:
        body = {"error": {"type": "rate_limited", "message": message, "field": None,
                          "limit": what}}
    raw = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": 429,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(raw)).encode()),
                            (b"retry-after", str(retry_after).encode())]})
    await send({"type": "http.response.body", "body": raw})


__all__ = ["DatabaseCounters", "LimitSettings", "MemoryCounters", "RateLimit", "RedisCounters",
           "counters_for"]
