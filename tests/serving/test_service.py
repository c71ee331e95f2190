"""RouterService as the gateway uses it: forced decisions, outcomes, policy swap."""

from __future__ import annotations

import pytest

from bandit import Policy
from bandit.errors import RequestError
from feedback.errors import UnknownDecisionError
from serving.calls import Outcome, RouteRequest
from tests.serving.conftest import Api

MESSAGES = [{"role": "user", "content": "Write a haiku about routers."}]


async def test_forced_decision_is_logged_with_probability_one(api: Api) -> None:
    svc = api.service
    decision_id, d = await svc.route(RouteRequest(messages=MESSAGES, force_model="gpt-5",
                                                  kind="passthrough", tenant="acme"))
    assert (d.model, d.probability, d.pmf) == ("gpt-5", 1.0, (("gpt-5", 1.0),))
    record = await svc.get_decision(decision_id, "acme")
    assert (record.kind, record.tenant, record.decision.probability) == ("passthrough", "acme",
                                                                         1.0)
    with pytest.raises(RequestError, match="^model: unknown model"):
        await svc.route(RouteRequest(messages=MESSAGES, force_model="nope"))


async def test_outcome_feeds_the_reward(api: Api) -> None:
    svc = api.service
    decision_id, d = await svc.route(RouteRequest(messages=MESSAGES, profile="balanced"))
    await svc.record_outcome(decision_id, Outcome(latency_ms=2000.0, input_tokens=100,
                                                      output_tokens=50, cost_usd=0.004))
    await svc.record_outcome(decision_id, Outcome(latency_ms=1.0))  # first one wins
    result = await svc.feedback(decision_id=decision_id, tenant=None, score=1.0)
    # 1.0 - 0.02 * (0.004 / 0.001) - 0.02 * (2000 / 1000)
    assert result.record.reward == pytest.approx(1.0 - 0.08 - 0.04)
    record = await svc.get_decision(decision_id, None)
    assert record.outcome is not None and record.outcome.latency_ms == 2000.0
    with pytest.raises(UnknownDecisionError):
        await svc.record_outcome("0" * 32, Outcome())


async def test_default_quality_does_not_override_real_feedback(api: Api) -> None:
    svc = api.service
    decision_id, _ = await svc.route(RouteRequest(messages=MESSAGES))
    await svc.feedback(decision_id=decision_id, tenant=None, score=0.2, source="user")
    await svc.default_quality(decision_id, 0.9)
    record = await svc.get_decision(decision_id, None)
    assert record.feedback is not None and record.feedback.score == 0.2


async def test_swap_policy_serves_and_checkpoints_the_new_one(api: Api) -> None:
    svc = api.service
    new = Policy(svc.catalog, seed=5)
    new.set_version("v7")
    await svc.swap_policy(new)
    _, d = await svc.route(RouteRequest(messages=MESSAGES))
    assert d.policy_version == "v7"
    cp = svc.store.latest_checkpoint()
    assert cp is not None and (cp.reason, cp.policy_version) == ("swap", "v7")
    assert svc.profiles == ("quality", "balanced", "cheap")
