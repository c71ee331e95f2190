"""The OpenAI-compatible gateway: route, forward, fail over, measure, record.

One :class:`Gateway` serves ``POST /v1/chat/completions``. ``model: "auto"`` (or
``"auto:<profile>"``) asks the router for a decision; a catalog model name passes
straight through and is logged as a non-policy decision. Every upstream call becomes an
outcome of its decision (latency, time to first token, tokens, cost, status), recorded
off the response path; a failed call is an outcome too, so the policy learns it.

Failover walks the decision's ranking on connect errors, timeouts, 429 and 5xx, and on
answers that are not answers (a 200 with an error, a stream cut short or malformed), within
a total deadline and a bounded number of attempts; each attempt has its share of the time
left, and each extra attempt is its own non-policy decision (kind ``failover``) so the
policy's logged propensities stay honest. Cascade mode tries the cheapest eligible model
first and escalates while the answer fails a check (:mod:`serving.checks`).

All of it lives in one attempt loop (:meth:`Gateway._attempts`) and one stream relay
(:meth:`Gateway._relay`), fed and read in Chat Completions' shape: a door (the chat
endpoint now) brings its request in that shape and a :class:`Wire` that writes the
checked stream, its end and its error event in its own protocol.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from pydantic import ValidationError

from bandit.catalog import Catalog, ModelSpec
from bandit.constraints import eligible_models
from bandit.decision import Decision
from bandit.errors import NoEligibleModelError, RequestError, RouteBanditError
from bandit.features import estimate_tokens, featurize, parse_request
from serving.cache import CachedAnswer, ResponseCache, cache_key
from serving.calls import Outcome, RouteRequest
from serving.checks import answer_problem, completion_problem, wants_json
from serving.cooldown import Cooldown
from serving.judge import Answered
from serving.metrics import Metrics
from serving.requests import GatewayExtension, check_tenant, plain_text, validation_error
from serving.upstream import (
    Budget,
    Upstream,
    UpstreamConfigError,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
)

log = logging.getLogger("routebandit.gateway")

AUTO = "auto"
# Outcome statuses fed back as quality ``failure_quality``: the model's answer failed.
LEARNED = frozenset({"error", "rejected"})
# Finish reasons of an answer that ended on its own (the only ones cached).
_COMPLETE = frozenset({"stop", "tool_calls", "function_call"})


class Router(Protocol):
    """The decision service as the gateway sees it."""

    @property
    def catalog(self) -> Catalog: ...

    @property
    def profiles(self) -> Sequence[str]: ...

    async def route(self, request: RouteRequest) -> tuple[str, Decision]: ...

    async def record_outcome(self, decision_id: str, outcome: Outcome) -> None: ...

    async def default_quality(self, decision_id: str, quality: float) -> None: ...

    async def feedback(self, *, decision_id: str, tenant: str | None, score: float,
                       source: str | None = None) -> Any: ...


@dataclass(frozen=True)
class GatewayConfig:
    """Reliability knobs (the app builds this from its settings)."""

    max_attempts: int = 3
    # The whole request until the client has its answer (a stream: its first chunk); each
    # attempt may use its share of what is left (left / attempts that could still follow).
    deadline_s: float = 60.0
    # Until a stream's first chunk (a model's own first_byte_timeout_s overrides it).
    first_byte_timeout_s: float = 5.0
    # A stream's whole life, from the request (the client already reads it meanwhile).
    stream_deadline_s: float = 600.0
    # Largest answer read from an upstream (a body, or a stream's events in all).
    max_response_bytes: int = 16 * 2**20
    cooldown_failures: int = 3
    cooldown_s: float = 30.0
    cascade_profiles: frozenset[str] = frozenset()
    cache: bool = False
    cache_max_entries: int = 1024
    cache_ttl_s: float = 3600.0
    default_quality: float | None = None
    default_quality_delay_s: float = 600.0
    # Quality fed back for a failed call (error) or a rejected cascade answer; None: none.
    failure_quality: float | None = 0.0
    # Outcomes are handed to the router in batches this often (0: each at once): every
    # hand-over commits, and a commit per request competes with the next request.
    outcome_interval_s: float = 0.1
    # Choices (``n``) one request may ask for: each is a full answer, paid for.
    max_choices: int = 8


class GatewayError(RouteBanditError):
    """An error for the client, in OpenAI's terms (status, type, code, param)."""

    def __init__(self, message: str, *, status_code: int, type: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.type = type
        self.code = code
        self.param = param
        self.headers = dict(headers or {})

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"message": str(self), "type": self.type, "param": self.param,
                          "code": self.code}}


class UpstreamRejected(RouteBanditError):
    """The upstream refused the request itself (a 4xx other than 429): passed back as is."""

    def __init__(self, exc: UpstreamStatusError, headers: Mapping[str, str]) -> None:
        super().__init__(str(exc))
        self.status_code = exc.status_code
        self.body = exc.body
        self.headers = {**exc.headers, **headers}


@dataclass(frozen=True)
class Answer:
    """A complete JSON answer for the client."""

    body: bytes
    headers: dict[str, str]


class Wire(Protocol):
    """How a door writes the gateway's checked chat stream to its client."""

    def chunk(self, chunk: dict[str, Any], model: str) -> bytes | None:
        """One upstream chunk (Chat Completions' shape) in the door's protocol, or None."""

    def end(self) -> bytes:
        """What ends a complete stream."""

    def error(self, exc: UpstreamError) -> bytes:
        """The protocol's error event, for an upstream that failed mid-stream."""


class ChatWire:
    """Chat Completions' own SSE: the chunks as they came (``model`` the catalog name,
    usage only if the client asked for it), ``[DONE]``, and OpenAI's error event."""

    def __init__(self, *, client_usage: bool) -> None:
        self.client_usage = client_usage

    def chunk(self, chunk: dict[str, Any], model: str) -> bytes | None:
        if not self.client_usage and "usage" in chunk:
            if not chunk.get("choices"):
                return None  # the usage-only chunk the client did not ask for
            del chunk["usage"]
        chunk["model"] = model
        return _sse(chunk)

    def end(self) -> bytes:
        return b"data: [DONE]\n\n"

    def error(self, exc: UpstreamError) -> bytes:
        # The SDK raises APIError on it; the code says what broke (upstream_timeout, ...).
        return _sse({"error": {"message": str(exc), "type": "server_error", "param": None,
                               "code": f"upstream_{exc.kind}"}})


@dataclass(frozen=True)
class StreamAnswer:
    """A streamed answer: SSE events (each ending in a blank line) for the client.

    Call ``abandon()`` once the response is over, sent or not: if the events were never
    iterated (the client left before the body started) it records the call as cancelled
    and closes the upstream stream, which the events' own cleanup would otherwise do.
    """

    events: AsyncIterator[bytes]
    headers: dict[str, str]
    abandon: Callable[[], None] = lambda: None


@dataclass
class _Call:
    """One attempt: the decision, the model, and the measurements taken so far."""

    decision_id: str
    spec: ModelSpec
    started: float
    first_token: float | None = None
    usage: Mapping[str, Any] | None = None
    text: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    refusal: str | None = None
    tool_calls: bool = False
    messages: Sequence[Mapping[str, Any]] = ()
    deferred: bool = False  # cascade: the caller records once the answer is checked
    relaying: bool = False  # the stream's events are being iterated
    status: str | None = None
    error: str | None = None
    attempt: int = 1
    check_json: bool | None = None  # the last model of a streamed cascade: check at the end
    recorded: bool = False
    base: RouteRequest | None = None  # what the client asked (for the judge and signals)
    tool_args: dict[int, str] = field(default_factory=dict)  # arguments, by tool call

    def prompt_estimate(self) -> int:
        total = 0
        for msg in self.messages:
            content = msg.get("content") if isinstance(msg, Mapping) else None
            if isinstance(content, list):
                content = " ".join(p.get("text", "") for p in content
                                   if isinstance(p, Mapping) and isinstance(p.get("text"), str))
            total += 4 + estimate_tokens(content if isinstance(content, str) else "")
        return total


def _headers(decision_id: str, model: str, **extra: str) -> dict[str, str]:
    return {"x-routebandit-decision-id": decision_id, "x-routebandit-model": model, **extra}


class Gateway:
    """Serves Chat Completions through the router (see the module docstring)."""

    def __init__(
        self,
        *,
        router: Router,
        upstream: Upstream,
        config: GatewayConfig | None = None,
        clock: Callable[[], float] = time.perf_counter,
        cooldown: Cooldown | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.router = router
        self.upstream = upstream
        self.config = config or GatewayConfig()
        self._clock = clock
        # The app's own (RouterService.metrics), so /metrics shows the upstream faults.
        self.metrics = metrics or Metrics()
        self.cooldown = cooldown or Cooldown(failures=self.config.cooldown_failures,
                                             seconds=self.config.cooldown_s)
        self.cache = (ResponseCache(max_entries=self.config.cache_max_entries,
                                    ttl_s=self.config.cache_ttl_s)
                      if self.config.cache else None)
        self._tasks: set[asyncio.Task[None]] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self._outcomes: list[tuple[str, Outcome]] = []
        self._outcome_timer: asyncio.TimerHandle | None = None
        # The judge and the implicit signals (serving/grading.py), when the router has
        # them: told of answers, requests and abandoned streams, off the response path.
        self.grading = getattr(router, "grading", None)
        if self.grading is not None:
            self.grading.bind(upstream)

    # -- lifecycle -------------------------------------------------------------------
    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # A background record must not take the server down; it must not vanish either.
            log.error("gateway background task failed", exc_info=task.exception())

    async def drain(self, timeout: float = 10.0) -> None:
        """Record pending outcomes now and wait for the records (tests, shutdown)."""
        self._hand_over()
        deadline = time.monotonic() + timeout
        while self._tasks and time.monotonic() < deadline:
            await asyncio.wait(set(self._tasks), timeout=max(0.0, deadline - time.monotonic()))

    async def aclose(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        await self.drain()

    # -- the endpoint ----------------------------------------------------------------
    async def chat(
        self, body: Mapping[str, Any], *, tenant: str | None = None,
        user_key: str | None = None, wire: Callable[[], Wire] | None = None,
    ) -> Answer | StreamAnswer:
        """Answer one Chat Completions request (raises GatewayError / UpstreamRejected).

        ``wire`` makes a fresh :class:`Wire` for each attempt's stream (another door's
        protocol; a cascade may discard an attempt's events); default: :class:`ChatWire`.

        Cancelling it (the client went away) cancels the upstream call in flight, which
        is recorded as ``cancelled``; nothing is learned and no other model is tried.
        """
        started = asyncio.get_running_loop().time()
        request = dict(body)
        ext = _extension(request.pop("routebandit", None), tenant)
        requested = request.get("model")
        if not isinstance(requested, str) or not requested:
            raise GatewayError("you must provide a model parameter", status_code=400,
                               param="model", code="missing_model")
        try:
            plain_text(requested)
        except ValueError as exc:
            raise _invalid(RequestError(f"model: {exc}")) from None
        if len(requested) > 256:
            raise _invalid(RequestError("model: at most 256 characters"))
        messages = request.get("messages")
        if not isinstance(messages, list) or not messages:
            raise GatewayError("messages: must be a non-empty list", status_code=400,
                               param="messages")
        if self.grading is not None:  # the same conversation again: a regeneration
            self.grading.asked(tenant, _user(user_key, ext), messages)
        n = request.get("n")
        if n is not None and (isinstance(n, bool) or not isinstance(n, int)
                              or not 1 <= n <= self.config.max_choices):
            raise _invalid(RequestError(
                f"n: must be a whole number from 1 to {self.config.max_choices} (each "
                "choice is a full answer, paid for; the gateway setting max_choices "
                "raises the limit)"))
        catalog = self.router.catalog
        profile, forced = self._resolve(requested, catalog)
        stream = bool(request.get("stream"))
        cascade = forced is None and (
            bool(ext.cascade) or (profile in self.config.cascade_profiles)
        )
        # The key covers the extension and the tenant: a cached answer carries its
        # decision id, which only its own tenant may post feedback on.
        key = (cache_key({**request, "routebandit": ext.model_dump(exclude_none=True),
                          "tenant": tenant})
               if self.cache is not None else None)
        if key is not None and self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                return Answer(hit.body, _headers(hit.decision_id, hit.model,
                                                 **{"x-routebandit-cache": "hit"}))
        max_tokens = request.get("max_completion_tokens", request.get("max_tokens"))
        base = RouteRequest(
            messages=messages,
            max_tokens=max_tokens if isinstance(max_tokens, int) else None,
            tools=request.get("tools") or request.get("functions"),
            response_format=request.get("response_format"),
            metadata=(None if ext.metadata is None
                      else ext.metadata.model_dump(exclude_none=True)),
            profile=profile,
            weights=None if ext.weights is None else ext.weights.model_dump(exclude_none=True),
            allow=None if ext.models is None else tuple(ext.models),
            tenant=tenant,
            user_key=user_key,
            reasoning_effort=request.get("reasoning_effort"),
            modalities=request.get("modalities"),
        )
        try:
            if forced is not None:
                first = await self.router.route(
                    replace(base, force_model=forced, kind="passthrough", allow=None))
                plan = [forced]
                kind = "passthrough"
            elif cascade:
                first = None
                plan = self._cascade_plan(base, catalog)
                kind = "cascade"
            else:
                allow = self.cooldown.allowed(base.allow or catalog.names)
                first = await self.router.route(
                    replace(base, allow=tuple(allow) if allow else base.allow))
                chosen = first[1].model
                plan = [chosen] + [m for m, _ in first[1].ranking
                                   if m != chosen and self.cooldown.available(m)]
                kind = "failover"
        except NoEligibleModelError as exc:
            raise _ineligible(exc) from exc
        except RequestError as exc:
            raise _invalid(exc) from exc
        client_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        return await self._attempts(request, base, plan, first, kind=kind, cascade=cascade,
                                    stream=stream, started=started, cache_key=key,
                                    wire=wire or (lambda: ChatWire(client_usage=client_usage)))

    def _resolve(self, requested: str, catalog: Catalog) -> tuple[str | None, str | None]:
        if requested == AUTO:
            return None, None
        if requested.startswith(AUTO + ":"):
            profile = requested[len(AUTO) + 1 :]
            if profile not in self.router.profiles:
                raise GatewayError(
                    f"The model `{requested}` does not exist: no reward profile {profile!r} "
                    f"(profiles: {', '.join(self.router.profiles) or 'none'})",
                    status_code=404, code="model_not_found", param="model")
            return profile, None
        if requested in catalog:
            return None, requested
        raise GatewayError(
            f"The model `{requested}` does not exist (use `auto`, `auto:<profile>` or one of: "
            f"{', '.join(catalog.names)})",
            status_code=404, code="model_not_found", param="model")

    def _cascade_plan(self, base: RouteRequest, catalog: Catalog) -> list[str]:
        ctx = featurize(parse_request(
            messages=base.messages, max_tokens=base.max_tokens, tools=base.tools,
            response_format=base.response_format, reasoning_effort=base.reasoning_effort,
            modalities=base.modalities))
        specs = eligible_models(catalog, ctx, allow=base.allow)
        out_tokens = min(256, base.max_tokens or 256)

        def price(spec: ModelSpec) -> float:
            return spec.call_cost_usd(input_tokens=ctx.input_tokens, output_tokens=out_tokens)

        ordered = sorted(specs, key=price)  # stable: catalog order breaks ties
        usable = [s.name for s in ordered if self.cooldown.available(s.name)]
        return usable or [s.name for s in ordered]

    # -- attempts --------------------------------------------------------------------
    async def _attempts(
        self, request: dict[str, Any], base: RouteRequest, plan: list[str],
        first: tuple[str, Decision] | None, *, kind: str, cascade: bool, stream: bool,
        started: float, cache_key: str | None, wire: Callable[[], Wire],
    ) -> Answer | StreamAnswer:
        loop = asyncio.get_running_loop()
        config = self.config
        end_at = started + config.deadline_s
        # A stream, once its first chunk is on its way to the client, may run this long.
        stream_end_at = started + max(config.stream_deadline_s, config.deadline_s)
        plan = plan[: max(1, config.max_attempts)]
        catalog = self.router.catalog
        json_expected = wants_json(request)
        last_error: UpstreamError | None = None
        rejected: str | None = None
        failed: _Call | None = None  # the attempt that just failed (for the failover line)
        for i, model in enumerate(plan):
            if loop.time() >= end_at:
                break
            if i == 0 and first is not None:
                decision_id = first[0]
                self.cooldown.begin(model)
            else:
                if not self.cooldown.begin(model) and i > 0:
                    continue
                try:
                    decision_id, _ = await self.router.route(
                        replace(base, force_model=model, kind=kind, allow=None))
                except BaseException:
                    self.cooldown.release(model)  # the claimed probe never happened
                    raise
            if failed is not None:
                self._failover(failed, model, decision_id, i, len(plan))
                failed = None
            spec = catalog.get(model)
            payload = dict(request)
            payload["model"] = spec.wire_name
            if stream:
                payload["stream_options"] = {**(request.get("stream_options") or {}),
                                             "include_usage": True}
            last = i == len(plan) - 1
            collect = stream and cascade and not last  # checked whole before it is sent
            call = _Call(decision_id=decision_id, spec=spec, started=self._clock(),
                         messages=base.messages or (), deferred=collect, attempt=i + 1,
                         base=base,
                         check_json=json_expected if stream and cascade and last else None)
            # This attempt's share of what is left, so that a model that hangs leaves the
            # next ones theirs; a stream's first chunk is due sooner (first_byte_timeout_s).
            share = max(0.0, end_at - loop.time()) / (len(plan) - i)
            first_byte = spec.first_byte_timeout_s or config.first_byte_timeout_s
            budget = Budget.from_now(
                first_byte_s=min(first_byte, share) if stream else share,
                total_s=share if collect or not stream else stream_end_at - loop.time(),
                max_bytes=config.max_response_bytes)
            try:
                if stream:
                    relay = await self._open_stream(call, payload, budget, wire())
                    if not collect:
                        relay.headers["x-routebandit-attempts"] = str(i + 1)
                        return relay
                    # Checking a streamed answer needs all of it: collect, check, replay.
                    events = [e async for e in relay.events]
                    problem = self._stream_problem(call, json_expected)
                    if problem is None:
                        self._record(call, "ok", None)
                        relay.headers["x-routebandit-attempts"] = str(i + 1)
                        return StreamAnswer(_replay(events), relay.headers)  # recorded
                    self._record(call, "rejected", f"cascade check: {problem}")
                    self._escalate(call, problem)
                    rejected = problem
                    continue
                completion = await self.upstream.complete(spec, payload, budget=budget)
                if completion.status_code >= 300:  # a redirect, never followed
                    raise UpstreamProtocolError(
                        f"{model}: upstream answered {completion.status_code} (redirects "
                        "are not followed)", model=model)
            except UpstreamError as exc:
                if isinstance(exc, UpstreamStatusError) and not exc.retryable:
                    self.cooldown.release(model)
                    self._record(call, "client_error", f"{exc.kind}: {exc}")
                    raise UpstreamRejected(exc, _headers(decision_id, model)) from exc
                last_error, failed = exc, call
                self._record(call, self._fault(call, exc), f"{exc.kind}: {exc}")
                continue
            except asyncio.CancelledError:
                self._left(call, "the client went away before the answer")
                raise
            self._succeeded(call)
            body = completion.body
            self._measure_body(call, body)
            problem = completion_problem(body, json_expected=json_expected) if cascade else None
            if problem is not None and not last:
                self._record(call, "rejected", f"cascade check: {problem}")
                self._escalate(call, problem)
                rejected = problem
                continue
            headers = _headers(decision_id, model, **{"x-routebandit-attempts": str(i + 1)})
            if problem is None:
                self._record(call, "ok", None)
            else:  # no model passed: the last answer is the client's, but not a good one
                self._record(call, "rejected", f"cascade check: {problem} (returned: the "
                             "last model)")
                headers["x-routebandit-check"] = problem
            body["model"] = model
            out = json.dumps(body, separators=(",", ":")).encode()
            if (cache_key is not None and self.cache is not None and problem is None
                    and _finished(body)):
                self.cache.put(cache_key, CachedAnswer(out, model, decision_id))
            return Answer(out, headers)
        raise self._exhausted(last_error, rejected)

    def _exhausted(self, last: UpstreamError | None, rejected: str | None) -> GatewayError:
        if last is None:
            return GatewayError(
                "no upstream model could be tried before the deadline"
                + (f" (last cascade check failed: {rejected})" if rejected else ""),
                status_code=504, type="server_error", code="deadline_exceeded")
        if isinstance(last, UpstreamStatusError) and last.status_code == 429:
            return GatewayError(f"every upstream model is rate limited; last: {last}",
                                status_code=429, type="rate_limit_error",
                                code="rate_limit_exceeded", headers=last.headers)
        if isinstance(last, UpstreamStatusError) and last.capacity:
            return GatewayError(f"every upstream model is overloaded; last: {last}",
                                status_code=503, type="server_error",
                                code="upstream_overloaded", headers=last.headers)
        status = 504 if last.kind == "timeout" else 502
        return GatewayError(f"every upstream model failed; last: {last}", status_code=status,
                            type="server_error", code=f"upstream_{last.kind}")

    # -- faults: cooldown, log line, counter -------------------------------------------
    def _fault(self, call: _Call, exc: UpstreamError) -> str:
        """Count a failed call against its model; the outcome status it is recorded with."""
        model = call.spec.name
        status = _failure_status(exc)
        before = self.cooldown.state(model)
        self.cooldown.failure(model, retry_after=exc.retry_after
                              if isinstance(exc, UpstreamStatusError) else None)
        self.metrics.upstream_failures.labels(model, exc.kind, status).inc()
        log.warning("upstream failure: decision %s, model %s, attempt %d, after %.0f ms: "
                    "%s: %s (recorded %s)", call.decision_id, model, call.attempt,
                    (self._clock() - call.started) * 1000.0, exc.kind, exc, status)
        if self.cooldown.state(model) == "open" and before != "open":
            self.metrics.breaker_transitions.labels(model, "open").inc()
            log.warning("breaker opened: model %s is skipped for %.0f s (decision %s: %s)",
                        model, self.cooldown.open_for(model), call.decision_id, exc.kind)
        return status

    def _succeeded(self, call: _Call) -> None:
        model = call.spec.name
        before = self.cooldown.state(model)
        self.cooldown.success(model)
        if before != "closed":
            self.metrics.breaker_transitions.labels(model, "closed").inc()
            log.warning("breaker closed: model %s answered (decision %s)", model,
                        call.decision_id)

    def _failover(self, failed: _Call, model: str, decision_id: str, i: int,
                  n: int) -> None:
        self.metrics.failovers.labels(failed.spec.name, model).inc()
        log.warning("failover: decision %s (%s) failed; trying %s as decision %s "
                    "(attempt %d of %d)", failed.decision_id, failed.spec.name, model,
                    decision_id, i + 1, n)

    def _escalate(self, call: _Call, problem: str) -> None:
        log.info("cascade: decision %s (%s) failed its check (%s); escalating",
                 call.decision_id, call.spec.name, problem)

    def _left(self, call: _Call, why: str) -> None:
        """The client went away during ``call``: cancelled, which teaches nothing."""
        if call.recorded:
            return
        self.cooldown.release(call.spec.name)  # a probe that was cut short proves nothing
        self._record(call, "cancelled", why)
        self.metrics.upstream_cancelled.labels(call.spec.name).inc()
        if call.relaying and self.grading is not None:  # left mid-answer
            self.grading.abandoned(call.decision_id)
        log.info("client went away: decision %s, model %s: upstream call cancelled (%s)",
                 call.decision_id, call.spec.name, why)

    # -- streaming -------------------------------------------------------------------
    async def _open_stream(self, call: _Call, payload: dict[str, Any], budget: Budget,
                           wire: Wire) -> StreamAnswer:
        """Open the upstream stream and read its first chunk before answering, so a
        failure that early can still fail over and the headers can name the model."""
        stack = AsyncExitStack()
        try:
            chunks = await stack.enter_async_context(
                self.upstream.stream(call.spec, payload, budget=budget))
            first = await chunks.__anext__()
        except StopAsyncIteration:
            await stack.aclose()
            raise UpstreamProtocolError(f"{call.spec.name}: the stream ended before any event",
                                        model=call.spec.name) from None
        except BaseException:
            await stack.aclose()
            raise
        self._succeeded(call)

        def abandon() -> None:
            if not call.relaying and call.status is None:
                call.status = "cancelled"
                if not call.deferred:
                    self._left(call, "the client went away before the stream")
                self._spawn(_close(chunks, stack))

        return StreamAnswer(self._relay(call, first, chunks, stack, wire),
                            _headers(call.decision_id, call.spec.name), abandon)

    async def _relay(self, call: _Call, first: dict[str, Any],
                     chunks: AsyncIterator[dict[str, Any]], stack: AsyncExitStack,
                     wire: Wire) -> AsyncIterator[bytes]:
        """The client's events: every chunk measured and written by ``wire``; a stream
        that breaks, stalls or stops short ends with the wire's error event and is
        recorded as the failure it is (raised instead when the caller collects)."""
        call.relaying = True
        status: str = "cancelled"
        error: str | None = "the client went away mid-stream"
        try:
            chunk: dict[str, Any] | None = first
            while chunk is not None:
                self._measure_chunk(call, chunk)
                out = wire.chunk(chunk, call.spec.name)
                if out is not None:
                    yield out
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    chunk = None
            status, error = "ok", None
            if call.check_json is not None:  # the last of a cascade: checked, not held
                problem = self._stream_problem(call, call.check_json)
                if problem is not None:
                    status, error = "rejected", (f"cascade check: {problem} (returned: the "
                                                 "last model)")
            yield wire.end()
        except UpstreamError as exc:
            if call.deferred:
                status, error = "error", f"{exc.kind}: {exc}"
                raise
            status, error = self._fault(call, exc), f"{exc.kind}: {exc}"
            # The client already has part of the answer: close the stream with the
            # protocol's error event rather than pretending it ended normally.
            yield wire.error(exc)
        finally:
            # Under cancellation every await here would raise again: hand the closing and
            # the recording to a fresh task.
            call.status, call.error = status, error
            if not call.deferred:
                if status == "cancelled":
                    self._left(call, error or "cancelled")
                else:
                    self._record(call, status, error)
            self._spawn(_close(chunks, stack))

    def _measure_chunk(self, call: _Call, chunk: Mapping[str, Any]) -> None:
        usage = chunk.get("usage")
        if usage:
            call.usage = usage
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if content:
                call.text.append(content)
            if delta.get("tool_calls") or delta.get("function_call"):
                call.tool_calls = True
                _gather_tool_args(call, delta)
            if delta.get("refusal"):
                call.refusal = (call.refusal or "") + delta["refusal"]
            if choice.get("finish_reason"):
                call.finish_reason = choice["finish_reason"]
            if call.first_token is None and (content or call.tool_calls or call.refusal):
                call.first_token = self._clock()

    def _stream_problem(self, call: _Call, json_expected: bool) -> str | None:
        return answer_problem(content="".join(call.text), finish_reason=call.finish_reason,
                              refusal=call.refusal, tool_calls=call.tool_calls,
                              json_expected=json_expected)

    # -- measuring -------------------------------------------------------------------
    def _measure_body(self, call: _Call, body: Mapping[str, Any]) -> None:
        call.usage = body.get("usage") if isinstance(body.get("usage"), Mapping) else None
        for choice in body.get("choices") or ():
            msg = choice.get("message") or {}
            if isinstance(msg.get("content"), str):
                call.text.append(msg["content"])
            if isinstance(choice, Mapping) and choice.get("finish_reason"):
                call.finish_reason = choice["finish_reason"]
            if isinstance(msg, Mapping):
                _gather_tool_args(call, msg)
        call.first_token = self._clock()

    def _record(self, call: _Call, status: str, error: str | None) -> None:
        if call.recorded:
            return
        call.recorded = True
        now = self._clock()
        usage = call.usage or {}
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        estimated = not (isinstance(prompt, int) and isinstance(completion, int))
        if estimated:
            # No usage from the upstream: estimate, and say so in the outcome row.
            # Did the upstream read (and bill) the prompt? Not if it never answered.
            sent = status not in ("error", "throttled", "unreachable") or bool(call.text)
            prompt = call.prompt_estimate() if sent else 0
            completion = estimate_tokens("".join(call.text))
        assert isinstance(prompt, int) and isinstance(completion, int)
        cached, written = (0, 0) if estimated else _cache_tokens(usage)
        cost = call.spec.call_cost_usd(input_tokens=prompt, output_tokens=completion,
                                       cached_input_tokens=cached, cache_write_tokens=written)
        outcome = Outcome(
            model=call.spec.name,
            latency_ms=(now - call.started) * 1000.0,
            ttft_ms=None if call.first_token is None else (call.first_token - call.started)
            * 1000.0,
            input_tokens=prompt,
            output_tokens=completion,
            tokens_estimated=estimated,
            cost_usd=cost,
            status=status,
            error=error,
        )
        self._outcomes.append((call.decision_id, outcome))
        if self.config.outcome_interval_s <= 0:
            self._hand_over()
        elif self._outcome_timer is None:
            self._outcome_timer = asyncio.get_running_loop().call_later(
                self.config.outcome_interval_s, self._hand_over)
        if status == "ok" and self.config.default_quality is not None:
            self._schedule_default(call.decision_id, self.config.default_quality)
        if status == "ok" and self.grading is not None and call.base is not None:
            base = call.base
            self.grading.answered(Answered(
                decision_id=call.decision_id, model=call.spec.name, tenant=base.tenant,
                user=base.user_key or _meta_user(base.metadata), messages=base.messages or (),
                text="".join(call.text),
                finish_reason=call.finish_reason,
                tool_args=tuple(call.tool_args[i] for i in sorted(call.tool_args)),
                response_format=base.response_format, metadata=base.metadata))

    def _hand_over(self) -> None:
        # All in one loop iteration, so the router's writer commits them in one batch.
        if self._outcome_timer is not None:
            self._outcome_timer.cancel()
            self._outcome_timer = None
        batch, self._outcomes = self._outcomes, []
        for decision_id, outcome in batch:
            self._spawn(self._store(decision_id, outcome))

    async def _store(self, decision_id: str, outcome: Outcome) -> None:
        await self.router.record_outcome(decision_id, outcome)
        # A failure of the model's answer is an outcome the policy learns from: quality 0
        # for that model. A refusal for capacity, an upstream that cannot be reached, a
        # client error or a client that went away say nothing of its answers.
        if outcome.status in LEARNED and self.config.failure_quality is not None:
            await self.router.feedback(decision_id=decision_id, tenant=None,
                                       score=self.config.failure_quality,
                                       source=f"gateway:{outcome.status}")

    def _schedule_default(self, decision_id: str, quality: float) -> None:
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.discard(handle)
            self._spawn(self.router.default_quality(decision_id, quality))

        handle = loop.call_later(self.config.default_quality_delay_s, fire)
        self._timers.add(handle)


def _meta_user(metadata: Mapping[str, Any] | None) -> str | None:
    value = (metadata or {}).get("user_key") or (metadata or {}).get("user")
    return value if isinstance(value, str) else None


def _user(user_key: str | None, ext: GatewayExtension) -> str | None:
    meta = ext.metadata
    return user_key or (None if meta is None else (meta.user_key or meta.user))


def _gather_tool_args(call: _Call, part: Mapping[str, Any]) -> None:
    """Add a message's (or a stream delta's) tool call arguments to ``call.tool_args``."""
    for n, tc in enumerate(part.get("tool_calls") or ()):
        if not isinstance(tc, Mapping):
            continue
        fn = tc.get("function")
        args = fn.get("arguments") if isinstance(fn, Mapping) else None
        index = tc.get("index", n)
        if isinstance(args, str) and isinstance(index, int):
            call.tool_args[index] = call.tool_args.get(index, "") + args
    fn = part.get("function_call")
    if isinstance(fn, Mapping) and isinstance(fn.get("arguments"), str):
        call.tool_args[0] = call.tool_args.get(0, "") + fn["arguments"]


def _invalid(exc: RequestError) -> GatewayError:
    """A refused field as OpenAI names it: 400, ``param`` the field the message starts with."""
    message = str(exc)
    field, sep, _ = message.partition(": ")
    return GatewayError(message, status_code=400, param=field if sep else None,
                        code="invalid_value")


def _ineligible(exc: NoEligibleModelError) -> GatewayError:
    """No model can serve the request: a 400 whose message (and ``x-routebandit-needs``
    header) names what no model offers, a capability such as ``audio`` or
    ``max_output_tokens`` / ``context_window``; every door retells it in its shape."""
    headers = {"x-routebandit-needs": ",".join(exc.needs)} if exc.needs else None
    return GatewayError(str(exc), status_code=400, code="no_eligible_model", headers=headers)


def _extension(raw: Any, tenant: str | None) -> GatewayExtension:
    """The request's ``routebandit`` object, validated as ``/v1/route`` validates its own."""
    if raw is None:
        return GatewayExtension()
    if not isinstance(raw, Mapping):
        raise _invalid(RequestError("routebandit: must be a JSON object"))
    try:
        ext = GatewayExtension.model_validate(raw)
    except ValidationError as exc:
        raise _invalid(validation_error(exc, "routebandit")) from None
    try:
        check_tenant(ext.metadata, tenant, "routebandit.metadata")
    except RequestError as exc:
        raise _invalid(exc) from None
    return ext


def _failure_status(exc: UpstreamError) -> str:
    """The outcome status of a failed call: ``throttled`` (no capacity), ``unreachable``
    (cannot connect, not configured) or ``error`` (the model failed to answer)."""
    if isinstance(exc, UpstreamStatusError) and exc.capacity:
        return "throttled"
    if isinstance(exc, (UpstreamConnectError, UpstreamConfigError)):
        return "unreachable"
    return "error"


def _cache_tokens(usage: Mapping[str, Any]) -> tuple[int, int]:
    """The prompt tokens of a chat-shaped usage read from the provider's prompt cache
    (OpenAI's ``prompt_tokens_details.cached_tokens``) and written to it
    (``cache_write_tokens`` beside it: the native adapters carry Anthropic's cache writes
    there); both are counted in ``prompt_tokens``."""
    details = usage.get("prompt_tokens_details")
    if not isinstance(details, Mapping):
        return 0, 0
    read, written = details.get("cached_tokens"), details.get("cache_write_tokens")
    return (read if isinstance(read, int) and not isinstance(read, bool) else 0,
            written if isinstance(written, int) and not isinstance(written, bool) else 0)


def _finished(body: Mapping[str, Any]) -> bool:
    """Whether every choice ended on its own (not cut by length or a content filter)."""
    choices = body.get("choices") or ()
    return bool(choices) and all(
        isinstance(c, Mapping) and c.get("finish_reason") in _COMPLETE for c in choices)


async def _close(chunks: AsyncIterator[dict[str, Any]], stack: AsyncExitStack) -> None:
    aclose = getattr(chunks, "aclose", None)
    try:
        if aclose is not None:
            await aclose()
    finally:
        await stack.aclose()


def _sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


async def _replay(events: list[bytes]) -> AsyncIterator[bytes]:
    for e in events:
        yield e
