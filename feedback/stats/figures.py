"""The figures each stats question answers, as plain values (JSON as they stand).

A series is a list with one value per bucket of :attr:`Span.buckets` (``None`` where a
ratio has no denominator); series keyed by model, status or version are dicts of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from feedback.tracking import VersionInfo


@dataclass(frozen=True)
class Span:
    """The window an answer covers: ``[since, until)`` in buckets of ``bucket_s``."""

    since: str
    until: str
    bucket_s: int
    buckets: list[int]  # Unix seconds at the start of each bucket
    tenant: str | None  # None: every tenant
    rolled_up_until: str | None  # roll-ups cover the time before this; raw rows after


@dataclass(frozen=True)
class Traffic:
    """Decisions served (every kind but ``shadow``) per model, bucket by bucket."""

    span: Span
    models: list[str]  # most decisions first
    decisions: dict[str, list[int]]
    totals: dict[str, int]
    kinds: dict[str, int]  # decision kinds over the window (policy, forced, failover, ...)
    shadow: int  # challenger decisions logged in shadow mode, never served


@dataclass(frozen=True)
class ModelCount:
    model: str
    decisions: int
    share: float


@dataclass(frozen=True)
class PromptKind:
    """A kind of prompt (its task tag) and what the policy chose for it."""

    kind: str  # the task tag; "" for prompts without one
    decisions: int
    scored: int
    mean_score: float | None
    cost_usd: float
    models: list[ModelCount]  # most chosen first


@dataclass(frozen=True)
class Kinds:
    span: Span
    kinds: list[PromptKind]  # the most frequent kinds
    other_kinds: int  # kinds beyond those
    other_decisions: int


@dataclass(frozen=True)
class ModelFeedback:
    model: str
    decisions: int
    scored: int
    coverage: float | None
    mean_score: float | None
    mean_reward: float | None


@dataclass(frozen=True)
class Feedback:
    """Feedback coverage (share of decisions with a score) and mean scores."""

    span: Span
    decisions: list[int]
    scored: list[int]
    coverage: list[float | None]
    mean_score: dict[str, list[float | None]]  # per model
    models: list[ModelFeedback]


@dataclass(frozen=True)
class Reference:
    """The model whose prices the counterfactual uses (USD per million tokens)."""

    model: str
    input_price: float
    output_price: float


@dataclass(frozen=True)
class ModelSpend:
    model: str
    decisions: int
    cost_usd: float  # measured or reported cost, where known
    costed: int  # decisions with a known cost
    priced: int  # decisions with a known cost and both token counts
    input_tokens: int
    output_tokens: int
    priced_cost_usd: float
    reference_cost_usd: float  # the same tokens at the reference model's prices
    saving_usd: float


@dataclass(frozen=True)
class Spend:
    """Spend per model, and the saving against the reference model."""

    span: Span
    reference: Reference | None
    method: str
    cost_usd: dict[str, list[float]]  # per model, bucket by bucket
    saving_usd: list[float]  # per bucket
    models: list[ModelSpend]
    total_cost_usd: float
    priced_cost_usd: float
    reference_cost_usd: float
    saving_usd_total: float
    saving_share: float | None  # saving / reference cost
    unpriced: int  # decisions left out of the counterfactual (cost or tokens unknown)


@dataclass(frozen=True)
class ModelLatency:
    model: str
    calls: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    ttft_calls: int
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None


@dataclass(frozen=True)
class Latency:
    """Latency and time to first token of successful calls, from log-spaced histograms."""

    span: Span
    method: str
    models: list[ModelLatency]
    p50_ms: dict[str, list[float | None]]  # per model, bucket by bucket
    p95_ms: dict[str, list[float | None]]


@dataclass(frozen=True)
class ModelErrors:
    model: str
    outcomes: int
    statuses: dict[str, int]
    error_rate: float | None  # outcomes other than ok and cancelled, over outcomes
    failovers: int  # decisions of kind failover that went to this model


@dataclass(frozen=True)
class Cooldown:
    model: str
    state: str  # open (skipped), probe (next call probes), probing


@dataclass(frozen=True)
class Errors:
    """Upstream call outcomes by status, failovers and the models cooling down."""

    span: Span
    outcomes: list[int]
    statuses: dict[str, list[int]]  # per status (ok, error, rejected, ...), bucket by bucket
    failovers: list[int]
    models: list[ModelErrors]
    cooldowns: list[Cooldown] = field(default_factory=list)
    cooldowns_known: bool = False  # False: no gateway in this process to ask


@dataclass(frozen=True)
class PropensityBin:
    low: float
    high: float
    decisions: int


@dataclass(frozen=True)
class ModelExploration:
    model: str
    decisions: int
    exploratory: int


@dataclass(frozen=True)
class Exploration:
    """Policy decisions that did not take the most probable model, and the propensities
    decisions were logged with."""

    span: Span
    decisions: list[int]
    exploratory: list[int]
    share: list[float | None]
    propensities: list[PropensityBin]
    models: list[ModelExploration]
    total_decisions: int
    total_exploratory: int


@dataclass(frozen=True)
class VersionUse:
    """A policy version as the decision log saw it."""

    version: str
    first_bucket: int  # Unix seconds
    last_bucket: int
    decisions: int
    scored: int
    mean_score: float | None
    mean_reward: float | None


@dataclass(frozen=True)
class RegisteredVersion:
    """A policy version in MLflow, with its off-policy estimate (DR, 95% interval)."""

    version: str
    created: str
    kind: str
    aliases: list[str]
    n_learned: int | None
    dr: float | None
    dr_low: float | None
    dr_high: float | None
    logged: float | None  # the logging policy's observed mean reward, same window
    n: int | None  # decisions the estimate used


def registered_version(v: VersionInfo) -> RegisteredVersion:
    """A version as :meth:`~feedback.tracking.Tracker.recent_versions` finds it."""
    def metric(name: str) -> float | None:
        value = v.metrics.get(name)
        return None if value is None else float(value)

    n = metric("ope.n")
    return RegisteredVersion(
        version=v.name, created=datetime.fromtimestamp(v.created_ms / 1000,
                                                       timezone.utc).isoformat(),
        kind=v.kind, aliases=list(v.aliases), n_learned=v.n_learned,
        dr=metric("ope.dr"), dr_low=metric("ope.dr_low"), dr_high=metric("ope.dr_high"),
        logged=metric("ope.logged"), n=None if n is None else int(n))


@dataclass(frozen=True)
class Versions:
    span: Span
    decisions: dict[str, list[int]]  # per policy version, bucket by bucket
    used: list[VersionUse]
    serving: str | None = None  # the live policy's version (this process)
    registry: list[RegisteredVersion] = field(default_factory=list)
    registry_note: str = ""  # why the registry is empty or shortened, if it is


@dataclass(frozen=True)
class Checkpointed:
    created: str
    policy_version: str
    n_learned: int | None
    reason: str


@dataclass(frozen=True)
class Learner:
    """How far behind the learner is."""

    span: Span
    decisions: int
    waiting: int  # decisions in the window without feedback yet
    unlearned: int  # feedback not in a checkpoint yet (counted up to a cap)
    unlearned_capped: bool  # at least that many: the count stopped at the cap
    oldest_unlearned: str | None
    newest_feedback: str | None
    last_checkpoint: Checkpointed | None
    policy_version: str | None = None  # the live policy (this process)
    n_learned: int | None = None
    queued: int | None = None  # feedback queued for this process's learner
    role: str | None = None  # learner, or follower in a cluster


__all__ = ["Checkpointed", "Cooldown", "Errors", "Exploration", "Feedback", "Kinds",
           "Latency", "Learner", "ModelCount", "ModelErrors", "ModelExploration",
           "ModelFeedback", "ModelLatency", "ModelSpend", "PromptKind", "PropensityBin",
           "Reference", "RegisteredVersion", "Span", "Spend", "Traffic", "VersionUse",
           "Versions", "registered_version"]
