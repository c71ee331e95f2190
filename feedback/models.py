"""The tables routebandit remembers, as typed SQLAlchemy 2 models.

``decisions`` holds every routing decision with its propensity, pmf, policy and feature
version, reward weights and the compact context needed to learn from it later;
``outcomes`` what the upstream call measured; ``feedback`` the scores callers post;
``learn_log`` and ``checkpoints`` which feedback the saved policy has learned;
``api_keys`` hashed keys bound to tenants; ``catalog_changes`` models added or removed
at run time; ``meta`` facts every process must agree on (the feature key's
fingerprint); ``stats_*`` the hourly and daily roll-ups the dashboard reads
(:mod:`feedback.stats`). Changing a table means adding an Alembic revision under
``migrations/``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# SQLite only auto-increments an ``INTEGER PRIMARY KEY``; PostgreSQL gets a BIGINT.
SeqInt = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class DecisionRow(Base):
    __tablename__ = "decisions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    tenant: Mapped[str] = mapped_column(String(64))
    user_key: Mapped[str | None] = mapped_column(String(128))
    task: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # "policy" or "forced"
    arm: Mapped[str | None] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(128))
    probability: Mapped[float] = mapped_column(Float)
    pmf: Mapped[list[Any]] = mapped_column(JSON)
    policy_version: Mapped[str] = mapped_column(String(128))
    feature_version: Mapped[str] = mapped_column(String(16))
    weights: Mapped[dict[str, float]] = mapped_column(JSON)
    # Decision.to_dict(): the compact context and the action features the policy saw.
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    prompt_text: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_decisions_tenant_created", "tenant", "created_at"),)


class OutcomeRow(Base):
    __tablename__ = "outcomes"

    decision_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("decisions.id", ondelete="CASCADE"), primary_key=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    input_tokens: Mapped[int | None] = mapped_column(Integer)
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    tokens_estimated: Mapped[bool] = mapped_column(Boolean, default=False)
    cost_usd: Mapped[float | None] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)


class FeedbackRow(Base):
    __tablename__ = "feedback"

    seq: Mapped[int] = mapped_column(SeqInt, primary_key=True, autoincrement=True)
    decision_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("decisions.id", ondelete="CASCADE"), unique=True
    )
    tenant: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    score: Mapped[float] = mapped_column(Float)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    input_tokens: Mapped[int | None] = mapped_column(Integer)
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    cost_usd: Mapped[float | None] = mapped_column(Float)
    source: Mapped[str | None] = mapped_column(String(64))
    # What the reward was computed from, after filling gaps from the outcome/catalog.
    reward: Mapped[float] = mapped_column(Float)
    reward_cost_usd: Mapped[float] = mapped_column(Float)
    reward_latency_ms: Mapped[float] = mapped_column(Float)
    # The grade (``grades.id``) this feedback was promoted from; None: posted directly.
    grade_id: Mapped[int | None] = mapped_column(BigInteger)


class GradeRow(Base):
    """A grade no one posted: the judge's, or an implicit signal's (``feedback/grades.py``).

    ``score`` is None for a judge failure (``status`` ``failed``). A grade waits
    (``pending``) for the grace period, then becomes the decision's feedback
    (``learned``, ``feedback_seq``) unless a better-ranked one exists (``superseded``);
    a person's score arriving after it was learned replaces it (``replaced``).
    """

    __tablename__ = "grades"

    id: Mapped[int] = mapped_column(SeqInt, primary_key=True, autoincrement=True)
    decision_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("decisions.id", ondelete="CASCADE"), index=True)
    tenant: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    source: Mapped[str] = mapped_column(String(64))
    score: Mapped[float | None] = mapped_column(Float)
    weight: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(String(128))  # the judge's model
    cost_usd: Mapped[float | None] = mapped_column(Float)  # the judge's call
    feedback_seq: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (UniqueConstraint("decision_id", "source",
                                       name="uq_grades_decision_source"),)


class CorrectionRow(Base):
    """A person's score that replaced a learned grade: one more learning step (its own
    exactly-once bookkeeping: ``checkpoint_id`` once a checkpoint holds it)."""

    __tablename__ = "corrections"

    id: Mapped[int] = mapped_column(SeqInt, primary_key=True, autoincrement=True)
    feedback_seq: Mapped[int] = mapped_column(
        SeqInt, ForeignKey("feedback.seq", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    score_before: Mapped[float] = mapped_column(Float)
    reward_before: Mapped[float] = mapped_column(Float)
    reward_after: Mapped[float] = mapped_column(Float)
    checkpoint_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    error: Mapped[str | None] = mapped_column(Text)


class CheckpointRow(Base):
    __tablename__ = "checkpoints"

    id: Mapped[int] = mapped_column(SeqInt, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    reason: Mapped[str] = mapped_column(String(32))
    policy_version: Mapped[str] = mapped_column(String(128))
    n_learned: Mapped[int] = mapped_column(BigInteger)
    last_feedback_seq: Mapped[int | None] = mapped_column(BigInteger)
    # Older checkpoints keep their row (learn_log points at it) but drop the blob.
    blob: Mapped[bytes | None] = mapped_column(LargeBinary)


class LearnLogRow(Base):
    __tablename__ = "learn_log"

    feedback_seq: Mapped[int] = mapped_column(
        SeqInt, ForeignKey("feedback.seq", ondelete="CASCADE"), primary_key=True
    )
    checkpoint_id: Mapped[int] = mapped_column(
        SeqInt, ForeignKey("checkpoints.id"), index=True
    )
    error: Mapped[str | None] = mapped_column(Text)


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(SeqInt, primary_key=True, autoincrement=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    tenant: Mapped[str] = mapped_column(String(64))
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    label: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class CatalogChangeRow(Base):
    __tablename__ = "catalog_changes"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    spec: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # None: removed
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class RateCounterRow(Base):
    """Fixed-window rate-limit counters (``serving/ratelimit.py``, PostgreSQL backend)."""

    __tablename__ = "rate_counters"

    bucket: Mapped[str] = mapped_column(String(160), primary_key=True)
    window_start: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)


class MetaRow(Base):
    """Facts of the deployment every process must agree on, by name (e.g. the feature
    key's fingerprint; never a secret)."""

    __tablename__ = "meta"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class DeadLetterRow(Base):
    """A record a background worker could not write or learn, set aside with its error.

    ``record`` is the record as ASCII JSON (whatever it held, it can be stored and read
    back); ``ref`` the decision it belongs to.
    """

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(SeqInt, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    worker: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(32))
    ref: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str] = mapped_column(Text)
    record: Mapped[str] = mapped_column(Text)


class StatsTrafficRow(Base):
    """Decisions with their outcome and feedback, summed per hour (``grain`` ``h``) or UTC
    day (``d``) and tenant, model, decision kind, policy version and outcome status
    (``""``: no outcome). Rebuilt from the raw tables by :mod:`feedback.stats.rollup`."""

    __tablename__ = "stats_traffic"

    grain: Mapped[str] = mapped_column(String(1), primary_key=True)
    start: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # Unix seconds
    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    policy_version: Mapped[str] = mapped_column(String(128), primary_key=True)
    status: Mapped[str] = mapped_column(String(32), primary_key=True)
    decisions: Mapped[int] = mapped_column(BigInteger)
    exploratory: Mapped[int] = mapped_column(BigInteger)
    feedback: Mapped[int] = mapped_column(BigInteger)
    score_sum: Mapped[float] = mapped_column(Float)
    reward_sum: Mapped[float] = mapped_column(Float)
    cost_n: Mapped[int] = mapped_column(BigInteger)
    cost_usd: Mapped[float] = mapped_column(Float)
    priced_n: Mapped[int] = mapped_column(BigInteger)
    priced_cost_usd: Mapped[float] = mapped_column(Float)
    input_tokens: Mapped[int] = mapped_column(BigInteger)
    output_tokens: Mapped[int] = mapped_column(BigInteger)
    latency_n: Mapped[int] = mapped_column(BigInteger)
    latency_sum: Mapped[float] = mapped_column(Float)
    ttft_n: Mapped[int] = mapped_column(BigInteger)
    ttft_sum: Mapped[float] = mapped_column(Float)

    __table_args__ = {"sqlite_with_rowid": False}


class StatsTaskRow(Base):
    """Policy decisions per hour or day, tenant, task tag (``""``: none) and model."""

    __tablename__ = "stats_tasks"

    grain: Mapped[str] = mapped_column(String(1), primary_key=True)
    start: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    task: Mapped[str] = mapped_column(String(64), primary_key=True)
    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    decisions: Mapped[int] = mapped_column(BigInteger)
    feedback: Mapped[int] = mapped_column(BigInteger)
    score_sum: Mapped[float] = mapped_column(Float)
    cost_n: Mapped[int] = mapped_column(BigInteger)
    cost_usd: Mapped[float] = mapped_column(Float)

    __table_args__ = {"sqlite_with_rowid": False}


class StatsHistogramRow(Base):
    """Counts per hour or day, tenant, model, ``metric`` (``latency``, ``ttft``,
    ``propensity``) and ``bin`` (:mod:`feedback.stats.bins`)."""

    __tablename__ = "stats_histograms"

    grain: Mapped[str] = mapped_column(String(1), primary_key=True)
    metric: Mapped[str] = mapped_column(String(16), primary_key=True)
    start: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    bin: Mapped[int] = mapped_column(Integer, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = {"sqlite_with_rowid": False}


class StatsPeriodRow(Base):
    """The hours and days whose roll-ups are built, and when each was last built."""

    __tablename__ = "stats_periods"

    grain: Mapped[str] = mapped_column(String(1), primary_key=True)
    start: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    built_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class StatsStateRow(Base):
    """When the roll-ups were last refreshed (``name`` ``refresh``)."""

    __tablename__ = "stats_state"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
