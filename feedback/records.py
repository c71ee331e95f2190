"""Plain frozen values the store reads and writes (no SQLAlchemy objects leak out)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bandit.decision import Decision

if TYPE_CHECKING:  # feedback.rewards imports this module
    from feedback.rewards import Chosen

POLICY = "policy"  # chosen by the policy: probability is its propensity
FORCED = "forced"  # chosen by the caller (pass-through): logged with probability 1
KINDS = (POLICY, FORCED)


@dataclass(frozen=True)
class PendingDecision:
    """A decision to write: the row of ``decisions`` before it reaches the database."""

    decision_id: str
    decision: Decision
    tenant: str
    created_at: datetime
    user_key: str | None = None
    task: str | None = None
    kind: str = POLICY
    arm: str | None = None
    prompt_text: str | None = None


@dataclass(frozen=True)
class OutcomeRecord:
    """What the upstream call measured."""

    decision_id: str
    created_at: datetime
    latency_ms: float | None = None
    ttft_ms: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    tokens_estimated: bool = False
    cost_usd: float | None = None
    status: str = "ok"
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "created_at": self.created_at.isoformat(),
            "latency_ms": self.latency_ms,
            "ttft_ms": self.ttft_ms,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "tokens_estimated": self.tokens_estimated,
            "cost_usd": self.cost_usd,
            "status": self.status,
            "error": self.error,
        }


@dataclass(frozen=True)
class FeedbackInput:
    """One feedback as a caller gave it, with the reward the service computed from it."""

    decision_id: str
    tenant: str
    score: float
    reward: float
    reward_cost_usd: float
    reward_latency_ms: float
    latency_ms: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    source: str | None = None
    # The grade this feedback is promoted from (feedback/grades.py); None: posted directly.
    grade_id: int | None = None

    # Fields that make two feedbacks "the same" (idempotency); reward is derived.
    IDENTITY = ("score", "latency_ms", "input_tokens", "output_tokens", "cost_usd", "source")


@dataclass(frozen=True)
class FeedbackRecord:
    seq: int
    decision_id: str
    tenant: str
    created_at: datetime
    score: float
    reward: float
    reward_cost_usd: float
    reward_latency_ms: float
    latency_ms: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    source: str | None = None
    grade_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "created_at": self.created_at.isoformat(),
            "score": self.score,
            "reward": self.reward,
            "reward_cost_usd": self.reward_cost_usd,
            "reward_latency_ms": self.reward_latency_ms,
            "latency_ms": self.latency_ms,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
            "source": self.source,
            "grade_id": self.grade_id,
        }


@dataclass(frozen=True)
class FeedbackResult:
    """The stored feedback; ``duplicate`` when an identical one had been stored before.

    ``replaced``: the learned grade this (posted) feedback took the place of; its
    learning step is then a correction (``correction_id``, feedback/grades.py).
    """

    record: FeedbackRecord
    duplicate: bool
    replaced: FeedbackRecord | None = None
    correction_id: int | None = None


@dataclass(frozen=True)
class DecisionBrief:
    """What feedback on a decision needs of it: what was chosen (the model, the weights
    it was chosen with, its expected cost and latency), its tenant, kind and outcome."""

    tenant: str
    kind: str
    chosen: Chosen
    outcome: OutcomeRecord | None = None


@dataclass(frozen=True)
class DecisionRecord:
    """A stored decision with what happened after it (the audit view)."""

    decision_id: str
    created_at: datetime
    tenant: str
    user_key: str | None
    task: str | None
    kind: str
    arm: str | None
    decision: Decision
    prompt_text: str | None = None
    outcome: OutcomeRecord | None = None
    feedback: FeedbackRecord | None = None
    # Every grade no one posted (judge, implicit signals), oldest first.
    grades: tuple[GradeRecord, ...] = ()
    # Whether the feedback's learning step is in a checkpoint (learn_log), and its
    # correction's, if a person's score replaced a learned grade.
    learned: bool = False
    corrected: bool = False


@dataclass(frozen=True)
class GradeRecord:
    """A grade of a decision that no one posted (``grades``, feedback/grades.py)."""

    id: int
    decision_id: str
    tenant: str
    created_at: datetime
    source: str
    score: float | None
    weight: float
    status: str
    reason: str | None = None
    model: str | None = None
    cost_usd: float | None = None
    feedback_seq: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "created_at": self.created_at.isoformat(), "source": self.source,
            "score": self.score, "weight": self.weight, "status": self.status,
            "reason": self.reason, "model": self.model, "cost_usd": self.cost_usd,
            "feedback_seq": self.feedback_seq,
        }


@dataclass(frozen=True)
class LoggedExample:
    """A decision joined with its feedback: one row of training / off-policy data."""

    decision_id: str
    decision: Decision
    reward: float
    quality: float
    cost_usd: float
    latency_ms: float
    created_at: datetime
    kind: str = POLICY
    tenant: str = "default"
    feedback_seq: int = 0


@dataclass(frozen=True)
class LearnItem:
    """One learning step: feedback ``seq`` turned into ``policy.learn(decision, reward)``."""

    seq: int
    decision: Decision
    reward: float
    outcome: Mapping[str, float | None] = field(default_factory=dict)
    kind: str = POLICY
    # A correction (``corrections.id``): the step that follows a learned grade's when a
    # person's score replaced it; ``reward_before`` the grade's reward.
    correction_id: int | None = None
    reward_before: float | None = None
    score_before: float | None = None
    revisit: bool = False  # a further pass on a decision learned already (Policy.learn)


@dataclass(frozen=True)
class Checkpoint:
    id: int
    created_at: datetime
    reason: str
    policy_version: str
    n_learned: int
    last_feedback_seq: int | None
    blob: bytes | None


@dataclass(frozen=True)
class ApiKeyRecord:
    id: int
    prefix: str
    tenant: str
    admin: bool
    label: str | None
    created_at: datetime
    revoked_at: datetime | None = None
