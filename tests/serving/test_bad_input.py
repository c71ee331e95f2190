"""Bad input never hurts: each kind gets a 4xx naming what was wrong, never a 5xx, and
the service keeps serving (nothing poisons the write-behind queue)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.serving.conftest import Api, running, service_settings

JSON = {"content-type": "application/json"}


def _nested(depth: int) -> bytes:
    return b'{"prompt": "hi", "metadata": {"deep": ' + b"[" * depth + b"]" * depth + b"}}"


BAD_ROUTE_BODIES = [
    pytest.param(b'{"prompt": "hi"', "body", id="truncated-json"),
    pytest.param(b"", "body", id="empty"),
    pytest.param(b"[1, 2]", "body", id="array"),
    pytest.param(b'"just a string"', "body", id="string"),
    pytest.param(b'{"prompt": "\xff\xfe"}', "body", id="invalid-utf8"),
    pytest.param(_nested(100_000), "body", id="deep-nesting"),
    pytest.param(b'{"prompt": 42}', "prompt", id="wrong-type"),
    pytest.param(b'{"prompt": "hi", "max_tokens": 1e400}', "max_tokens", id="huge-number"),
    pytest.param(b'{"prompt": "hi", "max_tokens": 99999999999999999999999999}', "max_tokens",
                 id="huge-integer"),
    pytest.param(b'{"prompt": "hi", "weights": {"cost": NaN}}', "weights.cost", id="nan"),
    pytest.param(b'{"prompt": "hi", "weights": {"cost": Infinity}}', "weights.cost",
                 id="infinity"),
    pytest.param(b'{"prompt": "hi", "weights": {"cost": -Infinity}}', "weights.cost",
                 id="minus-infinity"),
    pytest.param(b'{"prompt": "hi", "colour": "blue"}', "colour", id="unknown-field"),
    pytest.param(b'{"prompt": "hi", "weights": {"cost": 1e308}}', "weights.cost",
                 id="huge-weight"),
    pytest.param(b'{"prompt": "hi", "metadata": {"task": "\\ud800"}}', "metadata.task",
                 id="surrogate-in-task"),
    pytest.param(b'{"prompt": "a\\udfffb"}', "prompt", id="surrogate-in-prompt"),
    pytest.param(b'{"messages": [{"role": "user", "content": "\\ud800"}]}', "messages",
                 id="surrogate-in-messages"),
    pytest.param(b'{"prompt": "hi", "metadata": {"task": "a\\u0000b"}}', "metadata.task",
                 id="nul-in-task"),
    pytest.param(b'{"prompt": "hi", "metadata": {"user_key": "\\u0000"}}', "metadata.user_key",
                 id="nul-in-user-key"),
    pytest.param(b'{"messages": [{"role": "user", "content": {"deep": [[[]]]}}]}', "messages",
                 id="bad-message-content"),
    pytest.param(b'{"messages": "hello"}', "messages", id="messages-not-a-list"),
]


@pytest.mark.parametrize(("raw", "field"), BAD_ROUTE_BODIES)
async def test_bad_route_bodies_are_4xx_naming_the_field(api: Api, raw: bytes,
                                                         field: str) -> None:
    r = await api.client.post("/v1/route", content=raw, headers=JSON)
    assert 400 <= r.status_code < 500, r.text
    error = r.json()["error"]
    assert error["message"]
    assert (error["field"] or "").startswith(field), error
    assert (await api.client.post("/v1/route", json={"prompt": "still fine"})).status_code == 200


async def test_lone_surrogates_and_control_characters_route(api: Api) -> None:
    # Valid JSON whose strings are not valid Unicode text: routed, stored, audited.
    body = b'{"prompt": "a\\ud800b\\u0000c\\u001f", "metadata": {"task": "t\\udfff"}}'
    r = await api.client.post("/v1/route", content=body, headers=JSON)
    assert r.status_code in (200, 422), r.text
    if r.status_code == 200:
        did = r.json()["decision_id"]
        fb = await api.client.post("/v1/feedback", json={"decision_id": did, "score": 1.0})
        assert fb.status_code == 200, fb.text
        assert (await api.client.get(f"/v1/decisions/{did}")).status_code == 200
    assert (await api.client.post("/v1/route", json={"prompt": "still fine"})).status_code == 200


BAD_FEEDBACK = [
    pytest.param({"score": 0.5}, "decision_id", id="missing-id"),
    pytest.param({"decision_id": 12, "score": 0.5}, "decision_id", id="id-wrong-type"),
    pytest.param({"decision_id": "x" * 65, "score": 0.5}, "decision_id", id="id-too-long"),
    pytest.param({"decision_id": "D", "score": [0.5]}, "score", id="score-list"),
    pytest.param({"decision_id": "D", "score": None}, "score", id="score-null"),
    pytest.param({"decision_id": "D", "score": 0.5, "input_tokens": 1.5}, "input_tokens",
                 id="fractional-tokens"),
    pytest.param({"decision_id": "D", "score": 0.5, "input_tokens": -1}, "input_tokens",
                 id="negative-tokens"),
    pytest.param({"decision_id": "D", "score": 0.5, "latency_ms": 1e309}, "latency_ms",
                 id="overflowing-latency"),
    pytest.param({"decision_id": "D", "score": 0.5, "source": "a\u0000b"}, "source",
                 id="nul-in-source"),
    pytest.param({"decision_id": "D", "score": 0.5, "extra": {"a": 1}}, "extra",
                 id="unknown-field"),
]


@pytest.mark.parametrize(("body", "field"), BAD_FEEDBACK)
async def test_bad_feedback_is_4xx_and_stores_nothing(api: Api, body: dict[str, object],
                                                     field: str) -> None:
    did = (await api.route())["decision_id"]
    body = {k: (did if v == "D" else v) for k, v in body.items()}
    r = await api.client.post("/v1/feedback", content=json.dumps(body), headers=JSON)
    assert 400 <= r.status_code < 500, r.text
    assert (r.json()["error"]["field"] or "").startswith(field), r.text
    audit = (await api.client.get(f"/v1/decisions/{did}")).json()
    assert audit["feedback"] is None
    ok = await api.client.post("/v1/feedback", json={"decision_id": did, "score": 0.5})
    assert ok.status_code == 200, ok.text


async def test_concurrent_duplicate_feedback_is_stored_and_learned_once(api: Api) -> None:
    did = (await api.route())["decision_id"]
    body = {"decision_id": did, "score": 0.7, "latency_ms": 120.0}
    rs = await asyncio.gather(*(api.client.post("/v1/feedback", json=body) for _ in range(20)))
    assert {r.status_code for r in rs} == {200}
    assert sorted(r.json()["duplicate"] for r in rs) == [False] + [True] * 19
    assert len({r.json()["feedback_seq"] for r in rs}) == 1
    conflicting = await api.client.post("/v1/feedback", json={**body, "score": 0.1})
    assert conflicting.status_code == 409
    assert conflicting.json()["error"]["field"] == "score"
    await api.service.stop()
    assert api.service.store.count("feedback") == 1
    assert api.service.policy.n_learned == 1


async def test_out_of_order_feedback(api: Api) -> None:
    # Feedback for a decision nobody was given yet: 404, and nothing stored.
    r = await api.client.post("/v1/feedback", json={"decision_id": "0" * 32, "score": 1.0})
    assert r.status_code == 404 and r.json()["error"]["field"] == "decision_id"
    # Feedback in the reverse order of the decisions: each learned once.
    ids = [(await api.route(prompt=f"question {i}"))["decision_id"] for i in range(5)]
    for i, did in enumerate(reversed(ids)):
        r = await api.client.post("/v1/feedback", json={"decision_id": did, "score": i / 4})
        assert r.status_code == 200 and not r.json()["duplicate"]
    await api.service.stop()
    assert api.service.store.count("feedback") == 5
    assert api.service.policy.n_learned == 5


async def test_enormous_prompts_and_bodies(tmp_path: Path, db_url: str) -> None:
    settings = service_settings(tmp_path, db_url, max_prompt_chars=10_000,
                                max_body_bytes=64_000)
    async with running(settings) as api:
        r = await api.client.post("/v1/route", json={"prompt": "x" * 10_001})
        assert r.status_code == 422 and r.json()["error"]["field"] == "prompt"
        r = await api.client.post("/v1/route", json={"prompt": "x" * 100_000})
        assert r.status_code == 413 and r.json()["error"]["field"] == "body"

        async def chunks():  # no Content-Length: the limit holds while streaming too
            for _ in range(100):
                yield b"x" * 1000

        r = await api.client.post("/v1/route", content=chunks(), headers=JSON)
        assert r.status_code == 413
        r = await api.client.post("/v1/chat/completions", json={
            "model": "auto", "messages": [{"role": "user", "content": "x" * 100_000}]})
        assert r.status_code == 413
        assert (await api.client.post("/v1/route", json={"prompt": "fine"})).status_code == 200


BAD_CHAT_BODIES = [
    pytest.param(b'{"model": "auto", "messages": [', id="truncated-json"),
    pytest.param(b'{"model": "auto", "messages": "\xff"}', id="invalid-utf8"),
    pytest.param(b'{"model": "auto", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                 id="deep-nesting"),
    pytest.param(b"[]", id="array"),
    pytest.param(b'{"messages": [{"role": "user", "content": "hi"}]}', id="missing-model"),
    pytest.param(b'{"model": "auto", "messages": 3}', id="messages-wrong-type"),
    pytest.param(b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], '
                 b'"temperature": NaN}', id="nan"),
    pytest.param(b'{"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}',
                 id="unknown-model"),
]


@pytest.mark.parametrize("raw", BAD_CHAT_BODIES)
async def test_bad_chat_bodies_are_4xx_in_openai_format(api: Api, raw: bytes) -> None:
    r = await api.client.post("/v1/chat/completions", content=raw, headers=JSON)
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["error"]["message"]
