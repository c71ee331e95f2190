"""``RouterService``: the facade every route calls; nothing else touches the policy or store.

It owns the live policy (and its swap), the group-commit writer, the recent-decision
cache and the background learner. Its two entry points for other front ends (the
``/v1/chat/completions`` gateway) are :meth:`RouterService.route` and
:meth:`RouterService.record_outcome`; both are coroutines that never block the event
loop for more than a policy call (~100 us) and, in ``route``, the local embedding of
the bounded prompt (~180 us, serving/embedder.py); a remote embedding is awaited, for
at most its timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, NamedTuple

from bandit.catalog import Catalog, ModelSpec, parse_model
from bandit.clusters import ClusterTree, with_clusters
from bandit.decision import Decision
from bandit.drift import ChangeEvent
from bandit.errors import CatalogError, RequestError
from bandit.features import featurize, parse_request
from bandit.kinds import kind_source
from bandit.policy import Policy
from bandit.reward import RewardWeights
from feedback.errors import (
    FeedbackConflictError,
    StoreError,
    StoreUnavailableError,
    UnknownDecisionError,
)
from feedback.ids import new_decision_id
from feedback.learner import Learner
from feedback.models import utcnow
from feedback.records import (
    FORCED,
    POLICY,
    DecisionBrief,
    DecisionRecord,
    FeedbackInput,
    FeedbackResult,
    LearnItem,
    OutcomeRecord,
    PendingDecision,
)
from feedback.rewards import Chosen, feedback_reward
from feedback.store import Store
from feedback.versions import CHALLENGER, SHADOW, Arms
from feedback.writer import BatchWriter
from serving.calls import Outcome, RouteRequest
from serving.embedder import EMPTY, NOTHING, OK, Embedded, Embedder
from serving.errors import NotFoundError
from serving.metrics import Metrics

log = logging.getLogger("routebandit.service")

DEFAULT_TENANT = "default"


class _Recent(NamedTuple):
    """What feedback needs of a recent decision, as a tuple of plain values.

    Such tuples are untracked by Python's cyclic GC, so tens of thousands of them add
    nothing to a full collection (full Decisions did: a 100 ms pause now and then).
    """

    model: str
    weights: tuple[float, float, float]
    expected_cost_usd: float
    expected_latency_ms: float
    tenant: str
    kind: str = POLICY
    outcome: tuple[Any, ...] | None = None  # OutcomeRecord's fields

    @classmethod
    def of(cls, c: Chosen, tenant: str, kind: str,
           outcome: OutcomeRecord | None = None) -> _Recent:
        w = c.weights
        return cls(c.model, (w.quality, w.cost, w.latency), c.expected_cost_usd,
                   c.expected_latency_ms, tenant, kind, _outcome_tuple(outcome))

    @property
    def chosen(self) -> Chosen:
        q, c, lat = self.weights
        return Chosen(self.model, RewardWeights(quality=q, cost=c, latency=lat),
                      self.expected_cost_usd, self.expected_latency_ms)

    @property
    def outcome_record(self) -> OutcomeRecord | None:
        return None if self.outcome is None else OutcomeRecord(*self.outcome)


class _RecentCache:
    """LRU of recent decisions stored as plain tuples (exact tuples of plain values are
    untracked by the GC; NamedTuple instances are not), read back as :class:`_Recent`."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._d: OrderedDict[str, tuple[Any, ...]] = OrderedDict()

    def get(self, decision_id: str) -> _Recent | None:
        t = self._d.get(decision_id)
        return None if t is None else _Recent._make(t)

    def put(self, decision_id: str, recent: _Recent) -> None:
        if self.size <= 0:
            return
        self._d[decision_id] = tuple(recent)
        if len(self._d) > self.size:
            self._d.popitem(last=False)

    def clear(self) -> None:
        self._d.clear()

    def __len__(self) -> int:
        return len(self._d)


def _outcome_tuple(o: OutcomeRecord | None) -> tuple[Any, ...] | None:
    if o is None:
        return None
    return tuple(getattr(o, f.name) for f in fields(o))


@dataclass(frozen=True)
class _ToLearn:
    seq: int
    decision_id: str
    reward: float
    outcome: Mapping[str, float | None]
    kind: str
    queued: float
    correction_id: int | None = None  # a posted score that replaced a learned grade
    reward_before: float | None = None
    score_before: float | None = None


class RouterService:
    """Decide, log, take feedback, learn (see the module docstring)."""

    def __init__(
        self,
        *,
        store: Store,
        catalog: Catalog,
        profiles: Mapping[str, RewardWeights],
        default_profile: str,
        learner: Learner | None = None,
        metrics: Metrics | None = None,
        store_prompts: bool = False,
        feature_key: bytes | None = None,
        max_prompt_chars: int = 200_000,
        flush_interval_s: float = 0.2,
        decision_cache_size: int = 50_000,
        commit_timeout_s: float = 10.0,
        shutdown_timeout_s: float = 30.0,
        embedder: Embedder | None = None,
    ) -> None:
        if default_profile not in profiles:
            raise RequestError(f"default_profile: {default_profile!r} is not a profile")
        self.store = store
        self.learner = learner or Learner(store)
        self.metrics = metrics or Metrics()
        self._catalog = catalog
        self._profiles = dict(profiles)
        self.default_profile = default_profile
        self.store_prompts = store_prompts
        # Words are hashed with it before they are features (bandit.features.featurize),
        # whatever store_prompts says: one feature space, and no word in what is stored
        # but the prompt_text column. The app always gives one; None keeps the words.
        self._feature_key = feature_key
        self.max_prompt_chars = max_prompt_chars
        self.writer = BatchWriter(
            store, flush_interval_s=flush_interval_s, on_flush=self._on_flush,
            commit_timeout_s=commit_timeout_s,
            on_dead_letter=lambda kind: self.metrics.dead_letters.labels("writer", kind).inc())
        self.learner.on_dead_letter = (
            lambda kind: self.metrics.dead_letters.labels("learner", kind).inc())
        self.learner.on_change = (
            lambda event: self.metrics.model_changes.labels(event.model, event.source).inc())
        self.shutdown_timeout_s = shutdown_timeout_s
        self._stopping = False
        self._recent = _RecentCache(decision_cache_size)
        self._policy: Policy | None = None
        # Set by serving.versioning.VersionManager in shadow or A/B mode: the champion
        # and challenger to route between. ``None``: the live policy decides alone.
        self.arms: Callable[[], Arms] | None = None
        self._learn_q: asyncio.Queue[_ToLearn | None] | None = None
        self._learn_task: asyncio.Task[None] | None = None
        self._catalog_lock = asyncio.Lock()
        # Several processes (serving/cluster.py): a decision another process returned may
        # not be written yet; feedback waits this long for it before answering 404.
        self.lookup_grace_s = 0.0
        # Spend budgets per tenant (serving/budget.py): shift to cheaper models, then refuse.
        self.budgets: Any = None
        # Grades no one posted (serving/grading.py): the judge and the implicit signals,
        # which the gateway reports answers to. None: none.
        self.grading: Any = None
        # Checks a model (and where it came from) before it joins the catalog, raising
        # CatalogError: the upstream egress policy (serving/egress.py), set by the app.
        self.vet_model: Callable[[ModelSpec, str], None] | None = None
        # Clusters of meaning: prompts are embedded, placed in the live policy's tree and
        # (where may_grow_clusters says so: the cluster's leader) grow it.
        self.embedder = embedder
        self.may_grow_clusters: Callable[[], bool] = lambda: True

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self, make_policy: Callable[[], Policy]) -> None:
        """Apply stored catalog changes, resume the policy, start writer and learner."""
        changes = await asyncio.to_thread(self.store.catalog_changes)
        # In a thread: vetting a change may resolve its host name.
        self._catalog = await asyncio.to_thread(apply_changes, self._catalog, changes,
                                                vet=self.vet_model)
        policy = await asyncio.to_thread(self.learner.resume, make_policy)
        policy.set_catalog(self._catalog)
        self._policy = policy
        self.writer.start()
        self._stopping = False
        self._learn_q = asyncio.Queue()
        self._start_learning()

    def _start_learning(self) -> None:
        self._learn_task = asyncio.create_task(self._learn_loop(), name="routebandit-learner")
        self._learn_task.add_done_callback(self._learning_ended)

    def _learning_ended(self, task: asyncio.Task[None]) -> None:
        # The loop catches what a batch can raise; a learner that died anyway is logged
        # with its traceback, counted and started again (feedback queued meanwhile waits
        # in the queue), never a silent stop.
        if self._stopping or task.cancelled() or task.exception() is None:
            return
        log.error("the learner died; restarting it", exc_info=task.exception())
        self.metrics.worker_restarts.labels("learner").inc()
        self._start_learning()

    async def stop(self) -> None:
        """Learn what is queued, write what is buffered, checkpoint: within
        ``shutdown_timeout_s`` each (what is left then is logged, and relearned from the
        store at the next start)."""
        self._stopping = True
        bound = self.shutdown_timeout_s
        if self._learn_q is not None and self._learn_task is not None:
            self._learn_q.put_nowait(None)
            try:
                await asyncio.wait_for(asyncio.shield(self._learn_task), bound)
            except asyncio.TimeoutError:
                log.error("the learner did not finish within %.0f s of shutdown (%d "
                          "feedback queued); they are learned at the next start",
                          bound, self._learn_q.qsize())
                self._learn_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._learn_task
            self._learn_task = None
        await self.writer.stop(timeout_s=bound)
        if self._policy is not None and self.learner.pending:
            try:
                await asyncio.wait_for(asyncio.to_thread(self.learner.checkpoint, "shutdown"),
                                       bound)
            except (StoreError, asyncio.TimeoutError) as exc:
                log.error("the shutdown checkpoint failed (%s); the next start relearns "
                          "from the last one", exc or "timed out")
            else:
                self.metrics.checkpoints.inc()

    @property
    def ready(self) -> bool:
        return (
            self._policy is not None
            and self.writer.running
            and self._learn_task is not None
            and not self._learn_task.done()
        )

    @property
    def has_policy(self) -> bool:
        return self._policy is not None

    @property
    def learn_backlog(self) -> int:
        return 0 if self._learn_q is None else self._learn_q.qsize()

    # -- what it serves -------------------------------------------------------------------
    @property
    def policy(self) -> Policy:
        if self._policy is None:
            raise RuntimeError("RouterService.start() has not run")
        return self._policy

    @property
    def catalog(self) -> Catalog:
        return self._catalog

    @property
    def profiles(self) -> Sequence[str]:
        return tuple(self._profiles)

    def weights_for(
        self, profile: str | None, overrides: Mapping[str, Any] | None
    ) -> RewardWeights:
        name = profile or self.default_profile
        if name not in self._profiles:
            raise RequestError(
                f"profile: unknown profile {name!r} (profiles: {', '.join(self._profiles)})"
            )
        return self._profiles[name].override(overrides)

    # -- route ----------------------------------------------------------------------------
    async def route(self, request: RouteRequest) -> tuple[str, Decision]:
        """Choose a model and log the decision; returns ``(decision_id, decision)``.

        Raises :class:`~bandit.errors.RequestError` (bad input, unknown model or
        profile) and :class:`~bandit.errors.NoEligibleModelError` (nothing fits).
        The decision is written within ``flush_interval_s``; until then feedback,
        outcomes and the audit view find it in memory.
        """
        started = time.perf_counter()
        prompt = request.prompt
        tenant = request.tenant or _meta(request.metadata, "tenant") or DEFAULT_TENANT
        metadata = {**(request.metadata or {}), "tenant": tenant}
        req = parse_request(
            messages=request.messages, prompt=prompt, max_tokens=request.max_tokens,
            tools=request.tools, response_format=request.response_format, metadata=metadata,
            reasoning_effort=request.reasoning_effort, modalities=request.modalities,
        )
        if req.total_chars > self.max_prompt_chars:
            field = "prompt" if prompt is not None else "messages"
            raise RequestError(
                f"{field}: the prompt has {req.total_chars} characters, more than the "
                f"limit of {self.max_prompt_chars}"
            )
        weights = self.weights_for(request.profile, request.weights)
        if self.budgets is not None:
            weights = self.budgets.apply(tenant, weights)
        context = featurize(req, key=self._feature_key)
        embedded = NOTHING
        if self.embedder is not None:
            embedded = await self._embed(req.last_user)
        policy = self.policy  # after the await: a swap meanwhile is served at once
        if embedded.vector is not None:
            path = self._clusters_of(policy, embedded)
            if path is None:
                embedded = Embedded(None, "malformed")
            elif path:
                context = with_clusters(context, path)
        user_key = request.user_key or _meta(request.metadata, "user_key", "user")
        arm: str | None = None
        shadow: Decision | None = None
        if request.force_model is not None:
            kind = request.kind if request.kind != POLICY else FORCED
            decision = self._forced(policy, request.force_model, context, weights)
        else:
            kind = POLICY
            allow = None if request.allow is None else list(request.allow)
            if self.arms is None:
                decision = policy.decide(context, weights=weights, allow=allow)
            else:  # champion and challenger, shadow or A/B (serving/versioning.py)
                routed = self.arms().route(context, user_key=user_key, weights=weights,
                                           allow=allow)
                decision, arm, shadow = routed.served, routed.arm, routed.shadow
        if embedded.vector is not None and self.may_grow_clusters():
            policy.learn_clusters(embedded.vector)
        if self.embedder is not None:  # marked on the decision, kept in its payload
            decision = replace(decision, extra={**decision.extra, "embedding": embedded.status})
        self.metrics.kind_source(kind_source(decision.extra.get("kind")))
        decision_id = new_decision_id()  # UUIDv7: 74 random bits, time-ordered (ids.py)
        pending = PendingDecision(
            decision_id=decision_id, decision=decision, tenant=tenant,
            created_at=utcnow(),
            user_key=user_key, task=_meta(request.metadata, "task"), kind=kind, arm=arm,
            prompt_text=_prompt_text(req.system, req.turns) if self.store_prompts else None,
        )
        self.writer.add_decision(pending)
        if shadow is not None:  # the challenger's choice: logged, never served
            self.writer.add_decision(replace(
                pending, decision_id=new_decision_id(), decision=shadow, kind=SHADOW,
                arm=CHALLENGER, prompt_text=None))
        self._remember(decision_id, _Recent.of(Chosen.of(decision), tenant, kind))
        self.metrics.decision(decision.model, kind)
        self.metrics.decision_seconds.observe(time.perf_counter() - started)
        return decision_id, decision

    async def _embed(self, text: str) -> Embedded:
        assert self.embedder is not None
        embedded = await self.embedder.embed(text)
        if embedded.status not in (OK, EMPTY):
            self.metrics.embed_fallbacks.labels(self.embedder.name, embedded.status).inc()
        return embedded

    def _clusters_of(self, policy: Policy, embedded: Embedded) -> tuple[int, ...] | None:
        """The embedding's clusters in the policy's tree (grown from the first embedding
        if the policy has none); None (counted) if it does not fit the tree."""
        assert embedded.vector is not None and self.embedder is not None
        if policy.clusters is None and self.may_grow_clusters():
            policy.set_clusters(ClusterTree(embedded.vector.size, seed=policy.seed))
        try:
            return policy.cluster_path(embedded.vector)
        except RequestError:  # another length than the tree's (the endpoint changed model)
            self.metrics.embed_fallbacks.labels(self.embedder.name, "malformed").inc()
            return None

    def _forced(self, policy: Policy, model: str, context: Any, weights: RewardWeights) -> Decision:
        if model not in self._catalog:
            raise RequestError(
                f"model: unknown model {model!r} (catalog has: {', '.join(self._catalog.names)})"
            )
        actions = policy.actions_for(context, weights=weights, allow=[model])
        return Decision(
            model=model, index=0, probability=1.0, pmf=((model, 1.0),),
            policy_version=policy.version, feature_version=context.feature_version,
            weights=weights, context=context, actions=actions, explored=False,
        )

    # -- outcomes, feedback, audit ---------------------------------------------------------
    async def record_outcome(self, decision_id: str, outcome: Outcome) -> None:
        """Store what the upstream call measured; the first outcome of a decision wins.

        Awaits the commit. Raises :class:`~feedback.errors.UnknownDecisionError`.
        """
        record = OutcomeRecord(
            decision_id=decision_id, created_at=utcnow(), latency_ms=outcome.latency_ms,
            ttft_ms=outcome.ttft_ms, input_tokens=outcome.input_tokens,
            output_tokens=outcome.output_tokens, tokens_estimated=outcome.tokens_estimated,
            cost_usd=outcome.cost_usd, status=outcome.status, error=outcome.error,
        )
        stored = await self.writer.outcome(record)
        recent = self._recent.get(decision_id)
        if stored and recent is not None and recent.outcome is None:
            self._recent.put(decision_id, recent._replace(outcome=_outcome_tuple(record)))
        model = outcome.model or (recent.model if recent else None)
        if stored and model is not None:
            self.metrics.outcome(model, record.status, latency_ms=record.latency_ms,
                                 ttft_ms=record.ttft_ms, cost_usd=record.cost_usd,
                                 input_tokens=record.input_tokens,
                                 output_tokens=record.output_tokens)

    async def feedback(
        self,
        *,
        decision_id: str,
        tenant: str | None,
        score: float,
        latency_ms: float | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        cost_usd: float | None = None,
        source: str | None = None,
        grade_id: int | None = None,
    ) -> FeedbackResult:
        """Turn a score into a reward, commit it, queue its learning step.

        ``grade_id``: a grade no one posted, promoted to the decision's feedback
        (feedback/grades.py); a posted score later takes its place.

        Idempotent: the same feedback again returns the stored result with
        ``duplicate=True`` and is not learned again. ``tenant=None`` (development
        mode) may give feedback on any decision. Raises ``UnknownDecisionError``
        (also for another tenant's decision), ``FeedbackConflictError`` and
        ``RequestError``.
        """
        recent = await self._lookup(decision_id, tenant)
        r = feedback_reward(
            recent.chosen, catalog=self._catalog, score=score, latency_ms=latency_ms,
            input_tokens=input_tokens, output_tokens=output_tokens, cost_usd=cost_usd,
            outcome=recent.outcome_record,
        )
        result = await self.writer.feedback(
            FeedbackInput(
                decision_id=decision_id, tenant=recent.tenant, score=score, reward=r.value,
                reward_cost_usd=r.cost_usd, reward_latency_ms=r.latency_ms,
                latency_ms=latency_ms, input_tokens=input_tokens,
                output_tokens=output_tokens, cost_usd=cost_usd, source=source,
                grade_id=grade_id,
            )
        )
        if result.duplicate:
            self.metrics.feedback_result("duplicate")
            return result
        self.metrics.feedback_result("accepted")
        self.metrics.observe_reward(result.record.reward)
        # The decision is committed by now (in this feedback's transaction or before):
        # the learner thread loads it from the store, a batch at a time.
        item = _ToLearn(
            seq=result.record.seq, decision_id=decision_id,
            reward=result.record.reward, outcome=r.measured, kind=recent.kind,
            queued=time.perf_counter(),
        )
        if result.replaced is not None:  # the learned grade's step gets a correction
            item = replace(item, correction_id=result.correction_id,
                           reward_before=result.replaced.reward,
                           score_before=result.replaced.score)
        if self._learn_q is not None:
            self._learn_q.put_nowait(item)
            self.metrics.learn_backlog.set(self._learn_q.qsize())
        return result

    async def default_quality(self, decision_id: str, quality: float) -> None:
        """Feedback with ``source="default"`` unless the decision already has feedback."""
        with contextlib.suppress(FeedbackConflictError):
            await self.feedback(decision_id=decision_id, tenant=None, score=quality,
                                source="default")

    async def get_decision(self, decision_id: str, tenant: str | None) -> DecisionRecord:
        """The audit view of a decision (with outcome and feedback)."""
        await self.writer.written(decision_id)
        record = await asyncio.to_thread(self.store.get_decision, decision_id, tenant=tenant)
        if record is None:
            raise UnknownDecisionError(decision_id)
        return record

    async def _lookup(self, decision_id: str, tenant: str | None) -> _Recent:
        recent = self._recent.get(decision_id)
        if recent is None:  # not remembered (evicted, or no cache): from the store
            await self.writer.written(decision_id)
            brief = await self._brief(decision_id)
            deadline = time.monotonic() + self.lookup_grace_s
            while brief is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                brief = await self._brief(decision_id)
            if brief is not None:
                recent = _Recent.of(brief.chosen, brief.tenant, brief.kind, brief.outcome)
        if recent is None or (tenant is not None and recent.tenant != tenant):
            raise UnknownDecisionError(decision_id)
        return recent

    async def _brief(self, decision_id: str) -> DecisionBrief | None:
        # SQLite: a local indexed read (tens of microseconds, and WAL readers never wait
        # for the writer) costs less on the event loop than a hop to a worker thread and
        # back; a server database answers over the network, from a thread.
        if self.store.dialect == "sqlite":
            return self.store.decision_brief(decision_id)
        return await asyncio.to_thread(self.store.decision_brief, decision_id)

    def _remember(self, decision_id: str, recent: _Recent) -> None:
        self._recent.put(decision_id, recent)

    # -- catalog and policy ----------------------------------------------------------------
    async def add_model(self, spec: ModelSpec) -> ModelSpec:
        """Add (or replace) a model; it is scored by its features from its next request."""
        if self.vet_model is not None:  # may resolve the host name: in a thread
            await asyncio.to_thread(self.vet_model, spec, "model")
        async with self._catalog_lock:
            catalog = self._catalog.with_model(spec)
            await asyncio.to_thread(self.store.set_catalog_change, spec.name, spec.to_dict())
            self.policy.set_catalog(catalog)
            self._catalog = catalog
        return spec

    async def remove_model(self, name: str) -> None:
        """Remove a model (``KeyError`` if unknown, ``CatalogError`` if it is the last)."""
        async with self._catalog_lock:
            catalog = self._catalog.without(name)
            await asyncio.to_thread(self.store.set_catalog_change, name, None)
            self.policy.set_catalog(catalog)
            self._catalog = catalog

    async def swap_policy(self, policy: Policy) -> None:
        """Serve ``policy`` from now on (with the live catalog) and checkpoint it."""
        policy.set_catalog(self._catalog)
        await asyncio.to_thread(self.learner.swap, policy)
        self._policy = policy
        self.metrics.checkpoints.inc()

    async def checkpoint(self) -> None:
        await asyncio.to_thread(self.learner.checkpoint, "admin")

    async def reset_model(self, model: str, *, estimates: bool = True) -> ChangeEvent:
        """Declare ``model`` changed (docs/policy.md, "Adapting to change"): the live
        policy forgets what it learned of it, the others keep theirs; logged, counted
        and checkpointed at once."""
        if model not in self.catalog.names:
            raise NotFoundError(f"model: {model!r} is not in the catalog")
        event = self.policy.reset_model(model, estimates=estimates)
        self.learner.report_changes()
        await asyncio.to_thread(self.learner.checkpoint, "periodic")
        return event
        self.metrics.checkpoints.inc()

    # -- background learning ---------------------------------------------------------------
    async def _learn_loop(self) -> None:
        assert self._learn_q is not None
        q = self._learn_q
        timeout = max(0.05, min(self.learner.checkpoint_interval_s, 5.0))
        stopping = False
        while not stopping:
            batch: list[_ToLearn] = []
            try:
                first = await asyncio.wait_for(q.get(), timeout=timeout)
            except asyncio.TimeoutError:
                first = None
            else:
                if first is None:
                    stopping = True
                else:
                    batch.append(first)
            while not q.empty() and len(batch) < 512:
                nxt = q.get_nowait()
                if nxt is None:
                    stopping = True
                    continue
                batch.append(nxt)
            if batch:
                n = await self._learn_guarded(batch)
                now = time.perf_counter()
                for b in batch:
                    self.metrics.learn_lag.observe(now - b.queued)
                self.metrics.learned.inc(n)
                self.metrics.learn_backlog.set(q.qsize())
            if self.learner.due():
                try:
                    await asyncio.to_thread(self.learner.checkpoint, "periodic")
                except Exception as exc:
                    # Learning goes on in memory; the checkpoint is retried when due again
                    # and a crash meanwhile only means relearning from the last one.
                    log.error("checkpoint failed, will retry: %s", exc,
                              exc_info=not isinstance(exc, StoreError))
                else:
                    self.metrics.checkpoints.inc()

    async def _learn_guarded(self, batch: list[_ToLearn]) -> int:
        """Learn a batch; the database away: retry it; a record that breaks loading:
        learn the others, one at a time."""
        while True:
            try:
                return await asyncio.to_thread(self._learn_batch, batch)
            except StoreUnavailableError as exc:
                if self._stopping:  # the next start learns it from the store
                    log.error("learning %d feedback at shutdown failed: %s", len(batch), exc)
                    return 0
                log.error("learning %d feedback failed, will retry: %s", len(batch), exc)
                await asyncio.sleep(1.0)
            except Exception:
                if len(batch) == 1:
                    log.exception("feedback %d could not be learned", batch[0].seq)
                    await asyncio.to_thread(self.learner.skip, batch[0].seq,
                                            "could not be loaded")
                    return 0
                log.exception("a batch of %d feedback failed; learning them one at a time",
                              len(batch))
                n = 0
                for one in batch:
                    n += await self._learn_guarded([one])
                return n

    def _learn_batch(self, batch: Sequence[_ToLearn]) -> int:
        loaded = self.store.load_decisions([b.decision_id for b in batch])
        items = []
        for b in batch:
            decision = loaded.get(b.decision_id)
            if decision is None:  # deleted meanwhile; nothing left to learn from
                log.warning("decision %s of feedback %d is gone", b.decision_id, b.seq)
                continue
            items.append(LearnItem(seq=b.seq, decision=decision, reward=b.reward,
                                   outcome=b.outcome, kind=b.kind,
                                   correction_id=b.correction_id,
                                   reward_before=b.reward_before,
                                   score_before=b.score_before))
        return self.learner.learn_many(items)

    def _on_flush(self, n_decisions: int, n_ops: int, seconds: float) -> None:
        self.metrics.write_seconds.observe(seconds)
        self.metrics.unwritten_decisions.set(self.writer.buffered)


def apply_changes(
    catalog: Catalog, changes: Collection[tuple[str, Mapping[str, Any] | None]],
    vet: Callable[[ModelSpec, str], None] | None = None,
) -> Catalog:
    """The file catalog with the run-time additions and removals stored in the database;
    an addition ``vet`` refuses (CatalogError) is skipped with a warning."""
    for name, spec in changes:
        if spec is None:
            if name in catalog and len(catalog) > 1:
                catalog = catalog.without(name)
        else:
            where = f"catalog_changes[{name}]"
            try:
                model = parse_model(spec, where)
                if vet is not None:
                    vet(model, where)
                catalog = catalog.with_model(model)
            except CatalogError as exc:
                log.warning("ignoring a stored catalog change: %s", exc)
    return catalog


def meaning(decision: Decision) -> dict[str, Any]:
    """A decision's kind of prompt, where it came from and its embedding's fate, as the
    route answer and the audit view show them."""
    kind = decision.extra.get("kind")
    return {"prompt_kind": kind, "prompt_kind_source": kind_source(kind),
            "embedding": decision.extra.get("embedding", "off")}


def _meta(metadata: Mapping[str, Any] | None, *keys: str) -> str | None:
    for key in keys:
        value = (metadata or {}).get(key)
        if value is not None and value != "":
            text = str(value)[:128]
            if "\x00" in text:  # PostgreSQL text cannot hold it: refuse, never poison a batch
                raise RequestError(f"metadata.{key}: must not contain NUL characters")
            return text
    return None


def _prompt_text(system: str, turns: Sequence[tuple[str, str]]) -> str:
    parts = ([f"system: {system}"] if system else []) + [f"{r}: {t}" for r, t in turns]
    # An audit copy: PostgreSQL text holds neither NUL nor lone surrogates.
    text = "\n\n".join(parts).replace("\x00", "\ufffd")
    return text.encode("utf-8", "replace").decode("utf-8")
