"""A stand-in for the decision service: fixed preferences, everything recorded in memory."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

from bandit import Catalog, Decision, RewardWeights, featurize, parse_request
from serving.calls import Outcome, RouteRequest


@dataclass
class StubRouter:
    """Routes to the first allowed model of ``preference``; the rest is the ranking."""

    catalog: Catalog
    preference: list[str] = field(default_factory=list)
    profiles: Sequence[str] = ("cheap", "careful")
    routes: list[tuple[str, RouteRequest]] = field(default_factory=list)
    outcomes: dict[str, list[Outcome]] = field(default_factory=dict)
    defaults: list[tuple[str, float]] = field(default_factory=list)
    feedbacks: list[tuple[str, float, str | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._ids = itertools.count(1)
        if not self.preference:
            self.preference = list(self.catalog.names)

    async def route(self, request: RouteRequest) -> tuple[str, Decision]:
        ctx = featurize(parse_request(messages=request.messages))
        if request.force_model is not None:
            order = [request.force_model]
        else:
            allow = request.allow if request.allow is not None else self.catalog.names
            order = [m for m in self.preference if m in allow]
        n = len(order)
        pmf = tuple((m, (n - i) / (n * (n + 1) / 2)) for i, m in enumerate(order))
        decision = Decision(model=order[0], index=0, probability=pmf[0][1], pmf=pmf,
                            policy_version="stub", feature_version=ctx.feature_version,
                            weights=RewardWeights(), context=ctx, actions=())
        decision_id = f"d{next(self._ids)}"
        self.routes.append((decision_id, request))
        return decision_id, decision

    async def record_outcome(self, decision_id: str, outcome: Outcome) -> None:
        self.outcomes.setdefault(decision_id, []).append(outcome)

    async def default_quality(self, decision_id: str, quality: float) -> None:
        self.defaults.append((decision_id, quality))

    async def feedback(self, *, decision_id: str, tenant: str | None, score: float,
                       source: str | None = None) -> None:
        self.feedbacks.append((decision_id, score, source))

    def kinds(self) -> list[tuple[str, str, str]]:
        """(decision id, kind, model) per route call, in order."""
        return [(d, r.kind, r.force_model or "") for d, r in self.routes]
