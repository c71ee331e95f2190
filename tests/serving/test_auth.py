"""API keys, tenant isolation, admin operations and development mode."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from feedback.store import Store
from serving.app import preflight
from serving.auth import create_key, hash_key
from serving.settings import Settings, SettingsError
from tests.serving.conftest import Api, running, service_settings


@pytest.fixture(autouse=True)
def _loopback_upstreams(monkeypatch: pytest.MonkeyPatch) -> None:
    # With API keys (not development mode) only listed non-public upstreams are admitted,
    # and the example catalog's local-qwen is on 127.0.0.1 (docs/deploy.md).
    monkeypatch.setenv("ROUTEBANDIT_GATEWAY__UPSTREAM_ALLOW", '["127.0.0.1"]')


@dataclass
class Tenants:
    acme: Api
    globex: Api
    admin: Api
    anonymous: Api


@pytest.fixture
async def tenants(settings: Settings) -> AsyncIterator[Tenants]:
    store = Store(settings.resolved_database_url)
    acme, _ = create_key(store, tenant="acme")
    globex, _ = create_key(store, tenant="globex")
    admin, _ = create_key(store, tenant="ops", admin=True)
    store.close()
    async with running(settings, acme) as a, running(settings, globex) as g, \
            running(settings, admin) as ad, running(settings) as anon:
        yield Tenants(a, g, ad, anon)


def test_keys_are_stored_hashed(settings: Settings) -> None:
    store = Store(settings.resolved_database_url)
    key, record = create_key(store, tenant="acme", label="ci")
    with store.engine.connect() as conn:
        stored = conn.exec_driver_sql("select key_hash, prefix from api_keys").one()
    store.close()
    assert key.startswith("rb_") and len(key) > 40
    assert stored == (hash_key(key), key[:10]) and key not in stored
    assert record.tenant == "acme" and record.admin is False


async def test_requests_need_a_valid_key(tenants: Tenants) -> None:
    r = await tenants.anonymous.client.post("/v1/route", json={"prompt": "x"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    for header in ("Bearer rb_not-a-key", "Basic abc", "Bearer"):
        r = await tenants.anonymous.client.post("/v1/route", json={"prompt": "x"},
                                                headers={"authorization": header})
        assert r.status_code == 401, header
    assert (await tenants.anonymous.client.get("/healthz")).status_code == 200


@pytest.mark.parametrize("path", ["/v1/route", "/v1/feedback"])
@pytest.mark.parametrize("raw", [b"{not json", b"", b'{"colour": 1}'], ids=["garbage", "empty",
                                                                          "invalid"])
async def test_the_key_is_checked_before_the_body(tenants: Tenants, path: str,
                                                  raw: bytes) -> None:
    r = await tenants.anonymous.client.post(path, content=raw,
                                            headers={"content-type": "application/json"})
    assert r.status_code == 401 and r.json()["error"]["type"] == "unauthorized", r.text


async def test_tenants_cannot_see_each_other(tenants: Tenants) -> None:
    out = await tenants.acme.route(prompt="acme's secret plan")
    did = out["decision_id"]
    assert (await tenants.globex.client.get(f"/v1/decisions/{did}")).status_code == 404
    r = await tenants.globex.client.post("/v1/feedback", json={"decision_id": did, "score": 1})
    assert r.status_code == 404 and r.json()["error"]["field"] == "decision_id"
    audit = await tenants.acme.client.get(f"/v1/decisions/{did}")
    assert audit.status_code == 200 and audit.json()["tenant"] == "acme"
    assert audit.json()["feedback"] is None
    r = await tenants.acme.client.post("/v1/feedback", json={"decision_id": did, "score": 1})
    assert r.status_code == 200


async def test_metadata_cannot_claim_another_tenant(tenants: Tenants) -> None:
    r = await tenants.acme.client.post("/v1/route", json={"prompt": "x",
                                                          "metadata": {"tenant": "globex"}})
    assert r.status_code == 422 and r.json()["error"]["field"] == "metadata.tenant"
    out = await tenants.acme.route(prompt="x", metadata={"tenant": "acme"})
    assert out["decision_id"]


async def test_catalog_and_policy_changes_need_an_admin_key(tenants: Tenants) -> None:
    spec = {"name": "new-model", "input_price": 0.1}
    assert (await tenants.acme.client.post("/v1/models", json=spec)).status_code == 403
    assert (await tenants.acme.client.delete("/v1/models/gpt-5")).status_code == 403
    assert (await tenants.acme.client.get("/v1/policy")).status_code == 403
    assert (await tenants.acme.client.get("/v1/models")).status_code == 200
    assert (await tenants.admin.client.post("/v1/models", json=spec)).status_code == 201
    assert (await tenants.admin.client.get("/v1/policy")).status_code == 200


async def test_revoked_keys_stop_working(settings: Settings) -> None:
    store = Store(settings.resolved_database_url)
    key, record = create_key(store, tenant="acme")
    create_key(store, tenant="other")  # so that revoking leaves the service out of dev mode
    store.revoke_api_key(record.prefix)
    store.close()
    async with running(settings, key) as api:
        assert (await api.client.post("/v1/route", json={"prompt": "x"})).status_code == 401


async def test_development_mode_without_keys(api: Api) -> None:
    ready = (await api.client.get("/readyz")).json()
    assert ready["development_mode"] is True
    out = await api.route(prompt="x", metadata={"tenant": "team-a"})
    audit = (await api.client.get(f"/v1/decisions/{out['decision_id']}")).json()
    assert audit["tenant"] == "team-a"


def test_development_mode_refuses_public_interfaces(tmp_path: Path, db_url: str) -> None:
    with pytest.raises(SettingsError, match="^setting 'host' \\(0.0.0.0\\): no API keys"):
        preflight(service_settings(tmp_path, db_url, host="0.0.0.0"))
    store = Store(service_settings(tmp_path, db_url).resolved_database_url)
    create_key(store, tenant="acme")
    store.close()
    pre = preflight(service_settings(tmp_path, db_url, host="0.0.0.0"))
    assert pre.dev_mode is False
    pre.store.close()
