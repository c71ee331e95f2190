"""``/v1/stats/...``: the figures of tests/stats_seed.py through HTTP, tenant scoping,
and bad ranges and bucket sizes answered 422 naming the parameter."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from feedback.stats import Stats
from feedback.store import Store
from serving.app import create_app
from serving.auth import create_key
from tests import stats_seed
from tests.serving.conftest import service_settings

WINDOW = {"since": "2026-03-08T00:00Z", "until": "2026-03-10T12:30Z", "bucket": "1d"}
PANELS = ("traffic", "kinds", "feedback", "spend", "latency", "errors", "exploration",
          "versions", "learner")


@pytest.fixture(autouse=True)
def _loopback_upstreams(monkeypatch: pytest.MonkeyPatch) -> None:
    # With API keys only listed non-public upstreams are admitted (docs/deploy.md).
    monkeypatch.setenv("ROUTEBANDIT_GATEWAY__UPSTREAM_ALLOW", '["127.0.0.1"]')


@dataclass
class Client:
    http: httpx.AsyncClient
    keys: dict[str, str]  # "acme", "admin" (none in development mode)

    async def get(self, path: str, key: str | None = None, **params: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {self.keys[key]}"} if key else {}
        return await self.http.get(f"/v1/stats/{path}", params=params, headers=headers)

    async def ok(self, path: str, key: str | None = None, **params: Any) -> Any:
        r = await self.get(path, key, **params)
        assert r.status_code == 200, r.text
        return r.json()


async def _client(tmp_path: Path, db_url: str, *, keys: bool) -> AsyncIterator[Client]:
    store = Store(db_url)
    stats_seed.small(store)
    Stats(store.engine).rollup.refresh(now=stats_seed.NOW)
    made = {}
    if keys:
        made["acme"], _ = create_key(store, tenant="acme")
        made["admin"], _ = create_key(store, tenant="ops", admin=True)
    store.close()
    settings = service_settings(tmp_path, db_url, stats_refresh_s=0, policy_versions=False,
                                catalog=str(stats_seed.write_catalog(tmp_path / "c.yaml")))
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as h:
            yield Client(h, made)


@pytest.fixture
async def dev(tmp_path: Path, db_url: str) -> AsyncIterator[Client]:
    async for c in _client(tmp_path, db_url, keys=False):
        yield c


@pytest.fixture
async def keyed(tmp_path: Path, db_url: str) -> AsyncIterator[Client]:
    async for c in _client(tmp_path, db_url, keys=True):
        yield c


async def test_every_panel_answers_with_the_seeded_figures(dev: Client) -> None:
    traffic = await dev.ok("traffic", **WINDOW)
    assert traffic["decisions"] == {"cheap": [2, 1, 1], "big": [2, 0, 0]}
    assert (await dev.ok("feedback", **WINDOW))["coverage"] == [0.75, 1.0, 1.0]
    spend = await dev.ok("spend", **WINDOW)  # the reference: the priciest model, big
    assert spend["reference"] == {"model": "big", "input_price": 10.0, "output_price": 40.0}
    assert spend["saving_usd_total"] == pytest.approx(0.095 - 0.00502)
    cheap = await dev.ok("spend", reference="cheap", **WINDOW)
    assert cheap["models"][0]["reference_cost_usd"] == pytest.approx(
        (2000 * 0.15 + 600 * 0.6) / 1e6)  # big's tokens at cheap's prices
    errors = await dev.ok("errors", **WINDOW)
    assert errors["statuses"]["rejected"] == [0, 0, 1] and errors["failovers"] == [1, 0, 0]
    assert errors["cooldowns_known"] is True and errors["cooldowns"] == []
    assert (await dev.ok("exploration", **WINDOW))["exploratory"] == [1, 0, 0]
    versions = await dev.ok("versions", **WINDOW)
    assert list(versions["decisions"]) == ["v1", "v2"] and versions["serving"]
    assert "policy_versions" in versions["registry_note"]
    learner = await dev.ok("learner", **WINDOW)
    # the service learned the five feedbacks at start-up and checkpointed them
    assert (learner["waiting"], learner["unlearned"], learner["role"]) == (1, 0, "learner")
    assert learner["last_checkpoint"]["n_learned"] == learner["n_learned"] == 5
    kinds = await dev.ok("kinds", limit=1, **WINDOW)
    assert [k["kind"] for k in kinds["kinds"]] == ["math"] and kinds["other_kinds"] == 2
    latency = await dev.ok("latency", **WINDOW)
    assert [m["model"] for m in latency["models"]] == ["big", "cheap"]
    scope = await dev.ok("scope")
    assert (scope["admin"], scope["development_mode"], scope["tenants"]) == (
        True, True, ["acme", "globex"])
    assert scope["default_reference"] == "big"


BAD = [
    ({"since": "2026-03-10T00:00Z", "until": "2026-03-09T00:00Z"}, "since"),
    ({"since": "last tuesday"}, "since"),
    ({"until": "later"}, "until"),
    ({"since": "2d", "bucket": "7m"}, "bucket"),
    ({"since": "2d", "bucket": "5m"}, "bucket"),
    ({"since": "2d", "bucket": "soon"}, "bucket"),
    ({"since": "2d", "tenant": "x" * 65}, "tenant"),
    ({"since": "2d", "reference": "nope"}, "reference"),
    ({"since": "2d", "limit": "0"}, "limit"),
]


async def test_bad_ranges_and_buckets_name_the_parameter(tmp_path: Path) -> None:
    # The checks are the service's, not the database's: SQLite alone.
    async for dev in _client(tmp_path, f"sqlite:///{tmp_path / 'rb.db'}", keys=False):
        for params, field in BAD:
            r = await dev.get("kinds" if field == "limit" else "spend", **params)
            assert r.status_code == 422, (params, r.text)
            error = r.json()["error"]
            assert error["field"] == field, (params, error)
            assert error["message"].startswith(f"{field}: "), (params, error)


async def test_a_tenant_key_sees_its_own_tenant_only(keyed: Client) -> None:
    acme = await keyed.ok("traffic", "acme", **WINDOW)
    assert acme["span"]["tenant"] == "acme"
    assert acme["decisions"] == {"cheap": [2, 0, 1], "big": [2, 0, 0]}
    for panel in PANELS:  # never another tenant's, nor every tenant's
        r = await keyed.get(panel, "acme", tenant="globex", **WINDOW)
        assert r.status_code == 403 and r.json()["error"]["message"].startswith("tenant: ")
        assert (await keyed.ok(panel, "acme", **WINDOW))["span"]["tenant"] == "acme"
    scope = await keyed.ok("scope", "acme")
    assert (scope["admin"], scope["tenants"]) == (False, ["acme"])
    learner = await keyed.ok("learner", "acme", **WINDOW)
    assert learner["n_learned"] is None and learner["last_checkpoint"]["n_learned"] is None
    assert (await keyed.get("traffic", **WINDOW)).status_code == 401
    # without a key the page learns that one is needed, and nothing else
    assert await keyed.ok("scope") == {"signed_in": False, "development_mode": False}


async def test_an_admin_key_sees_every_tenant_and_picks_one(keyed: Client) -> None:
    everyone = await keyed.ok("traffic", "admin", **WINDOW)
    assert everyone["span"]["tenant"] is None and everyone["totals"] == {"cheap": 4, "big": 2}
    globex = await keyed.ok("feedback", "admin", tenant="globex", **WINDOW)
    assert globex["decisions"] == [0, 1, 0]
    assert (await keyed.ok("scope", "admin"))["tenants"] == ["acme", "globex"]


async def test_the_stats_are_documented(dev: Client) -> None:
    schema = (await dev.http.get("/openapi.json")).json()
    for panel in PANELS:
        op = schema["paths"][f"/v1/stats/{panel}"]["get"]
        names = {p["name"] for p in op["parameters"]}
        assert {"since", "until", "bucket", "tenant"} <= names, panel
        assert op["summary"] and "422" in op["responses"], panel
    assert "Spend" in schema["components"]["schemas"]
