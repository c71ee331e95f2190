"""POST /v1/feedback: rewards, idempotency, unknown decisions, every kind of bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from bandit import Catalog, RewardWeights, example_catalog_path, reward
from serving.routes.feedback import FeedbackOut
from tests.serving.conftest import Api, running, service_settings

CATALOG = Catalog.load(example_catalog_path())


async def test_route_feedback_audit(api: Api) -> None:
    out = await api.route(prompt="Summarise the plot of Hamlet.", profile="balanced")
    r = await api.client.post("/v1/feedback", json={
        "decision_id": out["decision_id"], "score": 0.9, "latency_ms": 1500,
        "input_tokens": 1000, "output_tokens": 500, "source": "judge"})
    assert r.status_code == 200, r.text
    fb = r.json()
    assert FeedbackOut.model_validate(fb).model_dump() == fb  # the documented schema
    cost = CATALOG.get(out["model"]).call_cost_usd(input_tokens=1000, output_tokens=500)
    expected = reward(RewardWeights(quality=1, cost=0.02, latency=0.02), quality=0.9,
                      cost_usd=cost, latency_ms=1500)
    assert fb["reward"] == pytest.approx(expected)
    assert (fb["cost_usd"], fb["latency_ms"], fb["duplicate"]) == (pytest.approx(cost), 1500,
                                                                   False)
    audit = (await api.client.get(f"/v1/decisions/{out['decision_id']}")).json()
    assert audit["feedback"]["score"] == 0.9 and audit["feedback"]["source"] == "judge"
    assert audit["feedback"]["reward"] == pytest.approx(expected)


async def test_score_alone_uses_the_decision_time_estimates(api: Api) -> None:
    out = await api.route(prompt="hello")
    fb = (await api.client.post("/v1/feedback", json={"decision_id": out["decision_id"],
                                                       "score": 1.0})).json()
    audit = (await api.client.get(f"/v1/decisions/{out['decision_id']}")).json()
    expected = audit["expected"][out["model"]]
    assert fb["cost_usd"] == pytest.approx(expected["cost_usd"])
    assert fb["latency_ms"] == pytest.approx(expected["latency_ms"])


async def test_feedback_is_stored_and_learned_once(api: Api) -> None:
    out = await api.route()
    body = {"decision_id": out["decision_id"], "score": 0.5, "latency_ms": 300}
    first = await api.client.post("/v1/feedback", json=body)
    second = await api.client.post("/v1/feedback", json=body)
    assert first.status_code == second.status_code == 200
    assert first.json()["reward"] == second.json()["reward"]
    assert (first.json()["duplicate"], second.json()["duplicate"]) == (False, True)
    r = await api.client.post("/v1/feedback", json={**body, "score": 0.6})
    assert r.status_code == 409 and r.json()["error"]["field"] == "score"
    await api.service.stop()  # drains the learner
    assert api.service.store.count("feedback") == 1
    assert api.service.policy.n_learned == 1


async def test_feedback_never_misses_a_fresh_decision(tmp_path: Path, db_url: str) -> None:
    # Decisions are written every second at most; feedback right away still finds them.
    async with running(service_settings(tmp_path, db_url, flush_interval_ms=1000)) as api:
        out = await api.route()
        assert api.service.writer.is_pending(out["decision_id"])
        api.service._recent.clear()  # not even the in-memory cache helps
        r = await api.client.post("/v1/feedback", json={"decision_id": out["decision_id"],
                                                         "score": 1})
        assert r.status_code == 200, r.text
        assert api.service.store.get_decision(out["decision_id"]) is not None


@pytest.mark.parametrize("with_outcome", [False, True])
async def test_feedback_on_a_decision_no_longer_in_memory(api: Api, with_outcome: bool
                                                         ) -> None:
    # The store's brief of the decision gives the reward the in-memory copy gives.
    from feedback.rewards import Chosen, feedback_reward
    from serving.calls import Outcome

    out = await api.route(prompt="Summarise the plot of Hamlet.", profile="balanced")
    decision_id = out["decision_id"]
    if with_outcome:
        await api.service.record_outcome(decision_id, Outcome(
            latency_ms=2300.0, input_tokens=800, output_tokens=900, cost_usd=0.004,
            status="ok"))
    await api.service.writer.flush()
    record = api.service.store.get_decision(decision_id)
    assert record is not None
    expected = feedback_reward(Chosen.of(record.decision), catalog=api.service.catalog,
                               score=0.7, outcome=record.outcome)
    api.service._recent.clear()
    r = await api.client.post("/v1/feedback", json={"decision_id": decision_id,
                                                     "score": 0.7})
    assert r.status_code == 200, r.text
    assert r.json()["reward"] == pytest.approx(expected.value)
    assert r.json()["latency_ms"] == pytest.approx(2300.0 if with_outcome
                                                   else expected.latency_ms)


async def test_unknown_decision_is_404(api: Api) -> None:
    r = await api.client.post("/v1/feedback", json={"decision_id": "f" * 32, "score": 0.5})
    assert r.status_code == 404 and r.json()["error"]["field"] == "decision_id"
    r = await api.client.get(f"/v1/decisions/{'f' * 32}")
    assert r.status_code == 404


BAD_FEEDBACK = [
    pytest.param({"score": 1.5}, "score", id="score-above-1"),
    pytest.param({"score": -0.01}, "score", id="score-below-0"),
    pytest.param({"score": "0.5"}, "score", id="score-string"),
    pytest.param({"score": True}, "score", id="score-bool"),
    pytest.param({"score": None}, "score", id="score-null"),
    pytest.param({"score": [0.5]}, "score", id="score-list"),
    pytest.param({}, "score", id="score-missing"),
    pytest.param({"score": 0.5, "decision_id": None}, "decision_id", id="id-null"),
    pytest.param({"score": 0.5, "decision_id": 7}, "decision_id", id="id-number"),
    pytest.param({"score": 0.5, "decision_id": "x" * 65}, "decision_id", id="id-too-long"),
    pytest.param({"score": 0.5, "latency_ms": -1}, "latency_ms", id="negative-latency"),
    pytest.param({"score": 0.5, "cost_usd": "free"}, "cost_usd", id="cost-string"),
    pytest.param({"score": 0.5, "input_tokens": 1.5}, "input_tokens", id="float-tokens"),
    pytest.param({"score": 0.5, "output_tokens": -3}, "output_tokens", id="negative-tokens"),
    pytest.param({"score": 0.5, "source": "s" * 65}, "source", id="long-source"),
    pytest.param({"score": 0.5, "stars": 5}, "stars", id="unknown-field"),
]


@pytest.mark.parametrize(("patch", "field"), BAD_FEEDBACK)
async def test_bad_feedback_is_422_naming_the_field(
    api: Api, patch: dict[str, object], field: str
) -> None:
    out = await api.route()
    body = {"decision_id": out["decision_id"], **patch}
    r = await api.client.post("/v1/feedback", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
async def test_non_finite_scores_are_422(api: Api, literal: str) -> None:
    out = await api.route()
    raw = f'{{"decision_id": "{out["decision_id"]}", "score": {literal}}}'.encode()
    r = await api.client.post("/v1/feedback", content=raw,
                              headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "score", r.text
    assert api.service.store.count("feedback") == 0
