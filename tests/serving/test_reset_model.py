"""A model declared changed (reset-model) or detected changed, as the service shows it:
the admin API, the CLI against a running server, the log line, the metric, the
checkpoint named after the change and what the live policy forgot."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from feedback.store import Store
from serving import cli
from serving.app import create_app
from serving.auth import create_key
from tests.fakes.server import ServerThread
from tests.serving.conftest import Api, running, service_settings


async def _learn_some(api: Api, n: int = 30) -> None:
    for i in range(n):
        d = await api.route(prompt=f"Summarise the following report for me please: item {i}")
        r = await api.client.post("/v1/feedback", json={"decision_id": d["decision_id"],
                                                       "score": 0.8})
        assert r.status_code == 200, r.text
    deadline = asyncio.get_running_loop().time() + 10
    while api.service.policy.n_learned < n:
        assert asyncio.get_running_loop().time() < deadline, "feedback not learned"
        await asyncio.sleep(0.05)


async def test_reset_model_through_the_admin_api(api: Api,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    await _learn_some(api)
    policy = api.service.policy
    names = policy.catalog.names
    target = next(m for m in names if any(m in row for _, row in policy.kinds.to_dict()["kinds"]))
    others = {k: {m: c for m, c in row.items() if m != target}
              for k, row in policy.kinds.to_dict()["kinds"]}
    with caplog.at_level(logging.WARNING, logger="feedback.learner"):
        r = await api.client.post("/v1/policy/reset-model", json={"model": target})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["change"]["model"] == target and body["change"]["source"] == "operator"
    assert body["policy"]["changes"][-1] == body["change"]
    assert body["policy"]["change_counts"] == {target: 1}
    # what was learned of it is gone, the others' is kept
    after = {k: row for k, row in api.service.policy.kinds.to_dict()["kinds"]}
    assert all(target not in row for row in after.values())
    assert {k: row for k, row in after.items() if row} == {k: v for k, v in others.items() if v}
    # logged, counted, checkpointed under the change's name
    assert any(target in rec.getMessage() and "operator" in rec.getMessage()
               for rec in caplog.records)
    metrics = (await api.client.get("/metrics")).text
    assert (f'routebandit_model_changes_total{{model="{target}",source="operator"}} 1.0'
            in metrics)
    cp = api.service.store.latest_checkpoint()
    assert cp is not None and cp.reason == f"change: {target}"[:32]
    state = (await api.client.get("/v1/policy")).json()
    assert state["last_checkpoint"]["reason"] == cp.reason


@pytest.mark.parametrize(("body", "status", "field"), [
    ({"model": "no-such-model"}, 404, None),
    ({}, 422, "model"),
    ({"model": ""}, 422, "model"),
    ({"model": "x", "estimates": "maybe"}, 422, "estimates"),
    ({"model": "x", "surprise": 1}, 422, "surprise"),
], ids=["unknown", "missing", "empty", "bad-flag", "extra-field"])
async def test_reset_model_refuses_bad_requests(api: Api, body: dict[str, object], status: int,
                                                field: str | None) -> None:
    r = await api.client.post("/v1/policy/reset-model", json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    if field is not None:
        assert field in (error.get("field") or "") + error["message"]
    else:
        assert "no-such-model" in error["message"]
    assert api.service.policy.changes == ()


async def test_a_detected_change_is_logged_counted_and_checkpointed(
        api: Api, caplog: pytest.LogCaptureFixture) -> None:
    await _learn_some(api, 5)
    policy = api.service.policy
    model = policy.catalog.names[0]
    # The detector's event, as policy.learn makes it when a model's grades shift.
    policy._reset(model, source="detected", direction="down")
    with caplog.at_level(logging.WARNING, logger="feedback.learner"):
        await _learn_some(api, 6)  # the next learning step reports it
    assert any(model in rec.getMessage() and "went down" in rec.getMessage()
               for rec in caplog.records)
    metrics = (await api.client.get("/metrics")).text
    assert f'routebandit_model_changes_total{{model="{model}",source="detected"}} 1.0' in metrics
    deadline = asyncio.get_running_loop().time() + 10
    while True:  # the learner loop checkpoints it at once
        cp = api.service.store.latest_checkpoint()
        if cp is not None and cp.reason.startswith("change"):
            break
        assert asyncio.get_running_loop().time() < deadline, "no checkpoint for the change"
        await asyncio.sleep(0.05)


async def test_reset_model_needs_an_admin_key(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # with keys, the example catalog's local model needs its address allowed
    monkeypatch.setenv("ROUTEBANDIT_GATEWAY__UPSTREAM_ALLOW", '["127.0.0.1"]')
    settings = service_settings(tmp_path, f"sqlite:///{tmp_path / 'rb.db'}")
    store = Store(settings.resolved_database_url)
    store.upgrade()
    tenant_key, _ = create_key(store, tenant="acme")
    store.close()
    async with running(settings, key=tenant_key) as api:
        model = api.service.policy.catalog.names[0]
        r = await api.client.post("/v1/policy/reset-model", json={"model": model})
        assert r.status_code == 403
        assert api.service.policy.changes == ()


def test_the_cli_resets_a_model_on_a_running_service(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    settings = service_settings(tmp_path, f"sqlite:///{tmp_path / 'rb.db'}")
    app = create_app(settings)
    server = ServerThread(app)
    server.start()
    try:
        service = app.state.service
        model = service.policy.catalog.names[-1]
        code = cli.main(["policy", "reset-model", model, "--url", server.url])
        out, err = capsys.readouterr()
        assert code == 0, err
        assert model in out and "forgotten" in out
        assert [(e.model, e.source) for e in service.policy.changes] == [(model, "operator")]
        code = cli.main(["policy", "reset-model", "nope", "--url", server.url])
        _, err = capsys.readouterr()
        assert code == 2 and "HTTP 404" in err and "nope" in err
    finally:
        server.stop()
    code = cli.main(["policy", "reset-model", model, "--url", server.url, "--timeout", "2"])
    _, err = capsys.readouterr()
    assert code == 2 and "cannot reach the service" in err and "--url" in err
