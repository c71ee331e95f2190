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
import contextlib
import dataclasses
import functools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from feedback.errors import RecordRefusedError, StoreError, StoreUnavailableError
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
        commit_timeout_s: float = 10.0,
        on_dead_letter: Callable[[str], None] | None = None,
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
        # How long a caller waits for its commit before it is told to come back later.
        self.commit_timeout_s = commit_timeout_s
        # callable(kind) for each record set aside (decision, outcome, feedback)
        self.on_dead_letter = on_dead_letter
        self.dead_lettered = 0
        self.restarts = 0

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stopping = False
        self._spawn()

    def _spawn(self) -> None:
        self._task = asyncio.create_task(self._run(), name="routebandit-writer")
        self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        # _run catches everything a batch can raise; this is the last line: a writer that
        # died anyway is logged with its traceback and started again, never a silent stop.
        if self._stopping or task.cancelled() or task.exception() is None:
            return
        self.restarts += 1
        log.error("the decision writer died; restarting it", exc_info=task.exception())
        self._spawn()

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Write everything still buffered, then stop (giving up after ``timeout_s``)."""
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
            except asyncio.TimeoutError:
                log.error("the writer could not write %d decisions and %d operations "
                          "within %.0f s of shutdown (%s); they are not stored",
                          len(self._decisions), len(self._ops), timeout_s,
                          self.last_error or "slow writes")
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
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
        if self._loop is None or self._wake is None or self._stopping or not self.running:
            raise StoreUnavailableError("the writer is not running")
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._ops.append(_Op(item, fut))
        if isinstance(item, FeedbackInput):  # outcomes wait for the next flush
            self._wake.set()
        try:
            # Shielded: a caller that gives up leaves the operation queued, so it is
            # still written (and a retry of the same feedback is a duplicate of it).
            return await asyncio.wait_for(asyncio.shield(fut), self.commit_timeout_s)
        except asyncio.TimeoutError:
            raise StoreUnavailableError(
                f"the database did not confirm within {self.commit_timeout_s:g} s "
                f"({self.last_error or 'slow writes'})") from None

    # -- the writer task ----------------------------------------------------------------
    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.flush_interval_s)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            await self._flush_guarded()
            if self._stopping:
                await self._flush_guarded()
                return

    async def _flush_guarded(self) -> None:
        try:
            await self.flush()
        except Exception:
            # flush() handles what a database can raise; anything else is a bug, and a
            # bug must cost one batch's attempt, never the writer.
            log.exception("writing a batch failed unexpectedly; will retry")
            await asyncio.sleep(self.flush_interval_s)

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
                except Exception as exc:
                    await self._refused(exc, head + decisions, outcomes, feedback)
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
        except Exception as exc:
            await self._refused(exc, decisions, outcomes, feedback)
            return
        self.last_error = None
        self._pending.difference_update(i for i, _ in decisions)
        for op, done in zip(outcomes, result.outcomes, strict=True):
            _resolve(op.future, done)
        for op, fb in zip(feedback, result.feedback, strict=True):
            _resolve(op.future, fb)
        if self.on_flush is not None:
            self.on_flush(n_decisions, len(ops), time.perf_counter() - started)

    async def _write(self, **parts: Any) -> Any:
        if self.inline:
            return self.store.write_batch(**parts)
        return await asyncio.to_thread(functools.partial(self.store.write_batch, **parts))

    async def _refused(self, exc: Exception, decisions: list[tuple[str, Any]],
                       outcomes: list[_Op], feedback: list[_Op]) -> None:
        """A batch failed: retry it later if the database is away, else find the records
        it refuses by writing them one at a time, and set those aside."""
        ops = outcomes + feedback
        if isinstance(exc, StoreUnavailableError):
            self._failed(exc, decisions, ops)
            return
        log.warning("a batch of %d decisions and %d operations was refused (%s: %s); "
                    "writing them one at a time", len(decisions), len(ops),
                    type(exc).__name__, exc)
        refused: list[tuple[str, str, Any, Exception, _Op | None]] = []
        stored = 0
        for i, (decision_id, row) in enumerate(decisions):
            try:
                await self._write(rows=[row])
            except StoreUnavailableError as away:
                self._failed(away, decisions[i:], ops)
                return
            except Exception as bad:
                refused.append(("decision", decision_id, row, bad, None))
            else:
                stored += 1
                self._pending.discard(decision_id)
        for op in ops:
            item = op.item
            part = "outcomes" if isinstance(item, OutcomeRecord) else "feedback"
            try:
                result = await self._write(**{part: [item]})
            except StoreUnavailableError as away:
                self._failed(away, [], [o for o in ops if not o.future.done()])
                return
            except Exception as bad:
                refused.append((part.rstrip("s"), item.decision_id,
                                dataclasses.asdict(item), bad, op))
            else:
                stored += 1
                _resolve(op.future, getattr(result, part)[0])
        if refused and stored == 0 and len(refused) > 1:
            # Nothing goes in, one at a time either: the database is at fault, not the
            # records. Keep them all for the next attempt.
            self._failed(exc, [(r[1], r[2]) for r in refused if r[0] == "decision"],
                         [r[4] for r in refused if r[4] is not None])
            return
        for kind, decision_id, record, error, waiting in refused:
            await self._set_aside(kind, decision_id, record, error, waiting)

    async def _set_aside(self, kind: str, decision_id: str, record: Any, exc: Exception,
                         op: _Op | None) -> None:
        error = f"{type(exc).__name__}: {exc}"
        try:
            await asyncio.to_thread(self.store.dead_letter, worker="writer", kind=kind,
                                    ref=decision_id, error=error, record=record)
        except Exception as lost:
            log.error("could not set aside a refused %s of decision %s (%s); keeping it "
                      "for the next batch", kind, decision_id, lost)
            if op is None:
                self._decisions.appendleft((decision_id, record))
            else:
                self._ops.insert(0, op)
            return
        self.dead_lettered += 1
        log.error("the database refused a %s of decision %s; set aside in dead_letters: %s",
                  kind, decision_id, error)
        if op is None:
            self._pending.discard(decision_id)
        elif not op.future.done():
            op.future.set_exception(RecordRefusedError(
                f"{kind}: the database refused it ({type(exc).__name__}); it was set "
                "aside in dead_letters"))
        if self.on_dead_letter is not None:
            self.on_dead_letter(kind)

    def _failed(self, exc: Exception, decisions: list[tuple[str, Any]], ops: list[_Op]) -> None:
        self.last_error = str(exc)
        log.error("write of %d decisions and %d operations failed: %s",
                  len(decisions), len(ops), exc)
        # keep the decisions for the next attempt, in order
        self._decisions.extendleft(reversed(decisions))
        failure = exc if isinstance(exc, StoreError) else StoreUnavailableError(
            f"the batch could not be written ({type(exc).__name__})")
        for op in ops:
            if not op.future.done():
                op.future.set_exception(failure)


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if future.done():  # the waiting request was cancelled
        return
    if isinstance(value, BaseException):
        future.set_exception(value)
    else:
        future.set_result(value)
