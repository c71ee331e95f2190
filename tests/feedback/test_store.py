"""Store: schema migrations, decisions, outcomes, idempotent feedback, logged()."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import text

from bandit import Catalog, Decision, Policy, featurize, parse_request
from feedback.errors import FeedbackConflictError, UnknownDecisionError
from feedback.models import utcnow
from feedback.records import FeedbackInput, FeedbackResult
from feedback.rewards import Chosen
from feedback.store import Store

CATALOG = Catalog.from_dict({"models": [
    {"name": "small", "input_price": 0.1, "output_price": 0.4},
    {"name": "large", "input_price": 5.0, "output_price": 15.0},
]})


def decide(prompt: str = "What is the capital of France?") -> Decision:
    return Policy(CATALOG, seed=3).decide(featurize(parse_request(prompt=prompt)))


def new_decision(store: Store, tenant: str = "acme", **kw: object) -> tuple[str, Decision]:
    decision_id, d = uuid.uuid4().hex, decide()
    store.record_decision(decision_id=decision_id, decision=d, tenant=tenant, **kw)  # type: ignore[arg-type]
    return decision_id, d


def feedback(store: Store, decision_id: str, tenant: str = "acme", score: float = 0.8,
             **kw: object) -> object:
    return store.record_feedback(decision_id=decision_id, tenant=tenant, score=score,
                                 reward=score - 0.1, reward_cost_usd=0.001,
                                 reward_latency_ms=500.0, **kw)  # type: ignore[arg-type]


def test_fresh_database_is_at_head(store: Store) -> None:
    assert store.current_revision() == store.head_revision() is not None


def test_older_database_upgrades_in_place(db_url: str) -> None:
    old = Store(db_url, migrate=False)
    old.upgrade("0001")
    decision_id, d = uuid.uuid4().hex, decide()
    old.record_decision(decision_id=decision_id, decision=d, tenant="acme")
    assert old.current_revision() == "0001"
    old.close()
    new = Store(db_url)  # a newer routebandit starting on the old database
    try:
        assert new.current_revision() == new.head_revision()
        record = new.get_decision(decision_id)
        assert record is not None and record.decision == d
        assert new.count_api_keys() == 0  # a table the new revision added
    finally:
        new.close()


def test_decision_round_trip_keeps_what_learning_needs(store: Store) -> None:
    decision_id, d = new_decision(store, user_key="u1", kind="forced", task="qa")
    record = store.get_decision(decision_id, tenant="acme")
    assert record is not None
    assert record.decision == d
    assert (record.user_key, record.kind, record.task, record.prompt_text) == (
        "u1", "forced", "qa", None)
    assert record.created_at.tzinfo is not None
    assert record.outcome is None and record.feedback is None
    assert store.load_decisions([decision_id, "0" * 32]) == {decision_id: d}


def test_a_decisions_brief_is_what_feedback_needs_of_it(store: Store) -> None:
    decision_id, d = new_decision(store, kind="forced")
    brief = store.decision_brief(decision_id)
    assert brief is not None
    assert (brief.tenant, brief.kind, brief.outcome) == ("acme", "forced", None)
    assert brief.chosen == Chosen.of(d)
    store.record_outcome(decision_id=decision_id, latency_ms=900.0, output_tokens=40)
    record = store.get_decision(decision_id)
    brief = store.decision_brief(decision_id)
    assert record is not None and brief is not None
    assert brief.outcome == record.outcome and brief.outcome is not None
    assert store.decision_brief("0" * 32) is None


def test_decision_of_another_tenant_is_invisible(store: Store) -> None:
    decision_id, _ = new_decision(store, tenant="acme")
    assert store.get_decision(decision_id, tenant="globex") is None
    with pytest.raises(UnknownDecisionError):
        feedback(store, decision_id, tenant="globex")


def test_feedback_is_idempotent_and_conflicts_are_named(store: Store) -> None:
    decision_id, _ = new_decision(store)
    first = feedback(store, decision_id, latency_ms=120.0, source="user")
    again = feedback(store, decision_id, latency_ms=120.0, source="user")
    assert first.duplicate is False and again.duplicate is True  # type: ignore[attr-defined]
    assert again.record == first.record  # type: ignore[attr-defined]
    with pytest.raises(FeedbackConflictError, match="^score: "):
        feedback(store, decision_id, score=0.1, latency_ms=120.0, source="user")
    with pytest.raises(FeedbackConflictError, match="^latency_ms: "):
        feedback(store, decision_id, latency_ms=999.0, source="user")
    assert store.count("feedback") == 1


def test_a_batch_of_feedback_is_stored_as_if_one_at_a_time(store: Store) -> None:
    stored, fresh, other = (new_decision(store)[0] for _ in range(3))
    foreign, _ = new_decision(store, tenant="globex")
    feedback(store, stored)

    def fb(decision_id: str, score: float = 0.8) -> FeedbackInput:
        return FeedbackInput(decision_id=decision_id, tenant="acme", score=score,
                             reward=score - 0.1, reward_cost_usd=0.001, reward_latency_ms=500.0)

    batch = [fb(fresh), fb(stored), fb(fresh), fb(stored, 0.2), fb(fresh, 0.3), fb("0" * 32),
             fb(foreign), fb(other)]
    results = store.write_batch(feedback=batch).feedback
    kinds = [type(r).__name__ if not isinstance(r, FeedbackResult) else r.duplicate
             for r in results]
    assert kinds == [False, True, True, "FeedbackConflictError", "FeedbackConflictError",
                     "UnknownDecisionError", "UnknownDecisionError", False]
    new, dup = results[0], results[2]
    assert isinstance(new, FeedbackResult) and isinstance(dup, FeedbackResult)
    assert dup.record == new.record and new.record.seq > 0
    assert store.count("feedback") == 3


def test_unknown_decision(store: Store) -> None:
    with pytest.raises(UnknownDecisionError, match="^decision_id: "):
        feedback(store, "0" * 32)
    with pytest.raises(UnknownDecisionError):
        store.record_outcome(decision_id="0" * 32, latency_ms=1.0)


def test_first_outcome_wins(store: Store) -> None:
    decision_id, _ = new_decision(store)
    assert store.record_outcome(decision_id=decision_id, latency_ms=900.0, input_tokens=12,
                                output_tokens=40, cost_usd=0.002, status="ok") is True
    assert store.record_outcome(decision_id=decision_id, latency_ms=1.0) is False
    record = store.get_decision(decision_id)
    assert record is not None and record.outcome is not None
    assert (record.outcome.latency_ms, record.outcome.output_tokens) == (900.0, 40)


def test_logged_joins_decisions_with_feedback_in_time_order(store: Store) -> None:
    t0 = utcnow()
    ids = []
    for i in range(4):
        decision_id, _ = new_decision(store, created_at=t0 + timedelta(seconds=i))
        ids.append(decision_id)
    for decision_id in ids[:3]:  # the last decision has no feedback yet
        feedback(store, decision_id, score=0.5)
    rows = list(store.logged())
    assert [r.decision_id for r in rows] == ids[:3]
    assert all(r.quality == 0.5 and r.reward == pytest.approx(0.4) for r in rows)
    assert rows[0].decision == decide() and rows[0].cost_usd == 0.001
    window = list(store.logged(since=t0 + timedelta(seconds=1), until=t0 + timedelta(seconds=2)))
    assert [r.decision_id for r in window] == [ids[1]]
    assert list(store.logged(tenant="nobody")) == []
    newest = list(store.logged(limit=2))  # the last two with feedback, oldest first
    assert [r.decision_id for r in newest] == ids[1:3] and newest == rows[1:]
    assert [r.decision_id for r in store.logged(since=t0, limit=10)] == ids[:3]
    assert list(store.logged(limit=0)) == []


def test_checkpoint_marks_what_it_learned(store: Store) -> None:
    ids = [new_decision(store)[0] for _ in range(3)]
    seqs = [feedback(store, i).record.seq for i in ids]  # type: ignore[attr-defined]
    assert [item.seq for item in store.unlearned()] == seqs
    cp = store.save_checkpoint(blob=b"x", policy_version="v1", n_learned=2,
                               learned=[(seqs[0], None), (seqs[1], None)], keep=1)
    assert [item.seq for item in store.unlearned()] == [seqs[2]]
    assert store.latest_checkpoint() == cp
    store.save_checkpoint(blob=b"y", policy_version="v1", n_learned=3,
                          learned=[(seqs[2], None)], keep=1)
    latest = store.latest_checkpoint()
    assert latest is not None and latest.blob == b"y" and latest.last_feedback_seq == seqs[2]
    with store.engine.connect() as conn:  # older blobs are pruned, their rows kept
        blobs = conn.execute(text("select count(*) from checkpoints where blob is not null"))
        assert blobs.scalar_one() == 1
    assert list(store.unlearned()) == []


def test_api_keys_and_catalog_changes(store: Store) -> None:
    rec = store.add_api_key(key_hash="h" * 64, prefix="rb_abcdefg", tenant="acme", admin=True)
    assert store.find_api_key("h" * 64) == rec
    assert store.revoke_api_key("rb_abcdefg") is True
    assert store.find_api_key("h" * 64) is None and store.count_api_keys() == 0
    store.set_catalog_change("new", {"name": "new"})
    store.set_catalog_change("small", None)
    store.set_catalog_change("new", {"name": "new", "input_price": 1.0})
    assert store.catalog_changes() == [("small", None), ("new", {"name": "new",
                                                                  "input_price": 1.0})]


def test_meta_keeps_the_first_value_claimed(store: Store) -> None:
    assert store.meta("feature_key_fingerprint") is None
    assert store.claim_meta("feature_key_fingerprint", "aaaa") == "aaaa"
    assert store.claim_meta("feature_key_fingerprint", "bbbb") == "aaaa"  # the first wins
    assert store.meta("feature_key_fingerprint") == "aaaa"
