"""The gateway inside the real app: RouterService, store and policy behind the SDK."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.fakes.fake_upstream import FakeUpstream
from tests.fakes.server import ServerThread
from tests.serving.gateway_stack import (
    KEY,
    MODELS,
    serve_app,
    started_fakes,
    wait_until,
)

MESSAGES = [{"role": "user", "content": "Write one sentence about foxes"}]


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeUpstream]]:
    yield from started_fakes()


class App:
    def __init__(self, server: ServerThread, key: str) -> None:
        self.server = server
        self.key = key
        self.sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0,
                                 timeout=10)
        self.http = httpx.Client(base_url=server.url, timeout=10,
                                 headers={"authorization": f"Bearer {key}"})

    @property
    def service(self) -> Any:
        return self.server.app.state.service

    def decision(self, decision_id: str, *, outcome: bool = True,
                 feedback: bool = False) -> dict[str, Any]:
        """The audit view, once the group-commit writer has stored what is asked."""
        out: dict[str, Any] = {}

        def ready() -> bool:
            r = self.http.get(f"/v1/decisions/{decision_id}")
            out.update(r.json())
            return r.status_code == 200 and (not outcome or out["outcome"] is not None) and (
                not feedback or out["feedback"] is not None)

        wait_until(ready, timeout=10)
        return out


@pytest.fixture
def app(fakes: dict[str, FakeUpstream], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    yield from _app(fakes, tmp_path, monkeypatch, with_key=True)


@pytest.fixture
def dev_app(fakes: dict[str, FakeUpstream], tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    yield from _app(fakes, tmp_path, monkeypatch, with_key=False)


def _app(fakes: dict[str, FakeUpstream], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
         *, with_key: bool) -> Iterator[App]:
    for server, key in serve_app(fakes, tmp_path, monkeypatch, with_key=with_key):
        a = App(server, key or "sk-anything")  # development mode: whatever the SDK sends
        yield a
        a.sdk.close()
        a.http.close()


def test_routed_call_is_logged_with_its_outcome(app: App, fakes: dict[str, FakeUpstream]) -> None:
    raw = app.sdk.chat.completions.with_raw_response.create(model="auto", messages=MESSAGES)
    resp = raw.parse()
    model = raw.headers["x-routebandit-model"]
    assert resp.model == model and model in MODELS
    audit = app.decision(raw.headers["x-routebandit-decision-id"])
    assert (audit["kind"], audit["model"], audit["tenant"]) == ("policy", model, "acme")
    assert 0 < audit["probability"] <= 1
    usage = fakes[model].log.usages[-1]
    outcome = audit["outcome"]
    assert (outcome["input_tokens"], outcome["output_tokens"]) == (
        usage["prompt_tokens"], usage["completion_tokens"])
    assert outcome["tokens_estimated"] is False and outcome["status"] == "ok"
    p_in, p_out = MODELS[model]
    assert outcome["cost_usd"] == pytest.approx(
        (usage["prompt_tokens"] * p_in + usage["completion_tokens"] * p_out) / 1e6)
    assert fakes[model].log.auth[-1] == f"Bearer {KEY}"


def test_stream_and_passthrough(app: App) -> None:
    with app.sdk.chat.completions.with_streaming_response.create(
            model="big", messages=MESSAGES, stream=True) as raw:
        decision_id = raw.headers["x-routebandit-decision-id"]
        chunks = list(raw.parse())
    assert {c.model for c in chunks} == {"big"}
    audit = app.decision(decision_id)
    assert (audit["kind"], audit["probability"]) == ("passthrough", 1.0)
    assert audit["outcome"]["ttft_ms"] is not None


def test_failover_records_the_failure_as_quality_zero(
    app: App, fakes: dict[str, FakeUpstream]
) -> None:
    seen: list[tuple[str, str, str]] = []
    route = app.service.route

    async def spy(request: Any) -> Any:
        decision_id, decision = await route(request)
        seen.append((decision_id, request.kind, decision.model))
        return decision_id, decision

    app.service.route = spy
    fakes["cheap"].behavior.fail_status = 503
    fakes["mid"].behavior.fail_status = 503
    for _ in range(10):  # until the policy's first choice is a failing model
        resp = app.sdk.chat.completions.create(model="auto", messages=MESSAGES)
        assert resp.model == "big"
        if seen[0][2] != "big":
            break
        seen.clear()
    first_id, kind, failed_model = seen[0]
    assert kind == "policy" and failed_model in ("cheap", "mid")
    assert seen[-1][1:] == ("failover", "big")
    audit = app.decision(first_id, feedback=True)
    assert audit["outcome"]["status"] == "error"
    assert "503" in audit["outcome"]["error"]
    assert audit["feedback"]["score"] == 0.0
    assert audit["feedback"]["source"] == "gateway:error"


def test_models_list_and_openai_errors(app: App) -> None:
    ids = [m.id for m in app.sdk.models.list()]
    assert ids[0] == "auto" and "auto:cheap" in ids and set(MODELS) <= set(ids)
    with pytest.raises(openai.NotFoundError):
        app.sdk.chat.completions.create(model="nope", messages=MESSAGES)
    stranger = openai.OpenAI(base_url=f"{app.server.url}/v1", api_key="rb_wrong",
                             max_retries=0, timeout=10)
    with pytest.raises(openai.AuthenticationError):
        stranger.chat.completions.create(model="auto", messages=MESSAGES)
    stranger.close()


def test_development_mode_accepts_whatever_key_the_sdk_sends(dev_app: App) -> None:
    resp = dev_app.sdk.chat.completions.create(model="auto", messages=MESSAGES)
    assert resp.model in MODELS


def test_upstream_faults_reach_the_apps_metrics(app: App, fakes: dict[str, FakeUpstream]) -> None:
    for name in ("cheap", "mid", "big"):  # every model fails: three failures, two failovers
        fakes[name].behavior.fail_status = 503
    with pytest.raises(openai.InternalServerError):
        app.sdk.chat.completions.create(model="auto", messages=MESSAGES)
    metrics = app.http.get("/metrics").text
    for name in ("cheap", "mid", "big"):
        assert ('routebandit_upstream_failures_total{kind="status_error",model="'
                f'{name}",status="error"}} 1.0') in metrics
    failovers = [line for line in metrics.splitlines()
                 if line.startswith("routebandit_failovers_total{")]
    assert len(failovers) == 2 and all(line.endswith(" 1.0") for line in failovers)
