"""The group-commit writer (feedback/writer.py): feedback commits before its answer,
outcomes wait for the next flush, and a batch of outcomes is stored as one at a time."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

from feedback.errors import UnknownDecisionError
from feedback.models import utcnow
from feedback.records import FeedbackInput, OutcomeRecord, PendingDecision
from feedback.store import Store
from feedback.writer import BatchWriter
from tests.feedback.test_store import new_decision


def outcome(decision_id: str, latency_ms: float = 100.0) -> OutcomeRecord:
    return OutcomeRecord(decision_id=decision_id, created_at=utcnow(), latency_ms=latency_ms)


async def test_outcomes_wait_for_the_flush_and_feedback_does_not(store: Store) -> None:
    a, _ = new_decision(store)
    b, _ = new_decision(store)
    writer = BatchWriter(store, flush_interval_s=1.0)
    flushes: list[int] = []
    writer.on_flush = lambda n_decisions, n_ops, seconds: flushes.append(n_ops)
    writer.start()
    try:
        stored = asyncio.ensure_future(writer.outcome(outcome(a)))
        await asyncio.sleep(0.2)
        assert not stored.done() and store.count("outcomes") == 0  # not woken by it
        fb = FeedbackInput(decision_id=b, tenant="acme", score=0.5, reward=0.5,
                           reward_cost_usd=0.0, reward_latency_ms=0.0)
        result = await asyncio.wait_for(writer.feedback(fb), timeout=0.5)
        assert not result.duplicate and store.count("feedback") == 1
        assert await stored is True  # committed with the feedback, in one batch
        assert flushes == [2]
    finally:
        await writer.stop()


def test_a_batch_of_outcomes_is_stored_as_one_at_a_time(store: Store) -> None:
    a, _ = new_decision(store)
    b, _ = new_decision(store)
    assert store.record_outcome(decision_id=b, latency_ms=1.0) is True
    result = store.write_batch(outcomes=[
        outcome(a, 10.0), outcome("0" * 32), outcome(a, 20.0), outcome(b, 30.0)])
    first, unknown, *rest = result.outcomes
    assert first is True and isinstance(unknown, UnknownDecisionError)
    assert rest == [False, False]  # a's second outcome and b's were not stored
    record = store.get_decision(a)
    assert record is not None and record.outcome is not None
    assert record.outcome.latency_ms == 10.0  # the first of the batch won
    assert store.count("outcomes") == 2


async def test_sqlite_batches_are_written_on_the_event_loop_and_others_in_a_thread(
    store: Store,
) -> None:
    a, _ = new_decision(store)
    threads: list[int] = []
    real = store.write_batch

    def recording(**kwargs: object) -> object:
        threads.append(threading.get_ident())
        return real(**kwargs)  # type: ignore[arg-type]

    store.write_batch = recording  # type: ignore[method-assign]
    loop_thread = threading.get_ident()
    fb = FeedbackInput(decision_id=a, tenant="acme", score=0.5, reward=0.5,
                       reward_cost_usd=0.0, reward_latency_ms=0.0)
    for inline in (True, False):
        writer = BatchWriter(store, flush_interval_s=1.0, inline=inline)
        writer.start()
        try:
            await asyncio.wait_for(writer.feedback(fb), timeout=2.0)
        finally:
            await writer.stop()
        assert (threads[-1] == loop_thread) is inline
    # The default follows the database: inline for SQLite, a thread for a server.
    assert BatchWriter(store).inline is (store.dialect == "sqlite")


async def test_inline_batches_are_written_in_slices_and_keep_their_order(store: Store) -> None:
    from feedback import writer as writer_module
    from tests.feedback.test_store import decide

    n = writer_module.INLINE_SLICE * 2 + 5
    d = decide()
    pendings = [PendingDecision(decision_id=uuid.uuid4().hex, decision=d, tenant="acme",
                                created_at=utcnow()) for _ in range(n)]
    calls: list[tuple[int, int]] = []
    real = store.write_batch

    def recording(**kwargs: Any) -> Any:
        calls.append((len(kwargs.get("rows") or []), len(kwargs.get("feedback") or [])))
        return real(**kwargs)

    store.write_batch = recording  # type: ignore[method-assign]
    writer = BatchWriter(store, flush_interval_s=1.0, inline=True)
    writer.start()
    try:
        for p in pendings:
            writer.add_decision(p)
        # Feedback on the very last decision rides the last slice, with it.
        fb = FeedbackInput(decision_id=pendings[-1].decision_id, tenant=pendings[-1].tenant,
                           score=0.5, reward=0.5, reward_cost_usd=0.0, reward_latency_ms=0.0)
        result = await asyncio.wait_for(writer.feedback(fb), timeout=5.0)
    finally:
        await writer.stop()
    assert not result.duplicate
    s = writer_module.INLINE_SLICE
    assert calls[:3] == [(s, 0), (s, 0), (5, 1)]
    assert store.count("decisions") >= n
    assert not writer.is_pending(pendings[0].decision_id)  # written, no longer in memory


async def test_a_buffered_decision_is_kept_as_its_row_and_written_whole(store: Store) -> None:
    # The writer keeps each decision's encoded row, not the Decision with its context and
    # actions: tens of objects per decision that Python's cyclic GC would walk at every
    # young collection until the batch commits (10-18 ms pauses under /v1/route load).
    import gc
    import weakref

    from tests.feedback.test_store import decide

    writer = BatchWriter(store, flush_interval_s=1.0)
    writer.start()
    try:
        d = decide("Reverse a linked list in Python without recursion.")
        decision_id = uuid.uuid4().hex
        alive = weakref.ref(d.context)
        expected = d.to_dict()
        writer.add_decision(PendingDecision(decision_id=decision_id, decision=d,
                                            tenant="acme", created_at=utcnow(), task="code"))
        del d
        gc.collect()
        assert alive() is None  # nothing in the writer holds the decision's objects
        assert writer.is_pending(decision_id) and store.get_decision(decision_id) is None
        await writer.flush()
        assert not writer.is_pending(decision_id)
    finally:
        await writer.stop()
    record = store.get_decision(decision_id)
    assert record is not None and record.task == "code" and record.tenant == "acme"
    assert record.decision.to_dict() == expected
