"""Grades no one posted: the sampled judge's and the implicit signals' (docs/judge.md).

A grade is stored in ``grades`` as it comes (``pending``; a judge answer without a valid
score is stored ``failed`` and never learned). After the grace period a decision
without feedback gets its best-ranked pending grade as its feedback, promoted through
the same path as a posted score (one ``feedback`` row with ``grade_id``, learned
exactly once); its other grades are ``superseded``. A posted score (a client's or a
person's) always wins:

* posted first: the decision has feedback, so its grades are ``superseded`` and never
  learned;
* posted after the grade was promoted: the posted score takes the grade's place in the
  ``feedback`` row (the grade becomes ``replaced``) and a correction step follows the
  grade's (``corrections``, its own exactly-once bookkeeping, feedback/learner.py).

A grade's ``weight`` says how far its score moves the learned quality from the neutral
0.5: ``quality = 0.5 + weight * (score - 0.5)`` (:func:`learned_quality`); a posted
score counts whole.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, and_, func, select, update

from bandit.calibration import calibrated, learned_quality
from feedback.models import FeedbackRow, GradeRow, utcnow
from feedback.records import GradeRecord
from feedback.store import Store

JUDGE = "judge"
LENGTH = "signal:length"
JSON = "signal:json"
TOOL_ARGS = "signal:tool_args"
REGENERATED = "signal:regenerated"
ABANDONED = "signal:abandoned"
#: Best first: the grade a decision learns from when it has several.
RANKED = (JUDGE, JSON, TOOL_ARGS, LENGTH, REGENERATED, ABANDONED)

PENDING, FAILED, LEARNED, SUPERSEDED, REPLACED = (
    "pending", "failed", "learned", "superseded", "replaced")


def rank(source: str) -> int:
    """A source's place in :data:`RANKED` (unknown sources last)."""
    return RANKED.index(source) if source in RANKED else len(RANKED)


@dataclass(frozen=True)
class NewGrade:
    """A grade to store (:meth:`GradeBook.add_many`); no score: a judge failure."""

    decision_id: str
    source: str
    score: float | None
    weight: float
    reason: str | None = None
    model: str | None = None
    cost_usd: float | None = None
    created_at: datetime | None = None


@dataclass(frozen=True)
class Agreement:
    """The judge against people on the same decisions."""

    n: int
    correlation: float | None
    mean_difference: float | None  # judge minus person


class GradeBook:
    """The ``grades`` table (synchronous, like :class:`Store`; call from a thread)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def add(self, *, decision_id: str, source: str, score: float | None, weight: float,
            reason: str | None = None, model: str | None = None,
            cost_usd: float | None = None, created_at: datetime | None = None) -> int | None:
        """Store a grade (``failed`` without a score); ``None`` if the decision is unknown
        or already has a grade from ``source`` (a decision is graded once per source)."""
        return self.add_many([NewGrade(decision_id=decision_id, source=source, score=score,
                                       weight=weight, reason=reason, model=model,
                                       cost_usd=cost_usd, created_at=created_at)])[0]

    def add_many(self, grades: Sequence[NewGrade]) -> list[int | None]:
        """Store grades in one transaction (as :meth:`add`, each)."""
        if not grades:
            return []
        out: list[int | None] = []
        with self.store._conn(write=True) as conn:
            ids = list({g.decision_id for g in grades})
            tenants = dict(conn.execute(select(_decisions.c.id, _decisions.c.tenant).where(
                _decisions.c.id.in_(ids))).all())
            for g in grades:
                tenant = tenants.get(g.decision_id)
                if tenant is None:
                    out.append(None)
                    continue
                stmt = self.store._insert(GradeRow).values(
                    decision_id=g.decision_id, tenant=tenant,
                    created_at=g.created_at or utcnow(), source=g.source[:64],
                    score=g.score, weight=g.weight,
                    status=PENDING if g.score is not None else FAILED,
                    reason=None if g.reason is None else g.reason[:2000], model=g.model,
                    cost_usd=g.cost_usd,
                ).on_conflict_do_nothing(index_elements=["decision_id", "source"])
                new = conn.execute(stmt.returning(GradeRow.id)).scalar()
                out.append(None if new is None else int(new))
        return out

    def due(self, before: datetime, *, limit: int = 500) -> list[GradeRecord]:
        """Pending grades stored before ``before``, oldest first."""
        stmt = (select(GradeRow).where(GradeRow.status == PENDING,
                                       GradeRow.created_at <= before)
                .order_by(GradeRow.id).limit(limit))
        with self.store._conn() as conn:
            return [GradeRecord(**r._mapping) for r in conn.execute(stmt)]

    def mark(self, ids: Sequence[int], status: str, *, feedback_seq: int | None = None) -> None:
        if not ids:
            return
        with self.store._conn(write=True) as conn:
            conn.execute(update(GradeRow).where(GradeRow.id.in_(list(ids)),
                                                GradeRow.status == PENDING)
                         .values(status=status, feedback_seq=feedback_seq))

    def of(self, decision_id: str) -> list[GradeRecord]:
        stmt = select(GradeRow).where(GradeRow.decision_id == decision_id).order_by(GradeRow.id)
        with self.store._conn() as conn:
            return [GradeRecord(**r._mapping) for r in conn.execute(stmt)]

    def spent_since(self, since: datetime) -> float:
        """What the judge's calls stored since ``since`` cost."""
        stmt = select(func.coalesce(func.sum(GradeRow.cost_usd), 0.0)).where(
            GradeRow.source == JUDGE, GradeRow.created_at >= since)
        with self.store._conn() as conn:
            return float(conn.execute(stmt).scalar_one() or 0.0)

    def models_of(self, decision_ids: Sequence[str]) -> dict[str, str]:
        """The model each decision chose."""
        stmt = select(_decisions.c.id, _decisions.c.model).where(
            _decisions.c.id.in_(list(decision_ids)))
        with self.store._conn() as conn:
            return {str(i): str(m) for i, m in conn.execute(stmt)}

    def calibration(self, *, limit: int = 50_000) -> dict[str, tuple[float, int]]:
        """Per answering model: the judge's mean offset from people's scores on the
        same decisions (judge minus person) and how many pairs it rests on."""
        pairs = _judge_vs_person().add_columns(_decisions.c.model).join(
            _decisions, _decisions.c.id == GradeRow.decision_id).limit(limit)
        sums: dict[str, list[float]] = {}
        with self.store._conn() as conn:
            for judge, person, model in conn.execute(pairs):
                acc = sums.setdefault(str(model), [0.0, 0.0])
                acc[0] += float(judge or 0.0) - float(person)
                acc[1] += 1
        return {m: (total / n, int(n)) for m, (total, n) in sums.items()}

    def agreement(self, *, limit: int = 10_000) -> Agreement:
        """The judge's raw scores against posted scores of the same decisions (a posted
        feedback: no ``grade_id``, not the gateway's own ``default`` or failure scores)."""
        stmt = _judge_vs_person().order_by(GradeRow.id.desc()).limit(limit)
        with self.store._conn() as conn:
            pairs = [(float(j or 0.0), float(p)) for j, p in conn.execute(stmt)]
        return agreement_of(pairs)


def _judge_vs_person() -> Select[float | None, float]:
    # A person's score: posted (no grade_id), not the gateway's default or failure ones.
    return (
        select(GradeRow.score, FeedbackRow.score)
        .join(FeedbackRow, and_(FeedbackRow.decision_id == GradeRow.decision_id,
                                FeedbackRow.grade_id.is_(None)))
        .where(GradeRow.source == JUDGE, GradeRow.score.is_not(None),
               func.coalesce(FeedbackRow.source, "") != "default",
               func.coalesce(FeedbackRow.source, "").not_like("gateway:%"))
    )


def agreement_of(pairs: Sequence[tuple[float, float]]) -> Agreement:
    """Pearson correlation and mean difference of (judge, person) pairs.

    >>> a = agreement_of([(0.9, 1.0), (0.1, 0.0), (0.5, 0.6)])
    >>> a.n, round(a.correlation or 0, 3), round(a.mean_difference or 0, 3)
    (3, 0.993, -0.033)
    """
    n = len(pairs)
    if n == 0:
        return Agreement(0, None, None)
    mj = sum(j for j, _ in pairs) / n
    mp = sum(p for _, p in pairs) / n
    diff = mj - mp
    sj = sum((j - mj) ** 2 for j, _ in pairs)
    sp = sum((p - mp) ** 2 for _, p in pairs)
    if n < 2 or sj == 0 or sp == 0:
        return Agreement(n, None, diff)
    cov = sum((j - mj) * (p - mp) for j, p in pairs)
    return Agreement(n, cov / math.sqrt(sj * sp), diff)


_decisions = GradeRow.metadata.tables["decisions"]

__all__ = ["ABANDONED", "JSON", "JUDGE", "LENGTH", "RANKED", "REGENERATED", "TOOL_ARGS",
           "Agreement", "GradeBook", "NewGrade", "agreement_of", "calibrated",
           "learned_quality", "rank"]
