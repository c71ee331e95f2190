"""Fitting a candidate policy from logged decisions (``routebandit train``).

Each logged decision is re-learned with its logged probability, so the candidate learns
off-policy exactly as the live learner would have. The candidate may use another
exploration, VW configuration or reward weights: rewards are then recomputed from the
logged quality, cost and latency, and the action features (which carry the weighted
cost and latency penalties) are rebuilt under the new weights.
"""

from __future__ import annotations

from collections.abc import Iterable

from bandit.decision import Decision
from bandit.errors import RouteBanditError
from bandit.policy import Policy
from bandit.reward import RewardWeights, reward
from feedback.evaluation import Example


def relearn(policy: Policy, examples: Iterable[Example], *,
            weights: RewardWeights | None = None) -> int:
    """Teach ``policy`` the logged decisions; return how many it learned.

    A decision whose model is no longer in the policy's catalog, or whose reward cannot
    be recomputed under ``weights``, is skipped.
    """
    learned = 0
    for x in examples:
        d = x.decision
        w = weights or d.weights
        if weights is not None and x.quality is None:
            continue
        r = float(x.reward) if weights is None else reward(
            w, quality=float(x.quality or 0.0), cost_usd=float(x.cost_usd or 0.0),
            latency_ms=float(x.latency_ms or 0.0))
        allow = [a.model for a in d.actions if a.model in policy.catalog]
        if d.model not in allow:
            continue
        try:
            actions = policy.actions_for(d.context, weights=w, allow=allow)
        except RouteBanditError:
            continue
        index = next((i for i, a in enumerate(actions) if a.model == d.model), None)
        if index is None:
            continue
        replayed = Decision(
            model=d.model, index=index, probability=d.probability, pmf=d.pmf,
            policy_version=d.policy_version, feature_version=d.feature_version, weights=w,
            context=d.context, actions=actions,
        )
        # The logged quality, when there is one, is what the policy's model learns;
        # cost and latency refine its estimates.
        policy.learn(replayed, r, outcome={"quality": x.quality, "cost_usd": x.cost_usd,
                                           "latency_ms": x.latency_ms})
        learned += 1
    return learned
