"""Grades no one posted, from the gateway to the router (docs/judge.md).

The gateway tells :class:`Grading` of each answer the client has, each request and each
stream the client left; it records the implicit signals those show (a truncated answer,
output that fails the requested JSON schema, tool arguments that are not JSON, the same
conversation resent soon after its answer, an abandoned stream), hands the answer to the
judge if it is in the sample, and promotes due grades to feedback (feedback/grades.py)
every ``grades.interval_s``. On the request path only the signals' checks and the
judge's sampling decision run; the rest is background work the app's lifespan owns: the
judge on its own thread (serving/judge.py), the grade writer and the promotion as tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from feedback.errors import FeedbackConflictError, StoreError, UnknownDecisionError
from feedback.grades import (
    ABANDONED,
    JSON,
    JUDGE,
    LEARNED,
    LENGTH,
    REGENERATED,
    SUPERSEDED,
    TOOL_ARGS,
    Agreement,
    GradeBook,
    NewGrade,
    calibrated,
    learned_quality,
    rank,
)
from feedback.models import utcnow
from feedback.records import GradeRecord
from serving.judge import Answered, Judge
from serving.settings import Settings
from serving.upstream import Upstream

log = logging.getLogger("routebandit.grading")

#: Conversations remembered for the regeneration signal.
MAX_CONVERSATIONS = 20_000
#: How often buffered grades are written (one transaction for all that are ready).
STORE_INTERVAL_S = 0.5


class Grading:
    def __init__(self, service: Any, settings: Settings) -> None:
        self.service = service
        self.metrics = service.metrics
        self.signals = settings.signals
        self.grades = settings.grades
        self.judge_settings = settings.judge
        # Per answering model: (the judge's mean offset from people, pairs); refreshed
        # with the agreement, applied to judge grades as they are promoted.
        self.calibration: dict[str, tuple[float, int]] = {}
        self.agreement: Agreement | None = None
        self.book = GradeBook(service.store)
        # Grades waiting for their decision's commit, then written in one transaction
        # (every STORE_INTERVAL_S): never an early flush of the decision writer.
        self._buffer: list[NewGrade] = []
        self._store_task: asyncio.Task[None] | None = None
        self.judge: Judge | None = None
        if settings.judge.model is not None:
            self.judge = Judge(settings.judge, book=self.book, metrics=self.metrics,
                               catalog=lambda: service.catalog)
        self._conversations: OrderedDict[bytes, tuple[str, float]] = OrderedDict()
        self._store_lock = asyncio.Lock()
        self._loop_task: asyncio.Task[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def bind(self, upstream: Upstream) -> None:
        """The gateway's upstream client: the judge makes its own client like it."""
        if self.judge is not None:
            self.judge.bind(upstream)

    # -- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        if self.judge is not None:
            if self.judge.model not in self.service.catalog:
                from serving.settings import SettingsError
                raise SettingsError(
                    f"setting 'judge.model' (ROUTEBANDIT_JUDGE__MODEL): {self.judge.model!r} "
                    f"is not a catalog model ({', '.join(self.service.catalog.names)})")
            await self.judge.start()
            try:
                await self.measure_agreement()
            except BaseException:
                await self.judge.stop()  # no thread left behind by a failed start-up
                raise
        self._loop_task = asyncio.create_task(self._promote_loop(),
                                              name="routebandit-grades")
        self._store_task = asyncio.create_task(self._store_loop(),
                                               name="routebandit-grade-writer")

    async def stop(self) -> None:
        for task in (self._loop_task, self._store_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._loop_task = self._store_task = None
        if self.judge is not None:
            await self.judge.stop()
        try:  # the last grades, before the writer stops
            await asyncio.wait_for(self._store(force=True), 5.0)
        except (StoreError, asyncio.TimeoutError) as exc:
            log.error("%d grades not stored at shutdown: %s", len(self._buffer), exc)

    async def idle(self) -> None:
        """Wait for every signal and judge grade so far to be stored (tests)."""
        if self.judge is not None:
            await self.judge.idle()
        await self._store(force=True)

    # -- what the gateway tells ----------------------------------------------------
    def asked(self, tenant: str | None, user: str | None,
              messages: Sequence[Mapping[str, Any]]) -> None:
        """A request came: the same conversation answered within the window is a
        regeneration, against that answer."""
        if not self.signals.regenerated:
            return
        key = _conversation(tenant, user, messages)
        if key is None:
            return
        seen = self._conversations.pop(key, None)
        if seen is not None and time.monotonic() - seen[1] <= self.signals.regenerate_window_s:
            self._signal(seen[0], REGENERATED, self.signals.regenerated_weight,
                         "the same conversation was sent again "
                         f"{time.monotonic() - seen[1]:.0f} s after this answer")

    def answered(self, answer: Answered) -> None:
        """The client has ``answer`` (recorded ``ok``)."""
        s = self.signals
        key = _conversation(answer.tenant, answer.user, answer.messages)
        if s.regenerated and key is not None:
            self._conversations[key] = (answer.decision_id, time.monotonic())
            while len(self._conversations) > MAX_CONVERSATIONS:
                self._conversations.popitem(last=False)
        if s.length and answer.finish_reason == "length":
            self._signal(answer.decision_id, LENGTH, s.length_weight,
                         "cut off by the length limit (finish_reason length)")
        if s.json_ and not answer.tool_args:
            problem = json_problem(answer.text, answer.response_format)
            if problem is not None:
                self._signal(answer.decision_id, JSON, s.json_weight, problem)
        if s.tool_args:
            bad = [i for i, args in enumerate(answer.tool_args) if not _is_json(args)]
            if bad:
                self._signal(answer.decision_id, TOOL_ARGS, s.tool_args_weight,
                             f"tool call {bad[0]}'s arguments are not valid JSON")
        if self.judge is not None:
            self.judge.submit(answer)

    def abandoned(self, decision_id: str) -> None:
        """The client left a stream mid-answer."""
        if self.signals.abandoned:
            self._signal(decision_id, ABANDONED, self.signals.abandoned_weight,
                         "the client left the stream mid-answer")

    def _add(self, grade: NewGrade) -> None:
        self._buffer.append(grade)  # (the list is replaced as it is written: never bind it)

    def _signal(self, decision_id: str, source: str, weight: float, reason: str) -> None:
        self._add(NewGrade(decision_id=decision_id, source=source, score=0.0,
                                     weight=weight, reason=reason, created_at=utcnow()))

    async def _store_loop(self) -> None:
        while True:
            await asyncio.sleep(STORE_INTERVAL_S)
            try:
                await self._store()
            except asyncio.CancelledError:
                raise
            except StoreError as exc:
                log.error("storing %d grades failed, will retry: %s", len(self._buffer), exc)
            except Exception:
                log.exception("storing grades failed unexpectedly; will retry")

    async def _store(self, *, force: bool = False) -> None:
        """Write the buffered grades whose decision is committed (``force``: flush the
        decision writer first, for shutdown and tests)."""
        async with self._store_lock:
            await self._store_locked(force)

    async def _store_locked(self, force: bool) -> None:
        if self.judge is not None:  # the judge's grades, handed back in a batch
            self._buffer.extend(self.judge.drain())
        if not self._buffer:
            return
        writer = self.service.writer
        if force and any(writer.is_pending(g.decision_id) for g in self._buffer):
            await writer.flush()
        ready = [g for g in self._buffer if not writer.is_pending(g.decision_id)]
        if not ready:
            return
        self._buffer = [g for g in self._buffer if writer.is_pending(g.decision_id)]
        try:
            stored = await asyncio.to_thread(self.book.add_many, ready)
        except BaseException:
            self._buffer[:0] = ready  # kept for the next attempt, in order
            raise
        for g, new in zip(ready, stored, strict=True):
            if new is not None:
                self.metrics.grades.labels(g.source, "recorded" if g.score is not None
                                           else "failed").inc()

    # -- promotion ------------------------------------------------------------------
    async def _promote_loop(self) -> None:
        last_agreement = 0.0
        while True:
            await asyncio.sleep(self.grades.interval_s)
            try:
                await self.promote()
                if time.monotonic() - last_agreement >= 60.0 and self.judge is not None:
                    last_agreement = time.monotonic()
                    await self.measure_agreement()
            except asyncio.CancelledError:
                raise
            except StoreError as exc:
                log.error("promoting grades failed, will retry: %s", exc)
            except Exception:
                log.exception("promoting grades failed unexpectedly; will retry")

    async def promote(self) -> int:
        """Make each due grade's decision learn its best-ranked one unless it has a
        posted score; returns how many were promoted."""
        before = utcnow() - timedelta(seconds=self.grades.grace_s)
        due = await asyncio.to_thread(self.book.due, before)
        by_decision: dict[str, list[GradeRecord]] = {}
        for g in due:
            by_decision.setdefault(g.decision_id, []).append(g)
        n = 0
        models: dict[str, str] = {}
        if self.judge_settings.calibrate and self.calibration and any(
                g.source == JUDGE for g in due):
            models = await asyncio.to_thread(self.book.models_of, list(by_decision))
        for decision_id, grades in by_decision.items():
            best = min(grades, key=lambda g: (rank(g.source), g.id))
            assert best.score is not None  # failures are never pending
            score = best.score
            if best.source == JUDGE and decision_id in models:
                score = calibrated(score, models[decision_id], self.calibration,
                                   min_pairs=self.judge_settings.calibration_min_pairs)
            seq: int | None = None
            try:
                result = await self.service.feedback(
                    decision_id=decision_id, tenant=None,
                    score=learned_quality(score, best.weight), source=best.source,
                    grade_id=best.id)
            except (FeedbackConflictError, UnknownDecisionError):
                pass  # a posted score is there already: it wins
            else:
                if result.record.grade_id == best.id:  # (a duplicate: promoted before)
                    seq = result.record.seq
            if seq is not None:
                await asyncio.to_thread(self.book.mark, [best.id], LEARNED, feedback_seq=seq)
                self.metrics.grades.labels(best.source, LEARNED).inc()
                n += 1
            others = [g for g in grades if seq is None or g.id != best.id]
            await asyncio.to_thread(self.book.mark, [g.id for g in others], SUPERSEDED)
            for g in others:
                self.metrics.grades.labels(g.source, SUPERSEDED).inc()
        return n

    async def measure_agreement(self) -> None:
        """The judge's agreement with people (a gauge) and its calibration per model."""
        a = await asyncio.to_thread(self.book.agreement)
        self.agreement = a
        gauge = self.metrics.judge_agreement
        gauge.labels("n").set(a.n)
        if a.correlation is not None:
            gauge.labels("correlation").set(a.correlation)
        if a.mean_difference is not None:
            gauge.labels("mean_difference").set(a.mean_difference)
        if self.judge_settings.calibrate:
            self.calibration = await asyncio.to_thread(self.book.calibration)
            for model, (offset, _) in self.calibration.items():
                self.metrics.judge_calibration.labels(model).set(offset)

    def record(self) -> tuple[dict[str, Any], dict[str, float]]:
        """What a policy version's MLflow run keeps of the judge: parameters (the judge,
        its calibration per model, applied or not) and metrics (its agreement)."""
        if self.judge is None:
            return {}, {}
        params: dict[str, Any] = {"judge.model": self.judge.model,
                                  "judge.sample_rate": self.judge_settings.sample_rate,
                                  "judge.weight": self.judge_settings.weight}
        least = self.judge_settings.calibration_min_pairs
        for model, (offset, n) in sorted(self.calibration.items()):
            applied = self.judge_settings.calibrate and n >= least
            params[f"judge.calibration.{model}"] = (
                f"offset {offset:+.4f} from {n} pairs{'' if applied else ' (not applied)'}")
        metrics: dict[str, float] = {}
        a = self.agreement
        if a is not None:
            metrics["judge.agreement.n"] = float(a.n)
            if a.correlation is not None:
                metrics["judge.agreement.correlation"] = a.correlation
            if a.mean_difference is not None:
                metrics["judge.agreement.mean_difference"] = a.mean_difference
        return params, metrics


def json_problem(text: str, response_format: Mapping[str, Any] | None) -> str | None:
    """Why ``text`` fails the requested JSON (``json_object`` or ``json_schema``), or None.

    >>> fmt = {"type": "json_schema", "json_schema": {"schema": {
    ...     "type": "object", "required": ["a"]}}}
    >>> json_problem('{"a": 1}', fmt) is None, json_problem('{"b": 1}', fmt)
    (True, "output fails the requested json_schema: 'a' is a required property")
    """
    if not isinstance(response_format, Mapping):
        return None
    kind = response_format.get("type")
    if kind not in ("json_object", "json_schema"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return "output is not the JSON the request asked for"
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, Mapping) else None
    if kind != "json_schema" or not isinstance(schema, Mapping):
        return None
    try:
        import jsonschema
    except ImportError:  # an optional dependency: without it, parsing is the check
        return None
    try:
        jsonschema.validate(value, dict(schema))
    except jsonschema.ValidationError as exc:
        return f"output fails the requested json_schema: {exc.message[:300]}"
    except jsonschema.SchemaError:
        return None  # the client's schema is broken, not the answer
    return None


def _is_json(text: str) -> bool:
    try:
        json.loads(text or "{}")
    except ValueError:
        return False
    return True


def _conversation(tenant: str | None, user: str | None,
                  messages: Sequence[Mapping[str, Any]]) -> bytes | None:
    """The key of a conversation, or None where a resend says nothing: one user turn
    without a user key (different people send the same first message)."""
    if user is None and not any(isinstance(m, Mapping) and m.get("role") == "assistant"
                                for m in messages):
        return None
    raw = json.dumps([tenant, user, list(messages)], sort_keys=True, default=str,
                     separators=(",", ":"))
    return hashlib.blake2b(raw.encode("utf-8", "replace"), digest_size=16).digest()


__all__ = ["Grading", "json_problem"]
