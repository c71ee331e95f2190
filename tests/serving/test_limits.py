"""Rate limits per API key (429 + Retry-After, shared across processes through Redis or
PostgreSQL) and spend budgets per tenant (cheaper models near the budget, 402 at it)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from feedback.store import Store
from serving.app import create_app
from serving.auth import create_key
from serving.settings import Settings
from tests.serving.conftest import Api, running, service_settings

REDIS_URL = "redis://127.0.0.1:6379/15"


@pytest.fixture(autouse=True)
def _loopback_upstreams(monkeypatch: pytest.MonkeyPatch) -> None:
    # With API keys (not development mode) only listed non-public upstreams are admitted,
    # and the example catalog's local-qwen is on 127.0.0.1 (docs/deploy.md).
    monkeypatch.setenv("ROUTEBANDIT_GATEWAY__UPSTREAM_ALLOW", '["127.0.0.1"]')


def _keys(settings: Settings, *tenants: str) -> list[str]:
    store = Store(settings.resolved_database_url)
    try:
        return [create_key(store, tenant=t)[0] for t in tenants]
    finally:
        store.close()


@contextlib.asynccontextmanager
async def _clients(settings: Settings, keys: list[str],
                   processes: int = 1) -> AsyncIterator[list[httpx.AsyncClient]]:
    """``processes`` apps on one database (as separate processes would be), one client
    per (app, key)."""
    async with contextlib.AsyncExitStack() as stack:
        clients = []
        for _ in range(processes):
            app = create_app(settings)
            await stack.enter_async_context(app.router.lifespan_context(app))
            for key in keys:
                clients.append(await stack.enter_async_context(httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1",
                    headers={"authorization": f"Bearer {key}"})))
        yield clients


async def test_requests_per_minute_per_key(tmp_path: Path, db_url: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTEBANDIT_RATE_REQUESTS_PER_MIN", "5")
    settings = service_settings(tmp_path, db_url)
    a, b = _keys(settings, "acme", "acme")
    async with _clients(settings, [a, b]) as (ca, cb):
        for _ in range(5):
            assert (await ca.post("/v1/route", json={"prompt": "hi"})).status_code == 200
        r = await ca.post("/v1/route", json={"prompt": "hi"})
        assert r.status_code == 429
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert r.json()["error"]["type"] == "rate_limited"
        assert "5 requests per minute" in r.json()["error"]["message"]
        chat = await ca.post("/v1/chat/completions", json={"model": "auto", "messages": []})
        assert chat.status_code == 429 and chat.json()["error"]["code"] == "rate_limit_exceeded"
        assert "retry-after" in chat.headers
        # Another key has its own allowance; reads are not limited.
        assert (await cb.post("/v1/route", json={"prompt": "hi"})).status_code == 200
        assert (await ca.get("/v1/models")).status_code == 200


async def test_tokens_per_minute_per_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTEBANDIT_RATE_TOKENS_PER_MIN", "1000")
    settings = service_settings(tmp_path, f"sqlite:///{tmp_path / 'rb.db'}")
    (key,) = _keys(settings, "acme")
    async with _clients(settings, [key]) as (c,):
        r = await c.post("/v1/route", json={"prompt": "x" * 3000})  # ~750 tokens
        assert r.status_code == 200
        r = await c.post("/v1/route", json={"prompt": "x" * 3000})
        assert r.status_code == 429 and r.json()["error"]["limit"] == "tokens"
        assert "1000 tokens per minute" in r.json()["error"]["message"]


@pytest.mark.parametrize("backend", ["redis", "database"])
async def test_limits_are_shared_across_processes(tmp_path: Path, db_url: str, backend: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    if backend == "redis":
        redis = pytest.importorskip("redis")
        try:
            redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
        except redis.RedisError:
            pytest.skip("no Redis on 127.0.0.1:6379")
        monkeypatch.setenv("ROUTEBANDIT_REDIS_URL", REDIS_URL)
    elif not db_url.startswith("postgresql"):
        pytest.skip("SQLite runs one process: its counters live in memory")
    monkeypatch.setenv("ROUTEBANDIT_RATE_REQUESTS_PER_MIN", "6")
    settings = service_settings(tmp_path, db_url)
    (key,) = _keys(settings, f"t{uuid.uuid4().hex[:8]}")
    async with _clients(settings, [key], processes=2) as (c1, c2):
        codes = []
        for i in range(8):
            r = await (c1 if i % 2 else c2).post("/v1/route", json={"prompt": "hi"})
            codes.append(r.status_code)
        assert codes == [200] * 6 + [429] * 2


async def test_budget_shifts_to_cheaper_models_then_refuses(
        tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTEBANDIT_BUDGETS", '{"acme": 0.01}')
    settings = service_settings(tmp_path, db_url)
    (key,) = _keys(settings, "acme")
    async with running(settings, key) as api:
        budgets = api.service.budgets
        base = await _route_cost_weight(api)

        await _spend(api, 0.009)  # 90%: halfway between the soft limit and the budget
        budgets.refresh()
        assert budgets.spent["acme"] == pytest.approx(0.009)
        assert await _route_cost_weight(api) == pytest.approx(base * (1 + 19 * 0.5))

        await _spend(api, 0.002)
        budgets.refresh()
        r = await api.client.post("/v1/route", json={"prompt": "hi"})
        assert r.status_code == 402, r.text
        error = r.json()["error"]
        assert error["type"] == "budget_exceeded" and "acme" in error["message"]
        assert int(r.headers["retry-after"]) >= 1
        chat = await api.client.post("/v1/chat/completions", json={
            "model": "auto", "messages": [{"role": "user", "content": "hi"}]})
        assert chat.status_code == 402 and chat.json()["error"]["type"] == "insufficient_quota"
        # Feedback on earlier decisions is still taken.
        assert (await api.client.get("/v1/models")).status_code == 200


async def _route_cost_weight(api: Api) -> float:
    out = await api.route()
    audit = (await api.client.get(f"/v1/decisions/{out['decision_id']}")).json()
    return float(audit["weights"]["cost"])


async def _spend(api: Api, usd: float) -> None:
    out = await api.route()
    r = await api.client.post("/v1/feedback", json={"decision_id": out["decision_id"],
                                                    "score": 1.0, "cost_usd": usd})
    assert r.status_code == 200, r.text


async def test_no_secrets_or_prompts_in_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTEBANDIT_RATE_REQUESTS_PER_MIN", "3")
    settings = service_settings(tmp_path, f"sqlite:///{tmp_path / 'rb.db'}", store_prompts=True)
    (key,) = _keys(settings, "acme")
    prompt = "SECRET-PROMPT-" + uuid.uuid4().hex
    caplog.set_level("DEBUG")
    async with running(settings, key) as api:
        assert api.service.store.engine.hide_parameters
        out = await api.route(prompt=prompt)
        await api.client.post("/v1/feedback", json={"decision_id": out["decision_id"],
                                                    "score": 2, "source": prompt})
        await api.client.post("/v1/route", json={"prompt": prompt, "bad": prompt})
        await api.client.post("/v1/route", json={"prompt": prompt})  # 429
        await api.client.post("/v1/route", json={"prompt": prompt},
                              headers={"authorization": "Bearer rb_wrong" + prompt})
    assert prompt not in caplog.text
    assert key not in caplog.text and key[3:20] not in caplog.text
