"""The stats questions, each one aggregation the database does.

Every question is asked of a :class:`~feedback.stats.window.Window` and optionally one
tenant. Its rows come from the daily roll-ups for whole days (when the buckets are whole
days), the hourly roll-ups for whole hours built so far, and the raw tables for the rest
(:func:`plan`); the database sums them per bucket and what comes back is bounded by the
number of buckets, models, statuses or bins, never by the number of decisions. Python
only turns those rows into series and ratios.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, text
from sqlalchemy.sql.elements import BindParameter

from feedback.models import UTCDateTime
from feedback.stats.bins import LATENCY_ERROR, bin_ms, propensity_range
from feedback.stats.connections import connection
from feedback.stats.figures import (
    Checkpointed,
    Errors,
    Exploration,
    Feedback,
    Kinds,
    Latency,
    Learner,
    ModelCount,
    ModelErrors,
    ModelExploration,
    ModelFeedback,
    ModelLatency,
    ModelSpend,
    PromptKind,
    PropensityBin,
    Reference,
    Span,
    Spend,
    Traffic,
    Versions,
    VersionUse,
)
from feedback.stats.plan import plan
from feedback.stats.rollup import Horizons, Rollup
from feedback.stats.sources import (
    LATENCIES,
    PROPENSITIES,
    TASKS,
    TRAFFIC,
    TTFTS,
    Source,
    raw_select,
    rollup_select,
)
from feedback.stats.window import HOUR, Window

SPEND_METHOD = (
    "Counterfactual: each decision's own input and output tokens priced at the reference "
    "model's list prices (USD per million tokens), minus what it cost. Only decisions "
    "whose cost and both token counts are known enter it; the answers the reference "
    "model would have given (their length, their quality) are not modelled."
)
LATENCY_METHOD = (
    f"Successful calls only. Percentiles from histograms with four bins per doubling "
    f"(within {LATENCY_ERROR:.0%} of the exact value)."
)
FAILED = ("error", "rejected", "client_error")  # statuses counted as errors
UNLEARNED_CAP = 100_000


def _dt(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


class Stats:
    """The stats of one database, read through its engine (``Stats(store.engine)``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.rollup = Rollup(engine)

    # -- plumbing ---------------------------------------------------------------------
    def _facts(self, w: Window, hz: Horizons, sources: Sequence[Source],
               measures: tuple[str, ...], *, tenant: str | None, series: bool,
               binds: list[BindParameter[Any]]) -> str:
        """The rows of ``sources`` over ``w`` as one ``UNION ALL`` (columns: start, the
        keys, ``measures``); appends its bind parameters to ``binds``."""
        raw_grain = w.bucket_s if series and w.bucket_s < HOUR else HOUR
        t = None if tenant is None else "tenant"
        if tenant is not None and not any(b.key == "tenant" for b in binds):
            binds.append(bindparam("tenant", tenant))
        selects = []
        for i, part in enumerate(plan(w, hz, series=series)):
            for j, source in enumerate(sources):
                a, b = f"a{i}_{j}", f"b{i}_{j}"
                if part.level == "raw":
                    selects.append(raw_select(source, self.rollup.dialect, grain_s=raw_grain,
                                              lo=a, hi=b, tenant=t, measures=measures))
                    binds += [bindparam(a, _dt(part.start), type_=UTCDateTime()),
                              bindparam(b, _dt(part.end), type_=UTCDateTime())]
                else:
                    selects.append(rollup_select(source, grain=part.level, a=a, b=b,
                                                 tenant=t, measures=measures))
                    binds += [bindparam(a, int(part.start)), bindparam(b, int(part.end))]
        return " UNION ALL ".join(selects)

    def _rows(self, conn: Connection, w: Window, hz: Horizons, sources: Sequence[Source],
              measures: tuple[str, ...], query: str, *, tenant: str | None, series: bool,
              params: dict[str, Any] | None = None) -> list[Any]:
        """``query`` with ``{facts}`` (the union, as a subquery) and ``{bucket}`` (the
        bucket start of a row) filled in."""
        binds: list[BindParameter[Any]] = []
        facts = self._facts(w, hz, sources, measures, tenant=tenant, series=series,
                            binds=binds)
        sql = query.format(facts=f"({facts}) u",
                           bucket=f"(u.start / {w.bucket_s}) * {w.bucket_s}")
        stmt = text(sql).bindparams(*binds, **(params or {}))
        return list(conn.execute(stmt).all())

    def _span(self, w: Window, hz: Horizons, tenant: str | None) -> Span:
        rolled = None if hz.hours is None else _dt(min(hz.hours, w.end_s)).isoformat()
        return Span(since=w.since.isoformat(), until=w.until.isoformat(), bucket_s=w.bucket_s,
                    buckets=w.buckets, tenant=tenant, rolled_up_until=rolled)

    @staticmethod
    def _index(w: Window) -> dict[int, int]:
        return {b: i for i, b in enumerate(w.buckets)}

    # -- the questions ----------------------------------------------------------------
    def traffic(self, w: Window, *, tenant: str | None = None) -> Traffic:
        """Decisions per model and bucket, and per decision kind."""
        with connection(self.engine) as conn:
            hz = self.rollup.horizons(conn)
            rows = self._rows(conn, w, hz, [TRAFFIC], ("decisions",),
                              "SELECT {bucket} AS bucket, u.model, u.kind, SUM(u.decisions) "
                              "FROM {facts} GROUP BY 1, 2, 3", tenant=tenant, series=True)
        index, n = self._index(w), len(w.buckets)
        series: dict[str, list[int]] = defaultdict(lambda: [0] * n)
        kinds: dict[str, int] = defaultdict(int)
        shadow = 0
        for bucket, model, kind, count in rows:
            if kind == "shadow":
                shadow += int(count)
                continue
            series[model][index[int(bucket)]] += int(count)
            kinds[kind] += int(count)
        totals = {m: sum(v) for m, v in series.items()}
        models = sorted(totals, key=lambda m: (-totals[m], m))
        return Traffic(span=self._span(w, hz, tenant), models=models,
                       decisions={m: series[m] for m in models}, totals=totals,
                       kinds=dict(sorted(kinds.items(), key=lambda kv: -kv[1])),
                       shadow=shadow)

    def kinds(self, w: Window, *, tenant: str | None = None, limit: int = 10) -> Kinds:
        """The most frequent kinds of prompt (task tags) of policy decisions, with the
        models the policy chose for each."""
        query = (
            "WITH t AS (SELECT u.task, u.model, SUM(u.decisions) AS n, SUM(u.feedback) AS fb, "
            "SUM(u.score_sum) AS ss, SUM(u.cost_usd) AS c FROM {facts} GROUP BY u.task, "
            "u.model), r AS (SELECT task, ROW_NUMBER() OVER (ORDER BY SUM(n) DESC, task) "
            "AS rk FROM t GROUP BY task) "
            "SELECT CASE WHEN r.rk <= :k THEN t.task END AS task, "
            "CASE WHEN r.rk <= :k THEN t.model END AS model, SUM(t.n), SUM(t.fb), "
            "SUM(t.ss), SUM(t.c), COUNT(DISTINCT t.task), MIN(r.rk) "
            "FROM t JOIN r ON r.task = t.task GROUP BY 1, 2")
        with connection(self.engine) as conn:
            hz = self.rollup.horizons(conn)
            rows = self._rows(conn, w, hz, [TASKS], TASKS.measure_names, query,
                              tenant=tenant, series=False, params={"k": limit})
        per: dict[str, dict[str, Any]] = {}
        other_kinds = other_decisions = 0
        for task, model, n, fb, ss, cost, distinct, rank in rows:
            if task is None:
                other_kinds, other_decisions = int(distinct), int(n)
                continue
            k = per.setdefault(task, {"rank": int(rank), "n": 0, "fb": 0, "ss": 0.0,
                                      "c": 0.0, "models": {}})
            k["n"] += int(n)
            k["fb"] += int(fb)
            k["ss"] += float(ss)
            k["c"] += float(cost)
            k["models"][model] = int(n)
        kinds = [
            PromptKind(kind=task, decisions=k["n"], scored=k["fb"],
                       mean_score=_ratio(k["ss"], k["fb"]), cost_usd=k["c"],
                       models=[ModelCount(m, c, c / k["n"]) for m, c in
                               sorted(k["models"].items(), key=lambda mc: (-mc[1], mc[0]))])
            for task, k in sorted(per.items(), key=lambda tk: tk[1]["rank"])
        ]
        return Kinds(span=self._span(w, hz, tenant), kinds=kinds, other_kinds=other_kinds,
                     other_decisions=other_decisions)

    def feedback(self, w: Window, *, tenant: str | None = None) -> Feedback:
        """Feedback coverage and mean score per bucket and model."""
        with connection(self.engine) as conn:
            hz = self.rollup.horizons(conn)
            rows = self._rows(
                conn, w, hz, [TRAFFIC], ("decisions", "feedback", "score_sum", "reward_sum"),
                "SELECT {bucket} AS bucket, u.model, SUM(u.decisions), SUM(u.feedback), "
                "SUM(u.score_sum), SUM(u.reward_sum) FROM {facts} WHERE u.kind <> 'shadow' "
                "GROUP BY 1, 2", tenant=tenant, series=True)
        index, n = self._index(w), len(w.buckets)
        decisions, scored = [0] * n, [0] * n
        score: dict[str, list[float]] = defaultdict(lambda: [0.0] * n)
        count: dict[str, list[int]] = defaultdict(lambda: [0] * n)
        totals: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0.0, 0.0])
        for bucket, model, d, fb, ss, rs in rows:
            i = index[int(bucket)]
            decisions[i] += int(d)
            scored[i] += int(fb)
            score[model][i] += float(ss)
            count[model][i] += int(fb)
            t = totals[model]
            t[0] += int(d)
            t[1] += int(fb)
            t[2] += float(ss)
            t[3] += float(rs)
        models = sorted(totals, key=lambda m: (-totals[m][0], m))
        return Feedback(
            span=self._span(w, hz, tenant), decisions=decisions, scored=scored,
            coverage=[_ratio(s, d) for s, d in zip(scored, decisions, strict=True)],
            mean_score={m: [_ratio(s, c) for s, c in zip(score[m], count[m], strict=True)]
                        for m in models},
            models=[ModelFeedback(model=m, decisions=int(totals[m][0]), scored=int(totals[m][1]),
                                  coverage=_ratio(totals[m][1], totals[m][0]),
                                  mean_score=_ratio(totals[m][2], totals[m][1]),
                                  mean_reward=_ratio(totals[m][3], totals[m][1]))
                    for m in models])

    def spend(self, w: Window, *, tenant: str | None = None,
              reference: Reference | None = None) -> Spend:
        """Spend per model and bucket; the saving against ``reference``'s prices."""
        measures = ("decisions", "cost_n", "cost_usd", "priced_n", "priced_cost_usd",
                    "input_tokens", "output_tokens")
        with connection(self.engine) as conn:
            hz = self.rollup.horizons(conn)
            rows = self._rows(
                conn, w, hz, [TRAFFIC], measures,
                "SELECT {bucket} AS bucket, u.model, "
                + ", ".join(f"SUM(u.{m})" for m in measures)
                + " FROM {facts} WHERE u.kind <> 'shadow' GROUP BY 1, 2",
                tenant=tenant, series=True)
        index, n = self._index(w), len(w.buckets)
        cost: dict[str, list[float]] = defaultdict(lambda: [0.0] * n)
        saving = [0.0] * n
        totals: dict[str, list[float]] = defaultdict(lambda: [0.0] * 7)

        def at_reference(tokens_in: float, tokens_out: float) -> float:
            if reference is None:
                return 0.0
            return (tokens_in * reference.input_price
                    + tokens_out * reference.output_price) / 1e6

        for bucket, model, *values in rows:
            i = index[int(bucket)]
            d, cn, c, pn, pc, ti, to = (float(v or 0) for v in values)
            cost[model][i] += c
            saving[i] += at_reference(ti, to) - pc
            for k, v in enumerate((d, cn, c, pn, pc, ti, to)):
                totals[model][k] += v
        models = sorted(totals, key=lambda m: (-totals[m][2], m))
        per = [ModelSpend(model=m, decisions=int(t[0]), costed=int(t[1]), cost_usd=t[2],
                          priced=int(t[3]), priced_cost_usd=t[4], input_tokens=int(t[5]),
                          output_tokens=int(t[6]), reference_cost_usd=at_reference(t[5], t[6]),
                          saving_usd=at_reference(t[5], t[6]) - t[4])
               for m, t in ((m, totals[m]) for m in models)]
        ref_cost = sum(p.reference_cost_usd for p in per)
        priced_cost = sum(p.priced_cost_usd for p in per)
        return Spend(
            span=self._span(w, hz, tenant), reference=reference, method=SPEND_METHOD,
            cost_usd={m: cost[m] for m in models},
            saving_usd=saving if reference is not None else [0.0] * n, models=per,
            total_cost_usd=sum(p.cost_usd for p in per), priced_cost_usd=priced_cost,
            reference_cost_usd=ref_cost,
            saving_usd_total=ref_cost - priced_cost if reference is not None else 0.0,
            saving_share=_ratio(ref_cost - priced_cost, ref_cost) if reference else None,
            unpriced=sum(p.decisions - p.priced for p in per))

    def latency(self, w: Window, *, tenant: str | None = None) -> Latency:
        """p50/p95/p99 latency and time to first token per model; p50 and p95 latency
        and p95 time to first token per bucket."""
        with connection(self.engine) as conn:
            hz = self.rollup.horizons(conn)
            totals = self._rows(conn, w, hz, [LATENCIES, TTFTS], ("count",),
                                _percentiles(["metric", "model"]), tenant=tenant,
                                series=False)
            # Over time, latency only (time to first token: its percentiles over the range).
            per_bucket = self._rows(conn, w, hz, [LATENCIES], ("count",),
                                    _percentiles(["bucket", "metric", "model"]),
                                    tenant=tenant, series=True)
        ms = self._ms
        stats: dict[tuple[str, str], tuple[int, float | None, float | None, float | None]] = {}
        for metric, model, tot, b50, b95, b99 in totals:
            stats[(metric, model)] = (int(tot), ms(b50), ms(b95), ms(b99))
        names = sorted({m for _, m in stats},
                       key=lambda m: (-stats.get(("latency", m), (0,))[0], m))
        none: tuple[int, float | None, float | None, float | None] = (0, None, None, None)
        models = []
        for m in names:
            lat, first = stats.get(("latency", m), none), stats.get(("ttft", m), none)
            models.append(ModelLatency(model=m, calls=lat[0], p50_ms=lat[1], p95_ms=lat[2],
                                       p99_ms=lat[3], ttft_calls=first[0],
                                       ttft_p50_ms=first[1], ttft_p95_ms=first[2]))
        index, n = self._index(w), len(w.buckets)
        p50: dict[str, list[float | None]] = {m: [None] * n for m in names}
        p95: dict[str, list[float | None]] = {m: [None] * n for m in names}
        for bucket, _metric, model, _tot, b50, b95, _b99 in per_bucket:
            i = index[int(bucket)]
            p50[model][i], p95[model][i] = ms(b50), ms(b95)
        return Latency(span=self._span(w, hz, tenant), method=LATENCY_METHOD, models=models,
                       p50_ms=p50, p95_ms=p95)

    @staticmethod
    def _ms(b: Any) -> float | None:
        return None if b is None else round(bin_ms(int(b)), 1)

    def errors(self, w: Window, *, tenant: str | None = None) -> Errors:
        """Outcomes by status per bucket and model, and failovers."""
        with connection(self.engine) as conn:
            hz = self.rollup.horizons(conn)
            rows = self._rows(
                conn, w, hz, [TRAFFIC], ("decisions",),
                "SELECT {bucket} AS bucket, u.model, u.status, SUM(u.decisions), "
                "SUM(CASE WHEN u.kind = 'failover' THEN u.decisions ELSE 0 END) "
                "FROM {facts} WHERE u.kind <> 'shadow' GROUP BY 1, 2, 3",
                tenant=tenant, series=True)
        index, n = self._index(w), len(w.buckets)
        outcomes, failovers = [0] * n, [0] * n
        statuses: dict[str, list[int]] = defaultdict(lambda: [0] * n)
        per: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        fails: dict[str, int] = defaultdict(int)
        for bucket, model, status, count, failover in rows:
            i = index[int(bucket)]
            failovers[i] += int(failover)
            fails[model] += int(failover)
            if status == "":  # decisions without an outcome (yet)
                per.setdefault(model, defaultdict(int))
                continue
            outcomes[i] += int(count)
            statuses[status][i] += int(count)
            per[model][status] += int(count)

        def rate(counts: dict[str, int]) -> float | None:
            return _ratio(sum(counts.get(s, 0) for s in FAILED), sum(counts.values()))

        models = sorted(per, key=lambda m: (-sum(per[m].values()), m))
        return Errors(
            span=self._span(w, hz, tenant), outcomes=outcomes,
            statuses=dict(sorted(statuses.items())), failovers=failovers,
            models=[ModelErrors(model=m, outcomes=sum(per[m].values()),
                                statuses=dict(sorted(per[m].items())), error_rate=rate(per[m]),
                                failovers=fails[m]) for m in models])

    def exploration(self, w: Window, *, tenant: str | None = None) -> Exploration:
        """The share of exploratory policy decisions per bucket; the propensities."""
        with connection(self.engine) as conn:
            hz = self.rollup.horizons(conn)
            rows = self._rows(
                conn, w, hz, [TRAFFIC], ("decisions", "exploratory"),
                "SELECT {bucket} AS bucket, u.model, SUM(u.decisions), SUM(u.exploratory) "
                "FROM {facts} WHERE u.kind = 'policy' GROUP BY 1, 2",
                tenant=tenant, series=True)
            bins = self._rows(conn, w, hz, [PROPENSITIES], ("count",),
                              "SELECT u.bin, SUM(u.count) FROM {facts} GROUP BY u.bin",
                              tenant=tenant, series=False)
        index, n = self._index(w), len(w.buckets)
        decisions, exploratory = [0] * n, [0] * n
        per: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for bucket, model, d, e in rows:
            i = index[int(bucket)]
            decisions[i] += int(d)
            exploratory[i] += int(e or 0)
            per[model][0] += int(d)
            per[model][1] += int(e or 0)
        counts = {int(b): int(c) for b, c in bins}
        props = [PropensityBin(*propensity_range(k), decisions=counts.get(k, 0))
                 for k in range(20)]
        return Exploration(
            span=self._span(w, hz, tenant), decisions=decisions, exploratory=exploratory,
            share=[_ratio(e, d) for e, d in zip(exploratory, decisions, strict=True)],
            propensities=props,
            models=[ModelExploration(m, per[m][0], per[m][1])
                    for m in sorted(per, key=lambda m: (-per[m][0], m))],
            total_decisions=sum(decisions), total_exploratory=sum(exploratory))

    def versions(self, w: Window, *, tenant: str | None = None) -> Versions:
        """Decisions per policy version and bucket (which version served when)."""
        with connection(self.engine) as conn:
            hz = self.rollup.horizons(conn)
            rows = self._rows(
                conn, w, hz, [TRAFFIC], ("decisions", "feedback", "score_sum", "reward_sum"),
                "SELECT {bucket} AS bucket, u.policy_version, SUM(u.decisions), "
                "SUM(u.feedback), SUM(u.score_sum), SUM(u.reward_sum) FROM {facts} "
                "WHERE u.kind <> 'shadow' GROUP BY 1, 2", tenant=tenant, series=True)
        index, n = self._index(w), len(w.buckets)
        series: dict[str, list[int]] = defaultdict(lambda: [0] * n)
        totals: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0.0, 0.0])
        for bucket, version, d, fb, ss, rs in rows:
            series[version][index[int(bucket)]] += int(d)
            t = totals[version]
            t[0] += int(d)
            t[1] += int(fb)
            t[2] += float(ss)
            t[3] += float(rs)
        buckets = w.buckets

        def seen(v: str) -> tuple[int, int]:
            used = [i for i, c in enumerate(series[v]) if c]
            return buckets[used[0]], buckets[used[-1]]

        order = sorted(series, key=lambda v: (seen(v)[0], v))
        return Versions(
            span=self._span(w, hz, tenant), decisions={v: series[v] for v in order},
            used=[VersionUse(version=v, first_bucket=seen(v)[0], last_bucket=seen(v)[1],
                             decisions=int(totals[v][0]), scored=int(totals[v][1]),
                             mean_score=_ratio(totals[v][2], totals[v][1]),
                             mean_reward=_ratio(totals[v][3], totals[v][1])) for v in order])

    def learner(self, w: Window, *, tenant: str | None = None) -> Learner:
        """Decisions waiting for feedback, feedback not learned yet, the last checkpoint."""
        t = "" if tenant is None else " AND f.tenant = :tenant"
        tp = {} if tenant is None else {"tenant": tenant}
        with connection(self.engine) as conn:
            hz = self.rollup.horizons(conn)
            (d, fb), = self._rows(
                conn, w, hz, [TRAFFIC], ("decisions", "feedback"),
                "SELECT COALESCE(SUM(u.decisions), 0), COALESCE(SUM(u.feedback), 0) "
                "FROM {facts} WHERE u.kind <> 'shadow'", tenant=tenant, series=False)
            cp = conn.execute(text(
                "SELECT created_at, policy_version, n_learned, reason, last_feedback_seq "
                "FROM checkpoints ORDER BY id DESC LIMIT 1").columns(
                created_at=UTCDateTime())).first()
            floor = conn.execute(text(
                "SELECT COALESCE(MAX(last_feedback_seq), 0) FROM checkpoints")).scalar()
            # Feedback after what the checkpoints hold that none has learned: counted up
            # to UNLEARNED_CAP, so a learner down for days costs a bounded scan.
            waiting = (f"FROM feedback f WHERE f.seq > :floor AND NOT EXISTS (SELECT 1 FROM "
                       f"learn_log l WHERE l.feedback_seq = f.seq){t}")
            unlearned = conn.execute(text(
                f"SELECT COUNT(*) FROM (SELECT 1 {waiting} LIMIT :cap) x").bindparams(
                floor=floor, cap=UNLEARNED_CAP, **tp)).scalar_one()
            oldest = conn.execute(text(
                f"SELECT f.created_at AS oldest {waiting} ORDER BY f.seq LIMIT 1").bindparams(
                floor=floor, **tp).columns(oldest=UTCDateTime())).scalar()
            newest = conn.execute(text(
                f"SELECT MAX(f.created_at) AS newest FROM feedback f WHERE 1 = 1{t}")
                .bindparams(**tp).columns(newest=UTCDateTime())).scalar()
        last = None if cp is None else Checkpointed(
            created=cp.created_at.isoformat(), policy_version=cp.policy_version,
            n_learned=None if tenant is not None else int(cp.n_learned), reason=cp.reason)
        return Learner(span=self._span(w, hz, tenant), decisions=int(d),
                       waiting=int(d) - int(fb), unlearned=int(unlearned),
                       unlearned_capped=int(unlearned) >= UNLEARNED_CAP,
                       oldest_unlearned=_iso(oldest), newest_feedback=_iso(newest),
                       last_checkpoint=last)

    def tenants(self) -> list[str]:
        """Every tenant with decisions (roll-ups, then the raw rows after them)."""
        with connection(self.engine) as conn:
            hz = self.rollup.horizons(conn)
            found = {t for t, in conn.execute(text(
                "SELECT DISTINCT tenant FROM stats_traffic WHERE grain = 'd'"))}
            after = hz.days
            if hz.hours is not None:
                found |= {t for t, in conn.execute(text(
                    "SELECT DISTINCT tenant FROM stats_traffic WHERE grain = 'h' "
                    "AND start >= :s").bindparams(s=after or 0))}
            stmt = text("SELECT DISTINCT tenant FROM decisions WHERE created_at >= :s")
            since = _dt(hz.hours or 0)
            found |= {t for t, in conn.execute(stmt.bindparams(
                bindparam("s", since, type_=UTCDateTime())))}
        return sorted(found)


def _percentiles(keys: Sequence[str]) -> str:
    """p50, p95 and p99 bins (and the count) per ``keys`` of histogram facts, found by
    the database from cumulative counts."""
    select = ", ".join("{bucket} AS bucket" if k == "bucket" else f"u.{k} AS {k}"
                       for k in keys)
    plain = ", ".join(keys)
    groups = ", ".join(str(i) for i in range(1, len(keys) + 2))
    return (
        f"WITH h AS (SELECT {select}, u.bin AS bin, SUM(u.count) AS n FROM {{facts}} "
        f"GROUP BY {groups}), "
        f"c AS (SELECT {plain}, bin, n, SUM(n) OVER (PARTITION BY {plain} ORDER BY bin "
        f"ROWS UNBOUNDED PRECEDING) AS cum, SUM(n) OVER (PARTITION BY {plain}) AS tot "
        f"FROM h) "
        f"SELECT {plain}, MAX(tot), MIN(CASE WHEN cum >= 0.5 * tot THEN bin END), "
        f"MIN(CASE WHEN cum >= 0.95 * tot THEN bin END), "
        f"MIN(CASE WHEN cum >= 0.99 * tot THEN bin END) FROM c GROUP BY {plain}"
    )


__all__ = ["LATENCY_METHOD", "SPEND_METHOD", "Stats"]
