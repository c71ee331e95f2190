from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from serving.app import create_app
from serving.service import RouterService
from serving.settings import Settings, load_settings
from tests.databases import BACKENDS, database_url


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from database_url(request.param, tmp_path)


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return service_settings(tmp_path, db_url)


def service_settings(tmp_path: Path, db_url: str, **overrides: Any) -> Settings:
    base: dict[str, Any] = {"data_dir": str(tmp_path), "database_url": db_url,
                            "flush_interval_ms": 20}
    return load_settings(**{**base, **overrides})


@dataclass
class Api:
    client: httpx.AsyncClient
    service: RouterService

    async def route(self, **body: Any) -> dict[str, Any]:
        body = body or {"prompt": "How do I reverse a list in Python?"}
        r = await self.client.post("/v1/route", json=body)
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out


@asynccontextmanager
async def running(settings: Settings, key: str | None = None) -> AsyncIterator[Api]:
    """The real app with its lifespan, called over HTTP (ASGI transport)."""
    app = create_app(settings)
    headers = {"authorization": f"Bearer {key}"} if key else {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1",
                                     headers=headers) as client:
            yield Api(client, app.state.service)


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    async with running(settings) as a:
        yield a
