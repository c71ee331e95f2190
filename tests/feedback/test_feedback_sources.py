"""Grades no one posted and posted scores: precedence, and exactly-once learning in both
orders with a restart in between (feedback/grades.py, feedback/learner.py)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from bandit import Catalog, Policy, featurize, parse_request
from bandit.decision import Decision
from feedback.errors import FeedbackConflictError
from feedback.grades import JUDGE, LENGTH, GradeBook, agreement_of, learned_quality, rank
from feedback.learner import Learner
from feedback.models import utcnow
from feedback.records import FeedbackInput, FeedbackResult, LearnItem
from feedback.store import Store

CATALOG = Catalog.from_dict({"models": [{"name": "a"}, {"name": "b"}, {"name": "c"}]})


def fresh() -> Policy:
    return Policy(CATALOG, seed=5)


def decided(store: Store) -> tuple[str, Decision]:
    d = fresh().decide(featurize(parse_request(prompt="sort a list in python")))
    decision_id = uuid.uuid4().hex
    store.record_decision(decision_id=decision_id, decision=d, tenant="t")
    return decision_id, d


def write(store: Store, decision_id: str, score: float, *, source: str | None = None,
          grade_id: int | None = None) -> FeedbackResult:
    fb = FeedbackInput(decision_id=decision_id, tenant="t", score=score, reward=score,
                       reward_cost_usd=0.0, reward_latency_ms=0.0, source=source,
                       grade_id=grade_id)
    result = store.write_batch(feedback=[fb]).feedback[0]
    if isinstance(result, Exception):
        raise result
    return result


def promote(store: Store, decision_id: str, score: float, weight: float = 0.8) -> FeedbackResult:
    """A judge grade, promoted as the service's grading does after the grace period."""
    book = GradeBook(store)
    gid = book.add(decision_id=decision_id, source=JUDGE, score=score, weight=weight)
    assert gid is not None
    result = write(store, decision_id, learned_quality(score, weight), source=JUDGE,
                   grade_id=gid)
    book.mark([gid], "learned", feedback_seq=result.record.seq)
    return result


def item(result: FeedbackResult, d: Decision) -> LearnItem:
    """The learning step the service queues for a stored feedback."""
    r = result.record
    replaced = result.replaced
    return LearnItem(seq=r.seq, decision=d, reward=r.reward, outcome={"quality": r.score},
                     correction_id=result.correction_id,
                     reward_before=None if replaced is None else replaced.reward,
                     score_before=None if replaced is None else replaced.score)


def probe(policy: Policy) -> list[float]:
    ctx = featurize(parse_request(prompt="sort a list in python"))
    return policy.scores(ctx, policy.actions_for(ctx))


def never_due(store: Store) -> Learner:
    return Learner(store, checkpoint_every=10_000, checkpoint_interval_s=1e9)


def test_grade_learned_then_person_corrects_it_across_restarts(store: Store) -> None:
    decision_id, d = decided(store)
    learner = never_due(store)
    learner.resume(fresh)
    grade = promote(store, decision_id, 0.9)
    assert learner.learn_many([item(grade, d)]) == 1
    learner.checkpoint()
    del learner  # restart

    learner = never_due(store)
    assert learner.resume(fresh).n_learned == 1  # from the checkpoint, nothing relearned
    person = write(store, decision_id, 0.1, source="app")
    assert person.replaced is not None and person.correction_id is not None
    assert (person.duplicate, person.record.seq) == (False, grade.record.seq)
    assert (person.record.score, person.record.grade_id) == (0.1, None)
    assert learner.learn_many([item(person, d)]) == 1
    assert learner.learn_many([item(person, d)]) == 0  # a repeat is skipped
    learner.checkpoint()
    del learner  # restart

    resumed = Learner(store).resume(fresh)
    assert resumed.n_learned == 2
    assert list(store.unlearned()) == [] and list(store.unlearned_corrections()) == []
    reference = fresh()  # the grade's step, then the documented correction
    q_g = learned_quality(0.9, 0.8)
    reference.learn(d, q_g, outcome={"quality": q_g})
    reference.learn(d, 2 * 0.1 - q_g, outcome={"quality": 2 * 0.1 - q_g}, revisit=True)
    assert probe(resumed) == pytest.approx(probe(reference))
    record = store.get_decision(decision_id)
    assert record is not None and record.learned and record.corrected
    assert [g.status for g in record.grades] == ["replaced"]


def test_correction_is_learned_at_resume_when_the_process_died_before_it(
        store: Store) -> None:
    decision_id, d = decided(store)
    learner = never_due(store)
    learner.resume(fresh)
    learner.learn_many([item(promote(store, decision_id, 0.9), d)])
    learner.checkpoint()
    write(store, decision_id, 0.1)  # committed, then the process dies before learning it
    del learner

    resumed = Learner(store).resume(fresh)
    assert resumed.n_learned == 2
    assert list(store.unlearned_corrections()) == []
    assert Learner(store).resume(fresh).n_learned == 2  # and never again


def test_grade_never_checkpointed_is_replaced_whole_after_a_crash(store: Store) -> None:
    decision_id, d = decided(store)
    learner = never_due(store)
    learner.resume(fresh)
    learner.learn_many([item(promote(store, decision_id, 0.9), d)])
    person = write(store, decision_id, 0.1)
    learner.learn_many([item(person, d)])  # grade + correction, in memory only
    del learner  # dies before any checkpoint

    resumed = Learner(store).resume(fresh)
    # The restored lineage never learned the grade: one step of the person's score.
    assert resumed.n_learned == 1
    reference = fresh()
    reference.learn(d, 0.1, outcome={"quality": 0.1})
    assert probe(resumed) == pytest.approx(probe(reference))
    assert list(store.unlearned_corrections()) == []
    assert Learner(store).resume(fresh).n_learned == 1


def test_person_first_then_grade_learns_only_the_person(store: Store) -> None:
    decision_id, d = decided(store)
    learner = never_due(store)
    learner.resume(fresh)
    person = write(store, decision_id, 0.3)
    learner.learn_many([item(person, d)])
    learner.checkpoint()
    del learner  # restart

    book = GradeBook(store)
    gid = book.add(decision_id=decision_id, source=JUDGE, score=0.9, weight=0.8)
    assert gid is not None
    with pytest.raises(FeedbackConflictError):  # the promotion finds a posted score
        write(store, decision_id, learned_quality(0.9, 0.8), source=JUDGE, grade_id=gid)
    book.mark([gid], "superseded")
    resumed = Learner(store).resume(fresh)
    assert resumed.n_learned == 1
    record = store.get_decision(decision_id)
    assert record is not None and record.feedback is not None
    assert (record.feedback.score, record.feedback.grade_id) == (0.3, None)
    assert [g.status for g in record.grades] == ["superseded"]


def test_grades_once_per_source_and_due_after_grace(store: Store) -> None:
    decision_id, _ = decided(store)
    book = GradeBook(store)
    old = utcnow() - timedelta(hours=1)
    assert book.add(decision_id=decision_id, source=LENGTH, score=0.0, weight=0.6,
                    created_at=old) is not None
    assert book.add(decision_id=decision_id, source=LENGTH, score=0.0, weight=0.6) is None
    assert book.add(decision_id="f" * 32, source=LENGTH, score=0.0, weight=0.6) is None
    failed = book.add(decision_id=decision_id, source=JUDGE, score=None, weight=0.8,
                      reason="timeout")
    assert failed is not None
    assert [g.source for g in book.due(utcnow())] == [LENGTH]  # a failure is never due
    assert book.due(utcnow() - timedelta(hours=2)) == []


def test_rank_and_weight() -> None:
    assert rank(JUDGE) < rank(LENGTH) < rank("something else")
    assert learned_quality(0.0, 0.0) == 0.5 and learned_quality(1.0, 1.0) == 1.0
    a = agreement_of([(0.8, 0.9), (0.2, 0.1)])
    assert a.n == 2 and a.correlation == pytest.approx(1.0)
    assert a.mean_difference == pytest.approx(0.0)
    assert agreement_of([]).correlation is None


def test_a_snapshot_run_carries_the_judge_metrics() -> None:
    from collections.abc import Mapping, Sequence
    from typing import Any

    from feedback.versions import SnapshotSchedule, Snapshotter

    logged: list[dict[str, Any]] = []

    class Logger:
        def log_policy_version(self, policy: Policy, *, examples: Sequence[Any] = (),
                               kind: str = "snapshot",
                               params: Mapping[str, Any] | None = None,
                               metrics: Mapping[str, float] | None = None) -> Any:
            logged.append({"params": dict(params or {}), "metrics": dict(metrics or {})})
            return len(logged)

    policy = fresh()
    d = policy.decide(featurize(parse_request(prompt="hi")))
    policy.learn(d, 1.0)
    snap = Snapshotter(Logger(), schedule=SnapshotSchedule(every_n=1, min_s=0.0),
                       params=lambda: {"judge.model": "big"},
                       metrics=lambda: {"judge.agreement.correlation": 0.8})
    assert snap.snapshot(policy) is not None
    assert logged[0]["params"]["judge.model"] == "big"
    assert logged[0]["metrics"] == {"judge.agreement.correlation": 0.8}
