"""A record the database refuses is set aside, counted and logged; the workers go on.

The refusals are real: a lone surrogate code point in a text column is refused by
SQLite's driver and by psycopg alike (neither can encode it as UTF-8).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from feedback.errors import RecordRefusedError, StoreUnavailableError, UnknownDecisionError
from feedback.learner import Learner
from feedback.models import utcnow
from feedback.records import FeedbackInput, LearnItem, PendingDecision
from feedback.store import Store
from feedback.writer import BatchWriter
from tests.feedback.test_store import decide, feedback, new_decision


def pending(task: str | None = None) -> PendingDecision:
    return PendingDecision(decision_id=uuid.uuid4().hex, decision=decide(), tenant="acme",
                           created_at=utcnow(), task=task)


def fb(decision_id: str, score: float = 0.5) -> FeedbackInput:
    return FeedbackInput(decision_id=decision_id, tenant="acme", score=score, reward=score,
                         reward_cost_usd=0.0, reward_latency_ms=0.0)


async def test_a_refused_decision_is_set_aside_and_the_rest_of_its_batch_is_written(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    kinds: list[str] = []
    writer = BatchWriter(store, flush_interval_s=1.0, on_dead_letter=kinds.append)
    writer.start()
    try:
        good, bad, later = pending(), pending(task="\ud800"), pending()
        writer.add_decision(good)
        writer.add_decision(bad)
        writer.add_decision(later)
        await writer.flush()
        assert store.get_decision(good.decision_id) is not None
        assert store.get_decision(later.decision_id) is not None
        assert store.get_decision(bad.decision_id) is None
        assert kinds == ["decision"] and writer.dead_lettered == 1
        (letter,) = store.dead_letters()
        assert (letter["worker"], letter["kind"], letter["ref"]) == (
            "writer", "decision", bad.decision_id)
        assert "Unicode" in letter["error"] or "surrogate" in letter["error"]
        assert bad.decision_id in str(letter["record"])  # the whole record, kept
        assert writer.buffered == 0 and writer.running
        assert any("set aside" in r.getMessage() for r in caplog.records)
        # the writer goes on: the next batch is written as usual
        after = pending()
        writer.add_decision(after)
        result = await asyncio.wait_for(writer.feedback(fb(after.decision_id)), 5)
        assert not result.duplicate
        # feedback on the refused decision: it was never stored
        with pytest.raises(UnknownDecisionError):
            await writer.feedback(fb(bad.decision_id))
    finally:
        await writer.stop()


async def test_refused_feedback_is_answered_with_an_error_and_set_aside(store: Store) -> None:
    decision_id, _ = new_decision(store)
    other, _ = new_decision(store)
    writer = BatchWriter(store, flush_interval_s=1.0)
    writer.start()
    try:
        bad = FeedbackInput(decision_id=decision_id, tenant="acme", score=0.5, reward=0.5,
                            reward_cost_usd=0.0, reward_latency_ms=0.0, source="\udfff")
        refused, ok = await asyncio.gather(writer.feedback(bad), writer.feedback(fb(other)),
                                           return_exceptions=True)
        assert isinstance(refused, RecordRefusedError), refused
        assert not isinstance(ok, BaseException) and not ok.duplicate
        assert store.count("feedback") == 1 and store.count("dead_letters") == 1
    finally:
        await writer.stop()


async def test_a_database_that_refuses_everything_keeps_the_batch_for_later(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    # Not a bad record but a bad database: nothing is set aside, everything retried.
    writer = BatchWriter(store, flush_interval_s=1.0)
    real = store.write_batch
    broken = True

    def write_batch(**parts: Any) -> Any:
        if broken:
            raise RuntimeError("disk on fire")
        return real(**parts)

    monkeypatch.setattr(store, "write_batch", write_batch)
    writer.start()
    try:
        a, b = pending(), pending()
        writer.add_decision(a)
        writer.add_decision(b)
        await writer.flush()
        assert writer.buffered == 2 and store.count("dead_letters") == 0
        broken = False
        await writer.flush()
        assert writer.buffered == 0 and store.count("decisions") == 2
    finally:
        await writer.stop()


async def test_a_writer_that_dies_is_logged_and_restarted(
        store: Store, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    writer = BatchWriter(store, flush_interval_s=0.05)
    guarded = writer._flush_guarded
    calls = 0

    async def dies_once() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug")
        await guarded()

    monkeypatch.setattr(writer, "_flush_guarded", dies_once)
    writer.start()
    try:
        deadline = time.monotonic() + 5
        while writer.restarts == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert writer.restarts == 1 and writer.running
        died = [r for r in caplog.records if "writer died" in r.getMessage()]
        assert died and died[0].exc_info is not None  # with its traceback
        p = pending()
        writer.add_decision(p)
        await asyncio.wait_for(writer.feedback(fb(p.decision_id)), 5)
    finally:
        await writer.stop()


async def test_feedback_never_waits_past_the_commit_timeout(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    decision_id, _ = new_decision(store)
    writer = BatchWriter(store, flush_interval_s=1.0, inline=False, commit_timeout_s=0.2)
    real = store.write_batch

    def slow(**parts: Any) -> Any:
        time.sleep(1.0)
        return real(**parts)

    monkeypatch.setattr(store, "write_batch", slow)
    writer.start()
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError, match="did not confirm within 0.2 s"):
            await writer.feedback(fb(decision_id))
        assert time.monotonic() - started < 0.8
        # still queued: written once the database answers; a retry is its duplicate
        monkeypatch.setattr(store, "write_batch", real)
        writer.commit_timeout_s = 5.0
        deadline = time.monotonic() + 5
        while store.count("feedback") == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        again = await writer.feedback(fb(decision_id))
        assert again.duplicate and store.count("feedback") == 1
    finally:
        await writer.stop()


async def test_shutdown_is_bounded_when_the_database_hangs(
        store: Store, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    writer = BatchWriter(store, flush_interval_s=1.0, inline=False)

    def hangs(**parts: Any) -> Any:
        time.sleep(3.0)
        raise StoreUnavailableError("database unavailable: gone")

    writer.start()
    monkeypatch.setattr(store, "write_batch", hangs)
    writer.add_decision(pending())
    started = time.monotonic()
    await writer.stop(timeout_s=0.3)
    assert time.monotonic() - started < 1.5
    assert any("within 0 s" in r.getMessage() or "of shutdown" in r.getMessage()
               for r in caplog.records)


def test_a_step_that_cannot_be_learned_is_recorded_set_aside_and_not_retried(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    from bandit import Catalog
    from bandit.policy import Policy

    learner = Learner(store)
    kinds: list[str] = []
    learner.on_dead_letter = kinds.append
    policy = learner.resume(lambda: Policy(Catalog.from_dict({"models": [{"name": "a"}]})))
    decision_id, d = new_decision(store)
    other, _ = new_decision(store)
    first = feedback(store, decision_id).record.seq  # type: ignore[attr-defined]
    second = feedback(store, other).record.seq  # type: ignore[attr-defined]

    def explode(*args: Any, **kw: Any) -> None:
        raise ValueError("VW could not parse the example")

    real = policy.learn
    policy.learn = explode  # type: ignore[method-assign]
    assert learner.learn_many([LearnItem(seq=first, decision=d, reward=0.5)]) == 1
    policy.learn = real  # type: ignore[method-assign]
    assert learner.n_failed == 1 and kinds == ["feedback"]
    assert store.count("dead_letters") == 1
    # the next step is learned as usual
    assert learner.learn_many([LearnItem(seq=second, decision=d, reward=0.5)]) == 1
    assert learner.n_learned == 1
    # the failed step is in the checkpoint's learn_log with its error: never retried
    learner.checkpoint()
    assert store.count("learn_log") == 2
