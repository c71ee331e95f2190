"""POST /v1/route through HTTP against the real app."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bandit import KEYED_FEATURE_VERSION, Catalog, example_catalog_path
from serving.routes.route import RouteOut
from tests.serving.conftest import Api, running, service_settings

CATALOG = Catalog.load(example_catalog_path())


async def test_route_returns_a_logged_decision(api: Api) -> None:
    out = await api.route(messages=[{"role": "system", "content": "Be brief."},
                                    {"role": "user", "content": "Explain recursion."}],
                          metadata={"task": "explain", "user_key": "u-7"})
    assert re.fullmatch(r"[0-9a-f]{32}", out["decision_id"])
    assert RouteOut.model_validate(out).model_dump() == out  # the documented schema
    ranking = {r["model"]: r["probability"] for r in out["ranking"]}
    assert set(ranking) == set(CATALOG.names)  # every eligible model, with its probability
    assert sum(ranking.values()) == pytest.approx(1.0)
    assert out["probability"] == pytest.approx(ranking[out["model"]])
    assert (out["policy_version"], out["feature_version"], out["kind"]) == (
        "local", KEYED_FEATURE_VERSION, "policy")  # the service hashes every word
    audit = (await api.client.get(f"/v1/decisions/{out['decision_id']}")).json()
    assert (audit["model"], audit["task"], audit["user_key"]) == (out["model"], "explain", "u-7")
    assert audit["prompt_text"] is None  # raw prompts are not stored by default


async def test_allow_list_weights_and_capabilities(api: Api) -> None:
    out = await api.route(prompt="hi", models=["gpt-5", "local-qwen"], profile="cheap",
                          weights={"latency": 0.5}, max_tokens=64)
    assert {r["model"] for r in out["ranking"]} == {"gpt-5", "local-qwen"}
    audit = (await api.client.get(f"/v1/decisions/{out['decision_id']}")).json()
    assert audit["weights"] == {"quality": 1.0, "cost": 0.2, "latency": 0.5}
    out = await api.route(prompt="call the weather tool", tools=[{"type": "function"}])
    tool_models = {m.name for m in CATALOG if "tools" in m.capabilities}
    assert {r["model"] for r in out["ranking"]} == tool_models


async def test_audio_files_reasoning_and_long_outputs_need_their_models(api: Api) -> None:
    def holders(cap: str) -> set[str]:
        return {m.name for m in CATALOG if cap in m.capabilities}

    audio = [{"role": "user", "content": [
        {"type": "text", "text": "What is said?"},
        {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}}]}]
    pdf = [{"role": "user", "content": [
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE"}}]}]
    for body, cap in (({"messages": audio}, "audio"), ({"messages": pdf}, "file"),
                      ({"prompt": "Think.", "reasoning_effort": "high"}, "reasoning"),
                      ({"prompt": "Speak.", "modalities": ["text", "audio"]}, "audio")):
        out = await api.route(**body)
        assert {r["model"] for r in out["ranking"]} == holders(cap), body
    out = await api.route(prompt="A long answer, please.", max_tokens=100_000)
    # gpt-5's 128,000 tokens of output; llama states no limit, and its window fits it
    assert {r["model"] for r in out["ranking"]} == {"gpt-5", "gpt-5-mini",
                                                     "llama-3.3-70b-instruct"}
    r = await api.client.post("/v1/route", json={"messages": audio, "models": ["local-qwen"]})
    assert r.status_code == 422
    err = r.json()["error"]
    assert (err["type"], err["needs"]) == ("no_eligible_model", ["audio"])
    assert "it needs audio, which no model has" in err["message"]


async def test_prompts_are_stored_only_on_request(tmp_path: Path, db_url: str) -> None:
    async with running(service_settings(tmp_path, db_url, store_prompts=True)) as api:
        out = await api.route(prompt="keep me")
        audit = (await api.client.get(f"/v1/decisions/{out['decision_id']}")).json()
    assert audit["prompt_text"] == "user: keep me"


BAD_BODIES = [
    pytest.param({}, "messages", id="neither-messages-nor-prompt"),
    pytest.param({"prompt": "a", "messages": [{"role": "user", "content": "b"}]}, "messages",
                 id="both"),
    pytest.param({"messages": []}, "messages", id="empty-messages"),
    pytest.param({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role",
                 id="bad-role"),
    pytest.param({"messages": "hello"}, "messages", id="messages-not-a-list"),
    pytest.param({"prompt": 42}, "prompt", id="prompt-not-a-string"),
    pytest.param({"prompt": "x", "models": ["nope"]}, "models", id="unknown-model"),
    pytest.param({"prompt": "x", "models": []}, "models", id="empty-allow-list"),
    pytest.param({"prompt": "x", "profile": "posh"}, "profile", id="unknown-profile"),
    pytest.param({"prompt": "x", "weights": {"cost": -1}}, "weights.cost", id="neg-weight"),
    pytest.param({"prompt": "x", "weights": {"cost": "high"}}, "weights.cost",
                 id="string-weight"),
    pytest.param({"prompt": "x", "weights": {"speed": 1}}, "weights.speed", id="bad-weight"),
    pytest.param({"prompt": "x", "weights": {"quality": 0, "cost": 0, "latency": 0}},
                 "weights", id="all-zero-weights"),
    pytest.param({"prompt": "x", "max_tokens": 0}, "max_tokens", id="zero-max-tokens"),
    pytest.param({"prompt": "x", "max_tokens": 1.5}, "max_tokens", id="float-max-tokens"),
    pytest.param({"prompt": "x", "metadata": {"task": "t" * 65}}, "metadata.task",
                 id="long-task"),
    pytest.param({"prompt": "x", "colour": "red"}, "colour", id="unknown-field"),
    pytest.param({"prompt": "x", "max_tokens": 200_000}, "models", id="nothing-fits"),
]


@pytest.mark.parametrize(("body", "field"), BAD_BODIES)
async def test_bad_route_requests_are_422_naming_the_field(
    api: Api, body: dict[str, object], field: str
) -> None:
    r = await api.client.post("/v1/route", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field


async def test_no_eligible_model_gives_reasons(api: Api) -> None:
    r = await api.client.post("/v1/route", json={"prompt": "x", "models": ["local-qwen"],
                                                 "tools": [{"type": "function"}]})
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["type"] == "no_eligible_model" and "tools" in err["reasons"]["local-qwen"]


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b""], ids=["garbage", "list", "empty"])
async def test_malformed_bodies_are_422(api: Api, raw: bytes) -> None:
    r = await api.client.post("/v1/route", content=raw,
                              headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "body", r.text


async def test_size_limits(tmp_path: Path, db_url: str) -> None:
    settings = service_settings(tmp_path, db_url, max_body_bytes=4096, max_prompt_chars=1000)
    async with running(settings) as api:
        r = await api.client.post("/v1/route", json={"prompt": "x" * 5000})
        assert r.status_code == 413 and r.json()["error"]["field"] == "body"

        async def chunks():  # no Content-Length: counted while streaming
            for _ in range(3):
                yield json.dumps({"prompt": "y" * 2000}).encode()

        r = await api.client.post("/v1/route", content=chunks(),
                                  headers={"content-type": "application/json"})
        assert r.status_code == 413
        r = await api.client.post("/v1/route", json={"prompt": "z" * 1001})
        assert r.status_code == 422 and r.json()["error"]["field"] == "prompt"
        r = await api.client.post("/v1/route", json={"messages": [
            {"role": "user", "content": "z" * 600}, {"role": "user", "content": "z" * 600}]})
        assert r.status_code == 422 and r.json()["error"]["field"] == "messages"
