"""Decision logs with known figures for the stats tests (the store, the routes, the page).

:func:`small` writes seven decisions whose every figure the tests compute by hand;
:func:`busy` writes a few thousand random ones over several days for the page.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from bandit.catalog import Catalog
from bandit.decision import Decision
from bandit.features import Context, featurize, parse_request
from bandit.policy import Policy
from bandit.reward import RewardWeights
from feedback.records import OutcomeRecord, PendingDecision
from feedback.store import Store

#: "Now" for :func:`small`: hours before 12:00 that day are closed (built), 12:xx is raw.
NOW = datetime(2026, 3, 10, 12, 30, tzinfo=timezone.utc)
PRICES = {"cheap": (0.15, 0.6), "big": (10.0, 40.0)}  # USD per million tokens


@dataclass(frozen=True)
class Row:
    id: str
    at: datetime
    tenant: str
    model: str
    kind: str = "policy"
    task: str | None = None
    probability: float = 1.0
    pmf: tuple[tuple[str, float], ...] = ()
    version: str = "v1"
    status: str | None = None  # outcome status; None: no outcome
    latency_ms: float | None = None
    ttft_ms: float | None = None
    tokens: tuple[int, int] | None = None  # outcome's (input, output)
    cost_usd: float | None = None  # outcome's
    score: float | None = None  # feedback; None: none
    reward: float = 0.0
    feedback_cost_usd: float | None = None
    feedback_tokens: tuple[int, int] | None = None


def _t(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=timezone.utc)


SMALL = (
    Row("d1", _t(8, 10, 5), "acme", "cheap", task="math", probability=0.7,
        pmf=(("cheap", 0.7), ("big", 0.3)), status="ok", latency_ms=100, ttft_ms=40,
        tokens=(1000, 500), cost_usd=0.0003, score=1.0, reward=0.9),
    Row("d2", _t(8, 10, 20), "acme", "big", task="math", probability=0.3,
        pmf=(("cheap", 0.7), ("big", 0.3)), status="ok", latency_ms=1000, ttft_ms=200,
        tokens=(1000, 500), cost_usd=0.003, score=0.5, reward=0.2),
    Row("d3", _t(8, 11, 0), "acme", "cheap", task="code", probability=0.6,
        pmf=(("cheap", 0.6), ("big", 0.4)), status="error", latency_ms=5000,
        tokens=(1000, 0), cost_usd=0.0001),
    Row("d4", _t(8, 11, 1), "acme", "big", kind="failover", task="code",
        pmf=(("big", 1.0),), status="ok", latency_ms=2000, ttft_ms=300, tokens=(1000, 100),
        cost_usd=0.0014, score=0.8, reward=0.5),
    Row("d5", _t(9, 9, 0), "globex", "cheap", probability=0.9,
        pmf=(("cheap", 0.9), ("big", 0.1)), version="v2", score=0.2, reward=0.1,
        feedback_cost_usd=0.0002, feedback_tokens=(500, 100)),
    Row("d6", _t(9, 9, 0), "globex", "big", kind="shadow", probability=0.5,
        pmf=(("cheap", 0.5), ("big", 0.5)), version="v3"),
    Row("d7", _t(10, 12, 10), "acme", "cheap", task="math", probability=0.5,
        pmf=(("cheap", 0.5), ("big", 0.5)), version="v2", status="rejected",
        latency_ms=300, tokens=(200, 0), cost_usd=0.00002, score=0.0, reward=-0.1),
)

_MADE: dict[str, object] = {}


def _decision(row: Row) -> Decision:
    # A decision the learner can learn from: real actions for the models of its pmf.
    if not _MADE:
        prices = {**PRICES, "mid": (1.0, 4.0)}
        _MADE["policy"] = Policy(Catalog.from_dict({"models": [
            {"name": m, "input_price": i, "output_price": o} for m, (i, o) in prices.items()]}))
        _MADE["context"] = featurize(parse_request(prompt="What is 2 + 2?"))
    policy, context = _MADE["policy"], _MADE["context"]
    assert isinstance(policy, Policy) and isinstance(context, Context)
    given = dict(row.pmf or ((row.model, 1.0),))
    actions = policy.actions_for(context, allow=list(given))
    pmf = tuple((a.model, given[a.model]) for a in actions)
    return Decision(model=row.model, index=[a.model for a in actions].index(row.model),
                    probability=row.probability, pmf=pmf, policy_version=row.version,
                    feature_version=context.feature_version, weights=RewardWeights(),
                    context=context, actions=actions)


def write(store: Store, rows: tuple[Row, ...] | list[Row]) -> None:
    """Write ``rows``: decisions, then outcomes (at the decision's time plus its
    latency), then feedback (at the time of writing, as the store stamps it)."""
    store.write_batch(decisions=[
        PendingDecision(decision_id=r.id, decision=_decision(r), tenant=r.tenant,
                        created_at=r.at, task=r.task, kind=r.kind) for r in rows])
    outcomes = [
        OutcomeRecord(decision_id=r.id,
                      created_at=r.at + timedelta(milliseconds=r.latency_ms or 0),
                      latency_ms=r.latency_ms, ttft_ms=r.ttft_ms,
                      input_tokens=None if r.tokens is None else r.tokens[0],
                      output_tokens=None if r.tokens is None else r.tokens[1],
                      tokens_estimated=False, cost_usd=r.cost_usd, status=r.status, error=None)
        for r in rows if r.status is not None]
    if outcomes:
        store.write_batch(outcomes=outcomes)
    for r in rows:
        if r.score is None:
            continue
        store.record_feedback(
            decision_id=r.id, tenant=r.tenant, score=r.score, reward=r.reward,
            reward_cost_usd=r.cost_usd or r.feedback_cost_usd or 0.0,
            reward_latency_ms=r.latency_ms or 0.0, cost_usd=r.feedback_cost_usd,
            input_tokens=None if r.feedback_tokens is None else r.feedback_tokens[0],
            output_tokens=None if r.feedback_tokens is None else r.feedback_tokens[1])


def small(store: Store) -> None:
    write(store, SMALL)


MODELS = ("cheap", "mid", "big")
TENANTS = ("acme", "globex", "initech")
TASKS = ("math", "code", "chat", "summarise", None)
STATUSES = ("ok",) * 17 + ("error", "rejected", "cancelled")


def busy(store: Store, *, now: datetime, days: int = 3, n: int = 3000,
         seed: int = 0) -> None:
    """``n`` random decisions over the ``days`` before ``now``, most with an outcome and
    half with feedback; the policy learns to prefer ``mid`` (later decisions choose it
    more often and explore less)."""
    rng = random.Random(seed)
    span = days * 86400
    rows = []
    for i in range(n):
        age = span * (1 - (i + rng.random()) / n)
        at = now - timedelta(seconds=age)
        learned = i / n
        weights = [1.0 - 0.6 * learned, 1.0 + 3 * learned, 1.0 - 0.5 * learned]
        total = sum(weights)
        pmf = tuple((m, w / total) for m, w in zip(MODELS, weights, strict=True))
        index = rng.choices(range(3), weights=weights)[0]
        model = MODELS[index]
        kind = "failover" if rng.random() < 0.03 else "policy"
        status = rng.choice(STATUSES)
        p_in, p_out = {"cheap": (0.15, 0.6), "mid": (1.0, 4.0), "big": (10.0, 40.0)}[model]
        tokens = (rng.randint(50, 2000), rng.randint(10, 800))
        base = {"cheap": 300, "mid": 700, "big": 1800}[model]
        latency = base * rng.lognormvariate(0, 0.4)
        quality = {"cheap": 0.5, "mid": 0.8, "big": 0.85}[model]
        rows.append(Row(
            id=f"b{seed}-{i}", at=at, tenant=rng.choice(TENANTS), model=model, kind=kind,
            task=rng.choice(TASKS), probability=1.0 if kind == "failover" else pmf[index][1],
            pmf=((model, 1.0),) if kind == "failover" else pmf,
            version=f"v{1 + int(learned * 3)}", status=status, latency_ms=latency,
            ttft_ms=latency * 0.3, tokens=tokens,
            cost_usd=(tokens[0] * p_in + tokens[1] * p_out) / 1e6,
            score=None if rng.random() < 0.5 else min(1.0, max(0.0, rng.gauss(quality, 0.2))),
            reward=rng.random()))
    for start in range(0, len(rows), 500):
        write(store, rows[start:start + 500])


def write_catalog(path: Path) -> Path:
    """A catalog of the seeded models (their upstream is nowhere: nothing calls them)."""
    prices = {**PRICES, "mid": (1.0, 4.0)}
    lines = ["models:"] + [
        f"  - {{name: {m}, base_url: 'http://127.0.0.1:9/v1', input_price: {p_in}, "
        f"output_price: {p_out}}}" for m, (p_in, p_out) in prices.items()]
    path.write_text("\n".join(lines) + "\n")
    return path
