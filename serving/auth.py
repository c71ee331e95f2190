"""API keys: minted once, stored as SHA-256 hashes, each bound to a tenant.

A request carries ``Authorization: Bearer rb_...``. Keys are high-entropy random
strings, so an unsalted SHA-256 is enough to make a leaked table useless; the stored
hash is compared in constant time. With no keys at all the service runs in development
mode (loopback only): every request acts as an admin that sees every tenant.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from feedback.records import ApiKeyRecord
from feedback.store import Store
from serving.errors import AuthError, ForbiddenError

KEY_PREFIX = "rb_"


@dataclass(frozen=True)
class Principal:
    """Who is calling. ``tenant`` is None only in development mode (all tenants)."""

    tenant: str | None
    admin: bool
    key_id: int | None = None
    dev: bool = False


DEV_PRINCIPAL = Principal(tenant=None, admin=True, dev=True)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_key(
    store: Store, *, tenant: str, admin: bool = False, label: str | None = None
) -> tuple[str, ApiKeyRecord]:
    """Mint a key for ``tenant``; the plaintext is returned once and never stored."""
    if not tenant or len(tenant) > 64:
        raise AuthError("tenant: must be 1-64 characters")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    record = store.add_api_key(
        key_hash=hash_key(key), prefix=key[:10], tenant=tenant, admin=admin, label=label
    )
    return key, record


class KeyRing:
    """Resolves bearer tokens to principals, caching lookups for ``ttl_s``."""

    def __init__(self, store: Store, *, dev_mode: bool, ttl_s: float = 30.0) -> None:
        self.store = store
        self.dev_mode = dev_mode
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, str | None, ApiKeyRecord | None]] = {}

    async def resolve(self, authorization: str | None) -> Principal:
        if not authorization:
            if self.dev_mode:
                return DEV_PRINCIPAL
            raise AuthError("missing API key: send 'Authorization: Bearer <key>'")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError("malformed Authorization header: expected 'Bearer <key>'")
        digest = hash_key(token)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is None or hit[0] < now:
            record = await asyncio.to_thread(self.store.find_api_key, digest)
            stored = digest if record is not None else None
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (now + self.ttl_s, stored, record)
            hit = self._cache[digest]
        _, stored, record = hit
        if record is None or stored is None or not hmac.compare_digest(stored, digest):
            raise AuthError("invalid API key")
        return Principal(tenant=record.tenant, admin=record.admin, key_id=record.id)


async def authenticate(request: Request) -> Principal:
    """Dependency: the caller, also left on ``request.state`` (tenant, principal)."""
    return await authenticate_as(request, request.headers.get("authorization"))


async def authenticate_as(request: Request, authorization: str | None) -> Principal:
    """The caller of ``authorization`` (``Bearer <key>``), left on ``request.state``;
    the Messages door passes Anthropic's ``x-api-key`` in that form."""
    ring: KeyRing = request.app.state.keyring
    principal = await ring.resolve(authorization)
    request.state.principal = principal
    request.state.tenant = principal.tenant
    return principal


async def require_admin(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    """Dependency: an admin key (or development mode)."""
    if not principal.admin:
        raise ForbiddenError("this operation needs an admin API key")
    return principal
