"""The sampled LLM judge: grades a seeded share of gateway answers (docs/judge.md).

The gateway hands each answer it recorded as ``ok`` to :meth:`Judge.submit` once the
client has it. On the serving loop that is all that happens: the seeded sampling
decision and an append to a bounded, thread-safe inbox (a full one drops the answer and
counts it). Everything else runs on the judge's own thread, with its own event loop and
its own httpx client (never the serving loop's), so the judge's calls never compete
with the client's requests for a loop: building the judge's prompt, the call itself
(never routed, never learned from) within its own timeout, retries, rate limit and
daily spend cap, asking for ``{"score": 0..1, "reason": "..."}`` in a ``json_schema``
response format, pricing it and counting it. The grades go back through an outbox the
grade writer drains in batches (serving/grading.py). An answer without a valid score is
a judge failure: stored as such, never learned. Nothing the judge answers stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import threading
import time
from collections import deque
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
from serving.upstream import Budget, Upstream, UpstreamError, UpstreamTimeout, new_client

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
#: Connections of the judge's own client: its calls are one at a time.
MAX_CONNECTIONS = 4
#: The longest :meth:`Judge.stop` waits for the judge's thread (a call in flight is
#: cancelled at once; this is a backstop well inside the app's shutdown timeout).
STOP_TIMEOUT_S = 5.0


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
    if rate >= 1:
        return True
    digest = hashlib.blake2b(f"{seed}:{decision_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < rate


def judge_upstream(gateway: Upstream) -> Callable[[], Upstream]:
    """What makes the judge's own client: a new httpx client (on whichever loop calls
    it) behind the same egress policy and key source as the gateway's ``gateway``."""
    # Upstream exposes neither, and serving/upstream.py is not the judge's to change.
    egress, env = gateway.egress, gateway.env

    def make() -> Upstream:
        client = new_client(max_connections=MAX_CONNECTIONS, egress=egress)
        return Upstream(client, env=env, egress=egress)

    return make


class Judge:
    def __init__(self, settings: JudgeSettings, *, book: GradeBook, metrics: Metrics,
                 catalog: Callable[[], Catalog],
                 clock: Callable[[], float] = time.monotonic) -> None:
        assert settings.model is not None
        self.settings = settings
        self.model = settings.model
        self.book = book
        self.metrics = metrics
        self._catalog = catalog
        self._clock = clock
        # Set by the gateway (bind); the judge's thread makes its own client with it.
        self._connect: Callable[[], Upstream] | None = None
        # Between the threads: deque's append and popleft are atomic. The serving loop
        # appends to the inbox and pops the outbox; the judge's thread does the rest.
        self._inbox: deque[Answered] = deque()
        self._outbox: deque[NewGrade] = deque()
        self._submitted = 0  # written by the serving loop only
        self._done = 0  # written by the judge's thread only
        self._sleeping = False  # the judge's loop waits for an answer
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._day: str = ""
        self.spent_today = 0.0
        # A token bucket: rate_per_minute, in bursts of at most a sixth of it (10 s).
        self._capacity = max(1.0, settings.rate_per_minute / 6.0)
        self._tokens = self._capacity
        self._refilled = clock()

    def bind(self, upstream: Upstream) -> None:
        """The gateway's upstream client: the judge calls through a client like it."""
        self._connect = judge_upstream(upstream)

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    # -- lifecycle (the serving loop) ------------------------------------------------
    async def start(self) -> None:
        self._roll_day()
        since = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
        self.spent_today = await asyncio.to_thread(self.book.spent_since, since)
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,),
                                        name="routebandit-judge", daemon=True)
        self._thread.start()
        await asyncio.to_thread(ready.wait, STOP_TIMEOUT_S)

    async def stop(self) -> None:
        thread, loop, main = self._thread, self._loop, self._main
        if thread is None:
            return
        if loop is not None and main is not None:
            with contextlib.suppress(RuntimeError):  # its loop has closed already
                loop.call_soon_threadsafe(main.cancel)
        await asyncio.to_thread(thread.join, STOP_TIMEOUT_S)
        if thread.is_alive():
            log.error("the judge's thread did not stop within %.0f s", STOP_TIMEOUT_S)
        elif self._inbox:
            log.info("judge stopped with %d answers not graded", len(self._inbox))
        self._thread = None

    async def idle(self) -> None:
        """Wait until every answer queued so far is graded (tests)."""
        while self._done < self._submitted and self._thread is not None \
                and self._thread.is_alive():
            await asyncio.sleep(0.005)

    # -- the serving loop's side: per answer, and the grades back ----------------------
    def submit(self, answer: Answered) -> bool:
        """Queue ``answer`` if it is in the sample; never blocks."""
        s = self.settings
        if self._connect is None or not sampled(answer.decision_id, rate=s.sample_rate,
                                                seed=s.seed):
            return False
        if len(self._inbox) >= s.max_queue:
            self.metrics.judge_skipped.labels("queue").inc()
            return False
        self._submitted += 1
        self._inbox.append(answer)
        if self._sleeping:  # (read after the append: see _next)
            self._sleeping = False
            loop, wake = self._loop, self._wake
            if loop is not None and wake is not None:
                with contextlib.suppress(RuntimeError):  # stopped meanwhile
                    loop.call_soon_threadsafe(wake.set)
        return True

    def drain(self) -> list[NewGrade]:
        """The grades the judge made since the last call, oldest first."""
        out: list[NewGrade] = []
        box = self._outbox
        while box:
            out.append(box.popleft())
        return out

    # -- the judge's thread ---------------------------------------------------------
    def _serve(self, ready: threading.Event) -> None:
        try:
            asyncio.run(self._run(ready))
        except asyncio.CancelledError:
            pass  # stopped
        except BaseException:
            log.exception("the judge's thread stopped unexpectedly")
        finally:
            ready.set()

    async def _run(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._main = asyncio.current_task()
        self._wake = asyncio.Event()
        ready.set()
        upstream: Upstream | None = None
        made_by: Callable[[], Upstream] | None = None
        try:
            while True:
                answer = await self._next()
                try:
                    connect = self._connect
                    if connect is not made_by and connect is not None:
                        # (re)bound to a gateway: a client like its own
                        if upstream is not None:
                            await _close(upstream)
                        upstream, made_by = connect(), connect
                    await self._grade(upstream, answer)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # A bug costs one grade, never the judge.
                    log.exception("judging decision %s failed unexpectedly",
                                  answer.decision_id)
                finally:
                    self._done += 1
        finally:
            if upstream is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(_close(upstream))

    async def _next(self) -> Answered:
        assert self._wake is not None
        while True:
            if self._inbox:
                return self._inbox.popleft()
            # Sleeping is announced before the inbox is looked at again, and submit
            # looks at it after its append: an answer is never left waiting unwoken.
            self._wake.clear()
            self._sleeping = True
            if self._inbox:
                self._sleeping = False
                continue
            await self._wake.wait()

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

    async def _grade(self, upstream: Upstream | None, answer: Answered) -> None:
        self._roll_day()
        if self.spent_today >= self.settings.daily_budget_usd:
            self.metrics.judge_skipped.labels("budget").inc()
            return
        if not self._take_token():
            self.metrics.judge_skipped.labels("rate").inc()
            return
        catalog = self._catalog()
        if self.model not in catalog or upstream is None:
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
                completion = await upstream.complete(spec, payload, budget=budget)
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
        self._outbox.append(NewGrade(
            decision_id=answer.decision_id, source=JUDGE, score=score,
            weight=self.settings.weight, reason=reason, model=self.model, cost_usd=cost,
            created_at=utcnow()))

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


async def _close(upstream: Upstream) -> None:
    await upstream.client.aclose()


def _clip(text: str) -> str:
    if len(text) <= MAX_CHARS:
        return text
    half = MAX_CHARS // 2
    return f"{text[:half]}\n[...]\n{text[-half:]}"


__all__ = ["DEFAULT_RUBRIC", "RESPONSE_FORMAT", "Answered", "Judge", "JudgeFailure",
           "judge_upstream", "parse_grade", "sampled"]
