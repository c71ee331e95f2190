"""Prometheus metrics, one registry per app (so tests can run many apps at once)."""

from __future__ import annotations

import math
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.decisions = Counter(
            "routebandit_decisions", "Routing decisions by chosen model and kind.",
            ["model", "kind"], registry=r,
        )
        self.decision_seconds = Histogram(
            "routebandit_decision_seconds", "Time to decide (featurize, policy, log).",
            buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
            registry=r,
        )
        # Clusters of meaning (serving/embedder.py): where each decision's kind came from
        # (tag, template, cluster, none; never a cluster's id), and the embeddings that
        # fell back (timeout, error, malformed) so the decision went on without one.
        self.decision_kind_sources = Counter(
            "routebandit_decision_kind_sources", "Decisions by where the prompt's kind came "
            "from: tag, template, cluster or none.", ["source"], registry=r,
        )
        self.embed_fallbacks = Counter(
            "routebandit_embed_fallbacks", "Prompt embeddings that failed, by embedder and "
            "reason (timeout, error, malformed); the decision went on without clusters.",
            ["embedder", "reason"], registry=r,
        )
        self.feedback = Counter(
            "routebandit_feedback", "Feedback received, by result.", ["result"], registry=r,
        )
        self.reward = Histogram(
            "routebandit_reward", "Rewards of accepted feedback (mean: routebandit_reward_mean).",
            buckets=(-1.0, -0.5, 0.0, 0.25, 0.5, 0.75, 0.9, 1.0), registry=r,
        )
        self.reward_mean = Gauge(
            "routebandit_reward_mean", "Mean reward of feedback accepted by this process.",
            registry=r,
        )
        self.learned = Counter(
            "routebandit_learned", "Learning steps taken by this process.", registry=r
        )
        self.learn_lag = Histogram(
            "routebandit_learn_lag_seconds", "From feedback commit to its learning step.",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0), registry=r,
        )
        self.learn_backlog = Gauge(
            "routebandit_learn_backlog", "Accepted feedback waiting to be learned.", registry=r
        )
        self.checkpoints = Counter(
            "routebandit_checkpoints", "Policy checkpoints written.", registry=r
        )
        self.unwritten_decisions = Gauge(
            "routebandit_unwritten_decisions", "Decisions buffered for the next write.",
            registry=r,
        )
        self.write_seconds = Histogram(
            "routebandit_write_seconds", "Duration of one group-commit write.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0), registry=r,
        )
        # Incremented from the WAL checkpoint thread (prometheus_client locks).
        self.wal_checkpoints = Counter(
            "routebandit_wal_checkpoints", "SQLite WAL checkpoints, by mode and result "
            "(ok, busy, error).", ["mode", "result"], registry=r,
        )
        self.dead_letters = Counter(
            "routebandit_dead_letters", "Records a background worker could not write or "
            "learn, set aside in the dead_letters table, by worker and kind.",
            ["worker", "kind"], registry=r,
        )
        self.model_changes = Counter(
            "routebandit_model_changes", "Changes of a model the policy went through, by "
            "model and source: 'detected' (its grades shifted: bandit.drift) or "
            "'operator' (reset-model); each forgets what was learned of its quality.",
            ["model", "source"], registry=r,
        )
        self.worker_restarts = Counter(
            "routebandit_worker_restarts", "Background workers that died and were "
            "started again (each also logged with its traceback).", ["worker"], registry=r,
        )
        # The gateway's upstream faults (each also logged with its decision id).
        self.upstream_failures = Counter(
            "routebandit_upstream_failures", "Upstream calls that failed, by model and kind "
            "(timeout, connect_error, status_error, protocol_error, bad_answer, too_large, "
            "...) and the outcome status they were recorded with.",
            ["model", "kind", "status"], registry=r,
        )
        self.failovers = Counter(
            "routebandit_failovers", "Requests that moved on to another model, by the model "
            "given up on and the one tried next.", ["model", "to"], registry=r,
        )
        self.breaker_transitions = Counter(
            "routebandit_breaker_transitions", "Cooldown breakers that opened or closed, by "
            "model.", ["model", "state"], registry=r,
        )
        self.upstream_cancelled = Counter(
            "routebandit_upstream_cancelled", "Upstream calls cancelled because the client "
            "went away, by model.", ["model"], registry=r,
        )
        # What the upstream calls measured (the gateway's outcomes), by model.
        self.upstream_calls = Counter(
            "routebandit_upstream_calls", "Upstream model calls recorded, by model and "
            "status (ok, error, rejected, client_error, cancelled).", ["model", "status"],
            registry=r,
        )
        self.upstream_seconds = Histogram(
            "routebandit_upstream_seconds", "Duration of successful upstream calls.",
            ["model"], buckets=(0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0),
            registry=r,
        )
        self.upstream_ttft_seconds = Histogram(
            "routebandit_upstream_ttft_seconds", "Time to the first token of successful "
            "upstream calls.", ["model"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0), registry=r,
        )
        self.upstream_cost = Counter(
            "routebandit_upstream_cost_usd", "Cost of upstream calls (USD, list prices).",
            ["model"], registry=r,
        )
        self.upstream_tokens = Counter(
            "routebandit_upstream_tokens", "Tokens of upstream calls, by model and "
            "direction (input, output).", ["model", "direction"], registry=r,
        )
        self.cooldown = Gauge(
            "routebandit_cooldown", "1 while a model cools down after repeated failures "
            "(skipped or probed), else 0; set when scraped.", ["model"], registry=r,
        )
        self.stats_refresh_seconds = Histogram(
            "routebandit_stats_refresh_seconds", "Duration of one refresh of the stats "
            "roll-ups (the dashboard's).", buckets=(0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0,
                                                   120.0), registry=r,
        )
        self.stats_hours_built = Counter(
            "routebandit_stats_hours_built", "Hours of decisions rolled up (built or "
            "rebuilt) for the stats.", registry=r,
        )
        self._decision_children: dict[tuple[str, str], Any] = {}
        self._feedback_children: dict[str, Any] = {}
        self._kind_source_children: dict[str, Any] = {}
        # Grades no one posted (serving/judge.py, serving/signals.py, docs/judge.md).
        self.judge_calls = Counter(
            "routebandit_judge_calls", "Calls to the judge model, by model and result "
            "(graded, invalid, timeout, error).", ["model", "result"], registry=r,
        )
        self.judge_cost = Counter(
            "routebandit_judge_cost_usd", "What the judge's calls cost, in USD.", ["model"],
            registry=r,
        )
        self.judge_skipped = Counter(
            "routebandit_judge_skipped", "Sampled answers the judge did not grade, by reason "
            "(budget, rate, queue).", ["reason"], registry=r,
        )
        self.grades = Counter(
            "routebandit_grades", "Grades no one posted, by source and what became of them "
            "(recorded, failed, learned, superseded, replaced).", ["source", "status"],
            registry=r,
        )
        self.judge_calibration = Gauge(
            "routebandit_judge_calibration_offset", "The judge's mean offset from people's "
            "scores of each answering model (subtracted once enough pairs back it).",
            ["model"], registry=r,
        )
        self.judge_agreement = Gauge(
            "routebandit_judge_agreement", "Judge against people on the same decisions: "
            "correlation, mean_difference (judge minus person) and n.", ["stat"],
            registry=r,
        )
        self._reward_n = 0
        self._reward_total = 0.0

    def decision(self, model: str, kind: str) -> None:
        child = self._decision_children.get((model, kind))
        if child is None:  # labels() costs a lock and a lookup; cache the children
            child = self._decision_children[(model, kind)] = self.decisions.labels(model, kind)
        child.inc()

    def kind_source(self, source: str) -> None:
        child = self._kind_source_children.get(source)
        if child is None:
            child = self._kind_source_children[source] = (
                self.decision_kind_sources.labels(source))
        child.inc()

    def feedback_result(self, result: str) -> None:
        child = self._feedback_children.get(result)
        if child is None:
            child = self._feedback_children[result] = self.feedback.labels(result)
        child.inc()

    def observe_reward(self, value: float) -> None:
        if not math.isfinite(value):  # never reaches here (rewards are checked); never -Inf
            return
        self.reward.observe(value)
        self._reward_n += 1
        self._reward_total += value
        self.reward_mean.set(self._reward_total / self._reward_n)

    def outcome(self, model: str, status: str, *, latency_ms: float | None,
                ttft_ms: float | None, cost_usd: float | None, input_tokens: int | None,
                output_tokens: int | None) -> None:
        self.upstream_calls.labels(model, status).inc()
        if status == "ok" and latency_ms is not None and math.isfinite(latency_ms):
            self.upstream_seconds.labels(model).observe(latency_ms / 1000.0)
        if status == "ok" and ttft_ms is not None and math.isfinite(ttft_ms):
            self.upstream_ttft_seconds.labels(model).observe(ttft_ms / 1000.0)
        if cost_usd is not None and math.isfinite(cost_usd) and cost_usd >= 0:
            self.upstream_cost.labels(model).inc(cost_usd)
        for direction, n in (("input", input_tokens), ("output", output_tokens)):
            if n is not None and n >= 0:
                self.upstream_tokens.labels(model, direction).inc(n)

    def observe_refresh(self, seconds: float, *, hours: int, skipped: bool) -> None:
        if not skipped:
            self.stats_refresh_seconds.observe(seconds)
            self.stats_hours_built.inc(hours)

    def render(self) -> bytes:
        return generate_latest(self.registry)
