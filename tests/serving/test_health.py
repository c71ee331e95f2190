"""/healthz, /readyz and the Prometheus metrics."""

from __future__ import annotations

import asyncio
import os

from tests.serving.conftest import Api


async def test_health_and_readiness(api: Api) -> None:
    assert (await api.client.get("/healthz")).json() == {"status": "ok", "pid": os.getpid()}
    ready = await api.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {
        "policy": True, "writer": True, "learner": True, "database": True}


async def test_metrics_after_route_and_feedback(api: Api) -> None:
    out = await api.route(prompt="count me")
    await api.client.post("/v1/feedback", json={"decision_id": out["decision_id"], "score": 1})
    for _ in range(100):  # the learning step happens off the request path
        if api.service.policy.n_learned:
            break
        await asyncio.sleep(0.01)
    text = (await api.client.get("/metrics")).text
    assert f'routebandit_decisions_total{{kind="policy",model="{out["model"]}"}} 1.0' in text
    assert 'routebandit_feedback_total{result="accepted"} 1.0' in text
    assert "routebandit_reward_mean " in text and "routebandit_reward_count 1.0" in text
    assert "routebandit_decision_seconds_bucket" in text
    assert "routebandit_learn_lag_seconds_count 1.0" in text
    assert "routebandit_learn_backlog 0.0" in text


async def test_openapi_documents_the_api_with_examples(api: Api) -> None:
    schema = (await api.client.get("/openapi.json")).json()
    for path in ("/v1/route", "/v1/feedback", "/v1/decisions/{decision_id}", "/v1/models",
                 "/healthz", "/readyz", "/metrics"):
        assert path in schema["paths"], path
    route_in = schema["components"]["schemas"]["RouteIn"]
    assert route_in["examples"] and schema["paths"]["/v1/route"]["post"]["summary"]
    assert schema["components"]["schemas"]["FeedbackIn"]["examples"]
