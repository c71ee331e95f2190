"""Hostile but legitimate input, as an attacker with a tenant key (or none, in development
mode) would send it: every door answers a 4xx in its own error shape naming the field,
and the writer and learner serve every tenant afterwards."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.fake_upstream import FakeUpstream
from tests.fakes.server import ServerThread
from tests.serving.conftest import running, service_settings
from tests.serving.gateway_stack import (
    KEY,
    serve_app,
    started_fakes,
)

MESSAGES = [{"role": "user", "content": "x"}]
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeUpstream]]:
    yield from started_fakes()


class Served:
    def __init__(self, server: ServerThread, key: str | None) -> None:
        self.server = server
        headers = {"authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=server.url, timeout=10, headers=headers)

    @property
    def service(self) -> Any:
        return self.server.app.state.service

    def chat(self, raw: bytes | str, **headers: str) -> httpx.Response:
        content = raw.encode() if isinstance(raw, str) else raw
        return self.http.post("/v1/chat/completions", content=content,
                              headers={**JSON, **headers})

    def healthy_within(self, seconds: float = 1.0) -> None:
        """Ready, and a fresh decision's feedback is answered within ``seconds``."""
        ready = self.http.get("/readyz")
        assert ready.status_code == 200, ready.text
        did = self.http.post("/v1/route", json={"prompt": "after the storm"}).json()[
            "decision_id"]
        started = time.monotonic()
        fb = self.http.post("/v1/feedback", json={"decision_id": did, "score": 0.5},
                            timeout=seconds + 1)
        assert fb.status_code == 200, fb.text
        assert time.monotonic() - started < seconds


def _serve(fakes: dict[str, FakeUpstream], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
           *, with_key: bool, **overrides: Any) -> Iterator[Served]:
    for server, key in serve_app(fakes, tmp_path, monkeypatch, with_key=with_key,
                                 **overrides):
        served = Served(server, key)
        yield served
        served.http.close()


@pytest.fixture
def dev(fakes: dict[str, FakeUpstream], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    yield from _serve(fakes, tmp_path, monkeypatch, with_key=False)


@pytest.fixture
def tenant(fakes: dict[str, FakeUpstream], tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    yield from _serve(fakes, tmp_path, monkeypatch, with_key=True)


def _chat(ext: dict[str, Any] | str, model: str = '"auto"') -> str:
    ext_json = ext if isinstance(ext, str) else __import__("json").dumps(ext)
    return ('{"model": ' + model + ', "messages": [{"role": "user", "content": "x"}], '
            '"routebandit": ' + ext_json + '}')


# Each as a pentest sent it (JSON text: "\\ud800" is the escape of a lone surrogate).
HOSTILE_CHAT = [
    pytest.param(_chat('{"metadata": {"task": "\\ud800"}}'), "routebandit.metadata.task",
                 id="surrogate-task"),
    pytest.param(_chat('{"metadata": {"user_key": "\\ud800"}}'),
                 "routebandit.metadata.user_key", id="surrogate-user-key"),
    pytest.param(_chat('{"metadata": {"task": "a\\u0000b"}}'), "routebandit.metadata.task",
                 id="nul-task"),
    pytest.param(_chat({}, model='"\\ud800"'), "model", id="surrogate-model"),
    pytest.param(_chat({}, model='"auto:\\ud800"'), "model", id="surrogate-profile"),
    pytest.param(_chat({}, model='"' + "m" * 5000 + '"'), "model", id="huge-model"),
    pytest.param(_chat('{"weights": {"\\ud800": 1}}'), "routebandit.weights",
                 id="surrogate-weight-key"),
    pytest.param(_chat({"weights": {"cost": 1e308}}), "routebandit.weights.cost",
                 id="huge-weight"),
    pytest.param(_chat({"weights": {"quality": -1}}), "routebandit.weights.quality",
                 id="negative-weight"),
    pytest.param(_chat({"weights": {"colour": 1}}), "routebandit.weights.colour",
                 id="unknown-weight"),
    pytest.param(_chat({"metadata": {"task": "t" * 5000}}), "routebandit.metadata.task",
                 id="huge-task"),
    pytest.param(_chat({"metadata": {"task": ["a"]}}), "routebandit.metadata.task",
                 id="task-not-text"),
    pytest.param(_chat({"models": "cheap"}), "routebandit.models", id="models-not-a-list"),
    pytest.param(_chat({"models": ["\ud800"]}), "routebandit.models", id="surrogate-models"),
    pytest.param(_chat({"cascade": "yes"}), "routebandit.cascade", id="cascade-not-bool"),
    pytest.param(_chat({"colour": 1}), "routebandit.colour", id="unknown-extension"),
    pytest.param(_chat('"on"'), "routebandit", id="extension-not-object"),
    pytest.param('{"model": "auto", "messages": [{"role": "user", "content": "x"}], "n": 1000}',
                 "n", id="n-1000"),
    pytest.param('{"model": "auto", "messages": [{"role": "user", "content": "x"}], "n": 0}',
                 "n", id="n-0"),
    pytest.param('{"model": "auto", "messages": [{"role": "user", "content": "x"}], '
                 '"n": "2"}', "n", id="n-text"),
    pytest.param('{"model": "auto", "messages": [{"role": "user", "content": "a\\ud800"}]}',
                 "messages[0].content", id="surrogate-content"),
    pytest.param('{"model": "auto", "messages": [{"role": "\\udfff", "content": "x"}]}',
                 "messages[0].role", id="surrogate-role"),
    pytest.param('{"model": "auto", "messages": [{"role": "user", "content": "x"}], '
                 '"max_tokens": 1e400}', "max_tokens", id="overflowing-number"),
    pytest.param('{"model": "auto", "messages": [{"role": "user", "content": "x"}], '
                 '"temperature": NaN}', "body", id="nan"),
]


@pytest.mark.parametrize(("raw", "field"), HOSTILE_CHAT)
def test_hostile_chat_requests_get_a_4xx_naming_the_field(
        dev: Served, fakes: dict[str, FakeUpstream], raw: str, field: str) -> None:
    r = dev.chat(raw)
    assert 400 <= r.status_code < 500, r.text
    error = r.json()["error"]  # OpenAI's shape: message, type, param, code
    assert set(error) >= {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert (error["param"] or "").startswith(field), error
    assert field.split(".")[-1].split("[")[0] in error["message"]
    assert sum(len(f.log.requests) for f in fakes.values()) == 0  # nothing forwarded


def test_after_a_burst_of_hostile_requests_every_tenant_is_served(dev: Served) -> None:
    for p in HOSTILE_CHAT:
        raw, _ = p.values
        assert dev.chat(str(raw)).status_code < 500
    dev.healthy_within(1.0)
    ready = dev.http.get("/readyz").json()["checks"]
    assert ready["writer"] is True and ready["learner"] is True, ready


def test_a_tenant_named_in_metadata_must_match_the_key(tenant: Served) -> None:
    r = tenant.chat(_chat({"metadata": {"tenant": "someone-else"}}))
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "routebandit.metadata.tenant"
    ok = tenant.chat(_chat({"metadata": {"tenant": "acme"}}))
    assert ok.status_code == 200, ok.text


def test_the_task_the_chat_door_stores_is_bounded_as_the_route_door_bounds_it(
        dev: Served) -> None:
    ok = dev.chat(_chat({"metadata": {"task": "t" * 64}}))
    assert ok.status_code == 200, ok.text
    too_long = dev.chat(_chat({"metadata": {"task": "t" * 65}}))
    assert too_long.status_code == 400


# -- development mode answers only its own machine ---------------------------------------

PAGE = {"origin": "http://evil.example"}


@pytest.mark.parametrize(("headers", "status", "field"), [
    pytest.param({"host": "evil.example"}, 403, "host", id="rebound-host"),
    pytest.param({"host": "evil.example:8000", **PAGE}, 403, "host", id="rebound-host-port"),
    pytest.param(PAGE, 403, "origin", id="cross-site-origin"),
    pytest.param({"origin": "null"}, 403, "origin", id="sandboxed-origin"),
    pytest.param({"content-type": "text/plain"}, 415, "content-type", id="simple-text-body"),
    pytest.param({"content-type": "application/x-www-form-urlencoded"}, 415, "content-type",
                 id="form-body"),
])
def test_a_web_page_cannot_drive_development_mode(
        dev: Served, fakes: dict[str, FakeUpstream], headers: dict[str, str], status: int,
        field: str) -> None:
    body = '{"model": "auto", "messages": [{"role": "user", "content": "spend it"}]}'
    r = dev.chat(body, **headers)
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == field
    assert "access-control-allow-origin" not in r.headers
    routed = dev.http.post("/v1/route", content='{"prompt": "x"}',
                           headers={**JSON, **headers})
    assert routed.status_code == status and routed.json()["error"]["field"] == field
    admin = dev.http.post("/v1/policy/checkpoint", headers=headers)
    assert admin.status_code in ((403,) if status == 403 else (200,)), admin.text
    assert sum(len(f.log.requests) for f in fakes.values()) == 0


def test_development_mode_still_answers_its_own_machine(dev: Served) -> None:
    for host in ("127.0.0.1:8000", "localhost", "[::1]:8000"):
        r = dev.chat('{"model": "auto", "messages": [{"role": "user", "content": "x"}]}',
                     host=host, origin=f"http://{host}")
        assert r.status_code == 200, (host, r.text)
    preflight = dev.http.options("/v1/chat/completions", headers={
        **PAGE, "access-control-request-method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers


def test_with_keys_other_hosts_are_served_but_bodies_must_still_be_json(
        tenant: Served) -> None:
    body = '{"model": "auto", "messages": [{"role": "user", "content": "x"}]}'
    assert tenant.chat(body, host="router.internal.example", **PAGE).status_code == 200
    assert tenant.chat(body, **{"content-type": "text/plain"}).status_code == 415


# -- workers: bounded waits, nothing stops them -------------------------------------------

async def test_feedback_answers_503_with_retry_after_when_the_database_does_not_confirm(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = service_settings(tmp_path, f"sqlite:///{tmp_path / 'rb.db'}",
                                commit_timeout_s=0.3)
    async with running(settings) as api:
        did = (await api.route())["decision_id"]
        store = api.service.writer.store
        api.service.writer.inline = False  # a hung database in a thread, not the loop
        real = store.write_batch

        def hung(**parts: Any) -> Any:
            time.sleep(1.5)
            return real(**parts)

        monkeypatch.setattr(store, "write_batch", hung)
        started = time.monotonic()
        r = await api.client.post("/v1/feedback", json={"decision_id": did, "score": 0.5})
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "1"
        assert r.json()["error"]["type"] == "unavailable"
        assert time.monotonic() - started < 1.2
        monkeypatch.setattr(store, "write_batch", real)
        deadline = time.monotonic() + 5
        while store.count("feedback") == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        again = await api.client.post("/v1/feedback", json={"decision_id": did, "score": 0.5},
                                      timeout=10)
        assert again.status_code == 200, again.text  # written once; this is its duplicate


async def test_a_step_the_policy_cannot_learn_is_set_aside_and_learning_goes_on(
        tmp_path: Path) -> None:
    settings = service_settings(tmp_path, f"sqlite:///{tmp_path / 'rb.db'}")
    async with running(settings) as api:
        first, second = (await api.route())["decision_id"], (await api.route())["decision_id"]
        policy = api.service.policy
        real = policy.learn

        def breaks_once(decision: Any, reward: float, **kw: Any) -> None:
            policy.learn = real  # type: ignore[method-assign]
            raise RuntimeError("a record VW chokes on")

        policy.learn = breaks_once  # type: ignore[method-assign]
        for did in (first, second):
            r = await api.client.post("/v1/feedback", json={"decision_id": did, "score": 1})
            assert r.status_code == 200, r.text
        deadline = time.monotonic() + 5
        while api.service.learner.n_learned < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert api.service.learner.n_learned == 1 and api.service.learner.n_failed == 1
        assert api.service.ready
        metrics = (await api.client.get("/metrics")).text
        assert 'routebandit_dead_letters_total{kind="feedback",worker="learner"} 1.0' in metrics


# -- no secret in any sink ----------------------------------------------------------------

PLANTED = "sk-PLANTED-0f9e8d7c6b5a"


def test_no_planted_secret_reaches_any_sink(
        fakes: dict[str, FakeUpstream], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    import logging

    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("UNRELATED_API_KEY", PLANTED)  # a key no model names
    seen: list[str] = []
    for served in _serve(fakes, tmp_path, monkeypatch, with_key=False):
        monkeypatch.setenv("ROUTEBANDIT_SHOULD_NOT_LEAK", PLANTED)

        def keep(r: httpx.Response) -> None:
            seen.append(r.text)
            seen.extend(f"{k}: {v}" for k, v in r.headers.items())

        ok = served.chat('{"model": "auto", "messages": [{"role": "user", "content": "hi"}]}')
        keep(ok)
        fakes["cheap"].behavior.fail_status = 503  # failover paths
        fakes["mid"].behavior.fail_status = 500
        for _ in range(6):
            keep(served.chat('{"model": "auto", "messages": '
                             '[{"role": "user", "content": "again"}]}'))
        fakes["big"].behavior.fail_status = 502  # every model fails: the error path
        keep(served.chat('{"model": "auto", "messages": [{"role": "user", "content": "x"}]}'))
        for p in HOSTILE_CHAT:
            keep(served.chat(str(p.values[0])))
        keep(served.http.post("/v1/models", json={
            "name": "leak", "base_url": "https://api.example.com/v1",
            "api_key_env": "ROUTEBANDIT_SHOULD_NOT_LEAK"}))
        keep(served.http.post("/v1/models", json={
            "name": "leak2", "base_url": "https://api.example.com/v1",
            "api_key_env": "UNRELATED_API_KEY"}))
        keep(served.chat('{"model": "leak2", "messages": [{"role": "user", "content": "x"}]}'))
        did = served.http.post("/v1/route", json={"prompt": "p"}).json()["decision_id"]
        keep(served.http.post("/v1/feedback", json={"decision_id": did, "score": 0.3}))
        keep(served.http.post("/v1/feedback", json={"decision_id": did, "score": 0.9}))
        keep(served.http.get(f"/v1/decisions/{did}"))
        keep(served.http.get("/v1/models"))
        keep(served.http.get("/metrics"))
        served.service.writer  # noqa: B018 (the app is still up; the database is written)
    db = (tmp_path / "routebandit.db").read_bytes()
    wal = tmp_path / "routebandit.db-wal"
    sinks = {"responses": "\n".join(seen), "logs": caplog.text,
             "database": (db + (wal.read_bytes() if wal.exists() else b"")).decode("latin-1")}
    for name, text in sinks.items():
        assert PLANTED not in text, name
        assert KEY not in text, name  # the upstream key goes upstream, nowhere else
    for fake in fakes.values():
        assert all(a in (None, f"Bearer {KEY}") for a in fake.log.auth)
