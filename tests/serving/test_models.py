"""/v1/models: the catalog changes at run time, and a new model gets traffic at once."""

from __future__ import annotations

import pytest

from serving.settings import Settings
from tests.serving.conftest import Api, running

NEW = {"name": "fresh-model", "input_price": 0.05, "output_price": 0.1,
       "context_window": 32000, "capabilities": ["json"], "latency_ms": 300}


async def test_list_is_openai_style(api: Api) -> None:
    body = (await api.client.get("/v1/models")).json()
    ids = [m["id"] for m in body["data"]]
    assert body["object"] == "list" and ids[0] == "auto" and "auto:cheap" in ids
    gpt = next(m for m in body["data"] if m["id"] == "gpt-5")
    assert gpt["routebandit"]["input_price"] == 1.25 and gpt["owned_by"] == "api.openai.com"


async def test_a_model_added_at_run_time_receives_traffic(api: Api) -> None:
    r = await api.client.post("/v1/models", json=NEW)
    assert r.status_code == 201 and r.json()["id"] == "fresh-model"
    first = await api.route(prompt="first request after the change")
    assert "fresh-model" in {x["model"] for x in first["ranking"]}
    assert dict((x["model"], x["probability"]) for x in first["ranking"])["fresh-model"] > 0
    chosen = [(await api.route(prompt=f"question {i}"))["model"] for i in range(60)]
    assert "fresh-model" in chosen  # explored, not just listed
    forced = await api.route(prompt="x", models=["fresh-model"])
    assert forced["model"] == "fresh-model"


async def test_removed_model_is_no_longer_routed(api: Api) -> None:
    assert (await api.client.delete("/v1/models/gpt-5")).status_code == 204
    out = await api.route(prompt="x")
    assert "gpt-5" not in {x["model"] for x in out["ranking"]}
    r = await api.client.post("/v1/route", json={"prompt": "x", "models": ["gpt-5"]})
    assert r.status_code == 422 and r.json()["error"]["field"] == "models"
    r = await api.client.delete("/v1/models/gpt-5")
    assert r.status_code == 404 and r.json()["error"]["field"] == "name"


async def test_catalog_changes_survive_a_restart(settings: Settings) -> None:
    async with running(settings) as api:
        assert (await api.client.post("/v1/models", json=NEW)).status_code == 201
        assert (await api.client.delete("/v1/models/local-qwen")).status_code == 204
    async with running(settings) as api:
        names = {m["id"] for m in (await api.client.get("/v1/models")).json()["data"]}
    assert "fresh-model" in names and "local-qwen" not in names


@pytest.mark.parametrize(("spec", "field"), [
    ({"name": "m", "input_price": -1}, "model.input_price"),
    ({"name": "m", "capabilities": ["telepathy"]}, "model.capabilities"),
    ({"name": "bad name!"}, "model.name"),
    ({"name": "m", "colour": "red"}, "model.colour"),
    ({"input_price": 1}, "model.name"),
], ids=["negative-price", "unknown-capability", "bad-name", "unknown-field", "no-name"])
async def test_invalid_models_are_422_naming_the_field(
    api: Api, spec: dict[str, object], field: str
) -> None:
    r = await api.client.post("/v1/models", json=spec)
    assert r.status_code == 422 and r.json()["error"]["field"] == field, r.text


async def test_the_last_model_cannot_be_removed(api: Api) -> None:
    names = [m["id"] for m in (await api.client.get("/v1/models")).json()["data"]
             if not m["id"].startswith("auto")]
    for name in names[:-1]:
        assert (await api.client.delete(f"/v1/models/{name}")).status_code == 204
    r = await api.client.delete(f"/v1/models/{names[-1]}")
    assert r.status_code == 422


async def test_tenant_keys_see_what_tenants_need(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from feedback.store import Store
    from serving.auth import create_key

    # The example catalog's local-qwen is on 127.0.0.1: admitted with keys only if listed.
    settings = settings.model_copy(update={"gateway": settings.gateway.model_copy(
        update={"upstream_allow": ("127.0.0.1",)})})
    store = Store(settings.resolved_database_url)
    tenant, _ = create_key(store, tenant="acme")
    admin, _ = create_key(store, tenant="ops", admin=True)
    store.close()
    seen = {}
    for who, key in (("tenant", tenant), ("admin", admin)):
        async with running(settings, key) as api:
            r = await api.client.get("/v1/models")
            assert r.status_code == 200, r.text
            seen[who] = {m["id"]: m for m in r.json()["data"]}
    gpt = seen["tenant"]["gpt-5"]
    assert gpt["routebandit"] == {"input_price": 1.25, "output_price": 10.0,
                                  "context_window": 400000, "max_output_tokens": 128000,
                                  "latency_ms": 6000.0,
                                  "capabilities": ["file", "json", "reasoning", "tools",
                                                   "vision"]}
    assert gpt["owned_by"] == "routebandit"  # not the host of its base_url
    assert seen["tenant"]["local-qwen"]["owned_by"] == "ollama"  # an explicit provider
    assert not any("base_url" in m.get("routebandit", {}) or "api_key_env" in m.get(
        "routebandit", {}) for m in seen["tenant"].values())
    assert seen["admin"]["gpt-5"]["routebandit"]["base_url"] == "https://api.openai.com/v1"
    assert seen["admin"]["gpt-5"]["routebandit"]["api_key_env"] == "OPENAI_API_KEY"
    assert seen["admin"]["gpt-5"]["owned_by"] == "api.openai.com"
    assert set(seen["tenant"]) == set(seen["admin"])
