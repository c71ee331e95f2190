"""The sampled LLM judge: grades a seeded share of gateway answers (docs/judge.md).

The gateway hands each answer it recorded as ``ok`` to :meth:`Judge.submit` once the
client has it; a sampled one waits in a bounded queue for the judge's worker, a
background task the app's lifespan owns, so judging never adds latency to an answer.
The worker calls the judge model directly through the gateway's upstream client (never
routed, never learned from), within its own timeout, retries, rate limit and daily
spend cap, asks for ``{"score": 0..1, "reason": "..."}`` in a ``json_schema`` response
format and stores the grade (feedback/grades.py). An answer without a valid score is a
judge failure: stored as such, never learned. Nothing the judge answers stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from bandit.catalog import Catalog
from bandit.features import estimate_tokens
from feedback.grades import JUDGE, GradeBook, NewGrade
from feedback.models import utcnow
from serving.metrics import Metrics
from serving.settings import JudgeSettings
from serving.upstream import Budget, Upstream, UpstreamError, UpstreamTimeout

log = logging.getLogger("routebandit.judge")

DEFAULT_RUBRIC = (
    "You grade an AI assistant's answer to the conversation below. A good answer is "
    "correct, does what the last user turn asks, is complete without padding, and follows "
    "any format the user asked for. Score 1 for an answer an expert would give, 0 for a "
    "wrong, unhelpful or empty one, and in between for partial answers."
)
_INSTRUCTION = ('Reply with JSON only: {"score": <a number from 0 to 1>, "reason": '
                '"<one sentence>"}.')
RESPONSE_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {"name": "grade", "strict": True, "schema": {
        "type": "object",
        "properties": {"score": {"type": "number", "minimum": 0, "maximum": 1},
                       "reason": {"type": "string"}},
        "required": ["score", "reason"], "additionalProperties": False}},
}
#: The most of a conversation and of an answer the judge is shown (head and tail).
MAX_CHARS = 12_000


@dataclass(frozen=True)
class Answered:
    """An answer the client has: what the judge and the implicit signals look at."""

    decision_id: str
    model: str
    tenant: str | None
    messages: Sequence[Mapping[str, Any]]
    text: str
    user: str | None = None
    finish_reason: str | None = None
    tool_args: tuple[str, ...] = ()
    response_format: Mapping[str, Any] | None = None
    metadata: Mapping[str, Any] | None = None


class JudgeFailure(Exception):
    """The judge's answer holds no valid grade (recorded as a failure, never learned)."""


def parse_grade(content: Any) -> tuple[float, str]:
    """``(score, reason)`` from the judge's answer, else :class:`JudgeFailure`.

    >>> parse_grade('{"score": 0.75, "reason": "mostly right"}')
    (0.75, 'mostly right')
    """
    if not isinstance(content, str):
        raise JudgeFailure("no text in the judge's answer")
    try:
        value = json.loads(content)
    except ValueError:
        raise JudgeFailure(f"not JSON: {content[:200]!r}") from None
    if not isinstance(value, dict):
        raise JudgeFailure("not a JSON object")
    score = value.get("score")
    if isinstance(score, bool) or not isinstance(score, (int, float)) \
            or not math.isfinite(score) or not 0 <= score <= 1:
        raise JudgeFailure(f"no score in [0, 1]: {score!r}")
    reason = value.get("reason")
    return float(score), (reason if isinstance(reason, str) else "")[:2000]


def sampled(decision_id: str, *, rate: float, seed: int) -> bool:
    """Whether ``decision_id`` is in the seeded sample: the same answer for the same
    decision, seed and rate, in any order and any process.

    >>> sampled("abc", rate=1.0, seed=0), sampled("abc", rate=0.0, seed=0)
    (True, False)
    """
    if rate <= 0:
        return False
    digest = hashlib.blake2b(f"{seed}:{decision_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < rate


class Judge:
    def __init__(self, settings: JudgeSettings, *, book: GradeBook, metrics: Metrics,
                 catalog: Callable[[], Catalog], record: Callable[[NewGrade], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        assert settings.model is not None
        self.settings = settings
        self.model = settings.model
        self.book = book
        self.metrics = metrics
        self._catalog = catalog
        self._record = record  # stores grades in batches (serving/grading.py)
        self._clock = clock
        self.upstream: Upstream | None = None
        self._queue: asyncio.Queue[Answered | None] = asyncio.Queue(settings.max_queue)
        self._task: asyncio.Task[None] | None = None
        self._day: str = ""
        self.spent_today = 0.0
        # A token bucket: rate_per_minute, in bursts of at most a sixth of it (10 s).
        self._capacity = max(1.0, settings.rate_per_minute / 6.0)
        self._tokens = self._capacity
        self._refilled = clock()

    # -- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        self._roll_day()
        since = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
        self.spent_today = await asyncio.to_thread(self.book.spent_since, since)
        self._task = asyncio.create_task(self._run(), name="routebandit-judge")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def idle(self) -> None:
        """Wait until every answer queued so far is graded (tests)."""
        await self._queue.join()

    # -- intake ---------------------------------------------------------------------
    def submit(self, answer: Answered) -> bool:
        """Queue ``answer`` if it is in the sample; never blocks."""
        s = self.settings
        if self.upstream is None or not sampled(answer.decision_id, rate=s.sample_rate,
                                                seed=s.seed):
            return False
        try:
            self._queue.put_nowait(answer)
        except asyncio.QueueFull:
            self.metrics.judge_skipped.labels("queue").inc()
            return False
        return True

    # -- the worker -----------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            answer = await self._queue.get()
            try:
                if answer is not None:
                    await self._grade(answer)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A bug costs one grade, never the judge.
                log.exception("judging decision %s failed unexpectedly",
                              getattr(answer, "decision_id", "?"))
            finally:
                self._queue.task_done()

    def _roll_day(self) -> None:
        day = datetime.now(timezone.utc).strftime("%Y-%m-%d")
        if day != self._day:
            self._day, self.spent_today = day, 0.0

    def _take_token(self) -> bool:
        rate = self.settings.rate_per_minute / 60.0
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._refilled) * rate)
        self._refilled = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    async def _grade(self, answer: Answered) -> None:
        self._roll_day()
        if self.spent_today >= self.settings.daily_budget_usd:
            self.metrics.judge_skipped.labels("budget").inc()
            return
        if not self._take_token():
            self.metrics.judge_skipped.labels("rate").inc()
            return
        catalog = self._catalog()
        if self.model not in catalog or self.upstream is None:
            self.metrics.judge_skipped.labels("model").inc()
            return
        spec = catalog.get(self.model)
        payload = {"model": spec.wire_name, "messages": self._prompt(answer),
                   "response_format": RESPONSE_FORMAT, "temperature": 0, "max_tokens": 300}
        score: float | None = None
        reason: str
        cost = 0.0
        result = "error"
        for attempt in range(self.settings.retries + 1):
            budget = Budget.from_now(total_s=self.settings.timeout_s,
                                     max_bytes=1 << 20)
            try:
                completion = await self.upstream.complete(spec, payload, budget=budget)
            except UpstreamError as exc:
                result = "timeout" if isinstance(exc, UpstreamTimeout) else "error"
                reason = f"judge call failed ({exc.kind}): {exc}"
                if not exc.retryable or attempt == self.settings.retries:
                    break
                continue
            body = completion.body
            cost += self._cost(spec, payload, body)
            try:
                content = ((body.get("choices") or [{}])[0].get("message") or {}).get(
                    "content")
                score, reason = parse_grade(content)
                result = "graded"
            except (JudgeFailure, AttributeError, IndexError, TypeError) as exc:
                result, reason = "invalid", f"judge answer without a grade: {exc}"
            break
        self.spent_today += cost
        self.metrics.judge_calls.labels(self.model, result).inc()
        if cost:
            self.metrics.judge_cost.labels(self.model).inc(cost)
        if score is None:
            log.warning("judge: decision %s not graded: %s", answer.decision_id, reason)
        self._record(NewGrade(decision_id=answer.decision_id, source=JUDGE, score=score,
                              weight=self.settings.weight, reason=reason, model=self.model,
                              cost_usd=cost, created_at=utcnow()))

    def _prompt(self, answer: Answered) -> list[dict[str, str]]:
        rubric = self.settings.rubric or DEFAULT_RUBRIC
        custom = (answer.metadata or {}).get("judge_rubric")
        if isinstance(custom, str) and custom.strip():
            rubric = custom[:8000]
        lines = []
        for msg in answer.messages:
            content = msg.get("content") if isinstance(msg, Mapping) else None
            if isinstance(content, list):
                content = " ".join(p.get("text", "") for p in content
                                   if isinstance(p, Mapping) and isinstance(p.get("text"), str))
            lines.append(f"{msg.get('role', 'user')}: {content or ''}")
        conversation = _clip("\n\n".join(lines))
        return [
            {"role": "system", "content": f"{rubric}\n\n{_INSTRUCTION}"},
            {"role": "user", "content": f"<conversation>\n{conversation}\n</conversation>\n\n"
                                        f"<answer>\n{_clip(answer.text)}\n</answer>"},
        ]

    @staticmethod
    def _cost(spec: Any, payload: Mapping[str, Any], body: Mapping[str, Any]) -> float:
        raw = body.get("usage")
        usage: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if not isinstance(prompt, int) or not isinstance(completion, int):
            prompt = sum(4 + estimate_tokens(m["content"]) for m in payload["messages"])
            completion = 50
        return float(spec.call_cost_usd(input_tokens=prompt, output_tokens=completion))


def _clip(text: str) -> str:
    if len(text) <= MAX_CHARS:
        return text
    half = MAX_CHARS // 2
    return f"{text[:half]}\n[...]\n{text[-half:]}"


__all__ = ["DEFAULT_RUBRIC", "RESPONSE_FORMAT", "Answered", "Judge", "JudgeFailure",
           "parse_grade", "sampled"]
