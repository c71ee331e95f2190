"""Group commit: the service's one writer to the store.

Decisions and outcomes are buffered and written every ``flush_interval_s`` (at most one
second, so a crash loses at most the last second of them); feedback wakes the writer,
since ``/v1/feedback`` answers only once it is committed. Outcomes too are acknowledged
only after their transaction commits, but nobody waits on that answer (the gateway
hands them over in the background), and waking the writer for each one gave low
concurrency traffic a commit per outcome. One writer task, one batch in
flight: a decision is always written in the same transaction as, or an earlier one than,
any outcome or feedback that refers to it, so ``/v1/feedback`` never misses a decision
this process returned. Until its batch commits, a decision is only its encoded row
here (:meth:`BatchWriter.is_pending`); the service remembers what feedback needs of it.

On SQLite the WAL that those commits append to is checkpointed (copied into the database
file) by :class:`feedback.wal.WalCheckpointer`, a thread, instead of inside a committing
transaction on the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from feedback.errors import StoreError
from feedback.records import FeedbackInput, FeedbackResult, OutcomeRecord, PendingDecision
from feedback.store import Store

log = logging.getLogger(__name__)

#: Decisions per transaction when batches are written on the event loop (SQLite): about
#: 2 ms of work at a time (~30 us per decision).
INLINE_SLICE = 64


@dataclass
class _Op:
    item: OutcomeRecord | FeedbackInput
    future: asyncio.Future[Any] = field(repr=False)


class BatchWriter:
    def __init__(
        self,
        store: Store,
        *,
        flush_interval_s: float = 0.2,
        max_pending: int = 50_000,
        on_flush: Any = None,
        inline: bool | None = None,
    ) -> None:
        if not 0 < flush_interval_s <= 1.0:
            raise ValueError("flush_interval_s: must be in (0, 1] seconds")
        self.store = store
        self.flush_interval_s = flush_interval_s
        self.max_pending = max_pending
        self.on_flush = on_flush  # callable(n_decisions, n_ops, seconds) for metrics
        # Where a batch is written. SQLite is a local file and a batch takes a few
        # milliseconds: written on the event loop, it delays requests by that much once
        # per batch. Written in a worker thread, it fights the event loop for the GIL
        # (the driver binds every row's parameters holding it and drops it for each
        # step): on `benchmarks/bench_service.py` that stretched requests arriving
        # meanwhile to 40-65 ms, the p99 of /v1/route. A server database answers over
        # the network, so it keeps the thread.
        self.inline = (store.dialect == "sqlite") if inline is None else inline
        # (decision_id, row encoded by the store): a decision is encoded once, on the
        # request path, and its Decision object (context, actions: tens of objects the
        # cyclic GC would walk at every young collection while it waits) is let go.
        self._decisions: deque[tuple[str, Any]] = deque()
        self._pending: set[str] = set()
        self._ops: list[_Op] = []
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._flush_lock: asyncio.Lock | None = None
        self.last_error: str | None = None

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="routebandit-writer")

    async def stop(self) -> None:
        """Write everything still buffered, then stop."""
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    # -- producers --------------------------------------------------------------------
    def add_decision(self, decision: PendingDecision) -> None:
        """Buffer a decision (never blocks).

        Like every method here, call it from the event loop's thread: the buffers are
        touched only there, so no thread lock is needed (a lock shared with a worker
        thread would make requests queue behind the GIL).
        """
        if len(self._pending) >= self.max_pending:
            raise StoreError(
                f"decision buffer full ({self.max_pending} unwritten decisions): "
                f"the database is not keeping up ({self.last_error or 'slow writes'})"
            )
        row = self.store.encode_decision(decision)
        self._pending.add(decision.decision_id)
        self._decisions.append((decision.decision_id, row))

    def is_pending(self, decision_id: str) -> bool:
        """Whether a decision was buffered and is not yet committed."""
        return decision_id in self._pending

    async def written(self, decision_id: str) -> None:
        """Commit the decision first if it is still buffered, so the store can read it."""
        if decision_id in self._pending:
            await self.flush()

    @property
    def buffered(self) -> int:
        return len(self._pending)

    async def outcome(self, outcome: OutcomeRecord) -> bool:
        result: bool = await self._submit(outcome)
        return result

    async def feedback(self, feedback: FeedbackInput) -> FeedbackResult:
        result: FeedbackResult = await self._submit(feedback)
        return result

    async def _submit(self, item: OutcomeRecord | FeedbackInput) -> Any:
        if self._loop is None or self._wake is None or self._stopping:
            raise StoreError("the writer is not running")
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._ops.append(_Op(item, fut))
        if isinstance(item, FeedbackInput):  # outcomes wait for the next flush
            self._wake.set()
        return await fut

    # -- the writer task ----------------------------------------------------------------
    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.flush_interval_s)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            await self.flush()
            if self._stopping:
                await self.flush()
                return

    async def flush(self) -> None:
        """Write one batch of everything buffered so far.

        Batches never overlap (an asyncio lock): a batch taken later commits later, so
        an outcome or feedback is never committed before the decision it refers to.
        """
        if self._flush_lock is None:
            self._flush_lock = asyncio.Lock()
        async with self._flush_lock:
            await self._flush_locked()

    async def _flush_locked(self) -> None:
        decisions = list(self._decisions)
        self._decisions.clear()
        ops, self._ops = self._ops, []
        if not decisions and not ops:
            return
        outcomes = [op for op in ops if isinstance(op.item, OutcomeRecord)]
        feedback = [op for op in ops if isinstance(op.item, FeedbackInput)]
        started = time.perf_counter()
        n_decisions = len(decisions)
        if self.inline:
            # On the event loop, a batch of hundreds of decisions would hold every request
            # for tens of milliseconds: write them a slice at a time, letting requests
            # run in between. Everything else rides the last slice, so a decision is
            # still committed no later than anything that refers to it.
            while len(decisions) > INLINE_SLICE:
                head, decisions = decisions[:INLINE_SLICE], decisions[INLINE_SLICE:]
                try:
                    self.store.write_batch(rows=[row for _, row in head])
                except StoreError as exc:
                    decisions = head + decisions
                    self._failed(exc, decisions, ops)
                    return
                self._pending.difference_update(i for i, _ in head)
                await asyncio.sleep(0)
        write = functools.partial(
            self.store.write_batch,
            rows=[row for _, row in decisions],
            outcomes=[op.item for op in outcomes],  # type: ignore[misc]
            feedback=[op.item for op in feedback],  # type: ignore[misc]
        )
        try:
            result = write() if self.inline else await asyncio.to_thread(write)
        except StoreError as exc:
            self._failed(exc, decisions, ops)
            return
        self.last_error = None
        self._pending.difference_update(i for i, _ in decisions)
        for op, done in zip(outcomes, result.outcomes, strict=True):
            _resolve(op.future, done)
        for op, fb in zip(feedback, result.feedback, strict=True):
            _resolve(op.future, fb)
        if self.on_flush is not None:
            self.on_flush(n_decisions, len(ops), time.perf_counter() - started)

    def _failed(self, exc: StoreError, decisions: list[tuple[str, Any]], ops: list[_Op]) -> None:
        self.last_error = str(exc)
        log.error("write of %d decisions and %d operations failed: %s",
                  len(decisions), len(ops), exc)
        # keep the decisions for the next attempt, in order
        self._decisions.extendleft(reversed(decisions))
        for op in ops:
            if not op.future.done():
                op.future.set_exception(exc)


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if future.done():  # the waiting request was cancelled
        return
    if isinstance(value, BaseException):
        future.set_exception(value)
    else:
        future.set_result(value)
