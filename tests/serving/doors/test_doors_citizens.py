"""Every door of the real app is a full citizen: keys and tenants, the response cache,
the audit record, feedback by decision id and the learning it feeds, metrics, budgets and
rate limits work alike on /v1/chat/completions, /v1/responses and /v1/messages, each
answering in its own protocol's shape."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.fake_upstream import FakeUpstream
from tests.fakes.server import ServerThread
from tests.serving.gateway_stack import MODELS, serve_app, started_fakes, wait_until

FULL = "The quick brown fox jumps over the lazy dog."
USER = [{"role": "user", "content": "Tell me about foxes"}]


def _chat_text(body: dict[str, Any]) -> str:
    return str(body["choices"][0]["message"]["content"])


def _responses_text(body: dict[str, Any]) -> str:
    return str(body["output"][0]["content"][0]["text"])


def _messages_text(body: dict[str, Any]) -> str:
    return str(body["content"][0]["text"])


# door -> (path, body, the answer's text, the error's type field)
DOORS: dict[str, tuple[str, dict[str, Any], Callable[[dict[str, Any]], str]]] = {
    "chat": ("/v1/chat/completions", {"model": "auto", "messages": USER, "temperature": 0},
             _chat_text),
    "responses": ("/v1/responses", {"model": "auto", "input": USER, "temperature": 0},
                  _responses_text),
    "messages": ("/v1/messages", {"model": "auto", "messages": USER, "max_tokens": 64,
                                  "temperature": 0}, _messages_text),
}


def _own_prompt(body: dict[str, Any], door: str) -> dict[str, Any]:
    messages = [{"role": "user", "content": f"Tell me about foxes ({door})"}]
    return {**body, "input" if door == "responses" else "messages": messages}


def _error(door: str, r: httpx.Response) -> tuple[str, str]:
    """(type, message) of an error in the door's own shape."""
    body = r.json()
    if door == "messages":
        assert body["type"] == "error", body
        return body["error"]["type"], body["error"]["message"]
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]["type"], body["error"]["message"]


def _auth(door: str, key: str) -> dict[str, str]:
    # Anthropic's clients send x-api-key (the 2.x SDK sends a bearer token: both work).
    return {"x-api-key": key} if door == "messages" else {"authorization": f"Bearer {key}"}


@contextlib.contextmanager
def _served(fakes: dict[str, FakeUpstream], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
            *, with_key: bool) -> Iterator[tuple[ServerThread, str | None]]:
    yield from serve_app(fakes, tmp_path, monkeypatch, with_key=with_key)


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeUpstream]]:
    yield from started_fakes()


def test_keys_cache_audit_feedback_learning_metrics_and_budgets_on_every_door(
        fakes: dict[str, FakeUpstream], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTEBANDIT_GATEWAY__CACHE", "true")
    monkeypatch.setenv("ROUTEBANDIT_BUDGETS", '{"acme": 0.5}')
    with _served(fakes, tmp_path, monkeypatch, with_key=True) as (server, key):
        assert key is not None
        service = server.app.state.service
        learned = service.policy.n_learned
        admin = httpx.Client(base_url=server.url, timeout=10,
                             headers={"authorization": f"Bearer {key}"})
        with httpx.Client(base_url=server.url, timeout=10) as http, admin:
            for door, (path, body, text) in DOORS.items():
                r = http.post(path, json=body)  # no key
                assert r.status_code == 401 and _error(door, r)[0] in (
                    "invalid_request_error", "authentication_error"), (door, r.text)
                r = http.post(path, json=body, headers=_auth(door, "rb_wrong"))
                assert r.status_code == 401, (door, r.text)
                claimed = {**body, "routebandit": {"metadata": {"tenant": "other"}}}
                r = http.post(path, json=claimed, headers=_auth(door, key))
                assert r.status_code == 400 and "tenant" in _error(door, r)[1], r.text

                # Its own prompt: the cache serves the same chat-shaped request through
                # any door (the answer is translated per door), and a hit has no new decision.
                body = _own_prompt(body, door)
                r = http.post(path, json=body, headers=_auth(door, key))
                assert r.status_code == 200, (door, r.text)
                assert text(r.json()) == FULL
                decision_id = r.headers["x-routebandit-decision-id"]
                assert r.headers["x-routebandit-model"] in MODELS
                again = http.post(path, json=body, headers=_auth(door, key))
                assert again.headers.get("x-routebandit-cache") == "hit", door
                assert again.headers["x-routebandit-decision-id"] == decision_id
                assert text(again.json()) == FULL

                fb = admin.post("/v1/feedback", json={"decision_id": decision_id,
                                                      "score": 1.0})
                assert fb.status_code == 200, fb.text
                audit: dict[str, Any] = {}

                def stored(decision_id: str = decision_id,
                           audit: dict[str, Any] = audit) -> bool:
                    audit.update(admin.get(f"/v1/decisions/{decision_id}").json())
                    return audit.get("outcome") is not None and audit.get(
                        "feedback") is not None

                wait_until(stored, timeout=10)
                assert (audit["tenant"], audit["kind"]) == ("acme", "policy"), door
                assert audit["outcome"]["status"] == "ok"
                assert audit["outcome"]["tokens_estimated"] is False
            wait_until(lambda: service.policy.n_learned >= learned + 3, timeout=10)
            metrics = admin.get("/metrics").text
            calls = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                        if line.startswith("routebandit_upstream_calls_total{")
                        and 'status="ok"' in line)
            assert calls == 3  # one call per door; the cache hits called nobody

            # Spend past the budget: every door refuses in its own shape.
            spend = admin.post("/v1/route", json={"prompt": "hi"}).json()["decision_id"]
            assert admin.post("/v1/feedback", json={"decision_id": spend, "score": 1.0,
                                                    "cost_usd": 1.0}).status_code == 200
            wait_until(lambda: (service.budgets.refresh() or True)
                       and service.budgets.spent.get("acme", 0) >= 0.5, timeout=10)
            kinds = {}
            for door, (path, body, _) in DOORS.items():
                r = http.post(path, json={**body, "temperature": 0.5},
                              headers=_auth(door, key))
                assert r.status_code == 402 and int(r.headers["retry-after"]) >= 1, r.text
                kinds[door] = _error(door, r)[0]
            assert kinds == {"chat": "insufficient_quota", "responses": "insufficient_quota",
                             "messages": "billing_error"}


def test_rate_limits_count_every_door_and_answer_in_its_shape(
        fakes: dict[str, FakeUpstream], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTEBANDIT_RATE_REQUESTS_PER_MIN", "3")
    with _served(fakes, tmp_path, monkeypatch, with_key=True) as (server, key):
        assert key is not None
        with httpx.Client(base_url=server.url, timeout=10) as http:
            for door, (path, body, _) in DOORS.items():  # three of the key's three
                r = http.post(path, json=body, headers=_auth(door, key))
                assert r.status_code == 200, (door, r.text)
            for door, (path, body, _) in DOORS.items():
                r = http.post(path, json=body, headers=_auth(door, key))
                assert r.status_code == 429 and r.headers["retry-after"], (door, r.text)
                assert _error(door, r)[0] == "rate_limit_error", (door, r.text)
            r = http.post("/v1/messages/count_tokens", json={"model": "auto",
                                                             "messages": USER},
                          headers=_auth("messages", key))
            assert r.status_code == 429


def test_development_mode_takes_whatever_key_each_sdk_sends(
        fakes: dict[str, FakeUpstream], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    with _served(fakes, tmp_path, monkeypatch, with_key=False) as (server, _):
        with httpx.Client(base_url=server.url, timeout=10) as http:
            for door, (path, body, text) in DOORS.items():
                r = http.post(path, json=body, headers=_auth(door, "sk-anything"))
                assert r.status_code == 200 and text(r.json()) == FULL, (door, r.text)
            # The browser guard answers in each door's shape too.
            for door, (path, _, _) in DOORS.items():
                r = http.post(path, content=b"{}", headers={"content-type": "text/plain"})
                assert r.status_code == 415, (door, r.text)
                _error(door, r)
