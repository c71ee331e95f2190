"""What the roll-ups sum: each :class:`Source` is one roll-up table's rows written as an
aggregation over the raw tables (``decisions`` joined with its outcome and feedback).

The same SQL builds an hour of a roll-up and answers, from the raw rows, the part of a
question the roll-ups do not cover yet (the current hour), so the two cannot disagree.
Costs come from the outcome (what the gateway measured), else from the feedback (what
the caller reported); a decision is *priced* when its cost and both token counts are
known, and only priced decisions enter the counterfactual cost at another model's
prices. Latency percentiles count successful calls only.
"""

from __future__ import annotations

from dataclasses import dataclass

from feedback.stats.bins import latency_bin_sql, propensity_bin_sql

JOINED = ("decisions d LEFT JOIN outcomes o ON o.decision_id = d.id "
          "LEFT JOIN feedback f ON f.decision_id = d.id")
ALONE = "decisions d"

COST = "COALESCE(o.cost_usd, f.cost_usd)"
INPUT = "COALESCE(o.input_tokens, f.input_tokens)"
OUTPUT = "COALESCE(o.output_tokens, f.output_tokens)"
LATENCY = "COALESCE(o.latency_ms, f.latency_ms)"
PRICED = f"({COST} IS NOT NULL AND {INPUT} IS NOT NULL AND {OUTPUT} IS NOT NULL)"
#: A policy decision that did not take the policy's most probable model.
EXPLORATORY = "(d.kind = 'policy' AND d.probability < {pmf_max} - 1e-9)"


@dataclass(frozen=True)
class Source:
    """One roll-up table's rows (or, for histograms, one ``metric`` of them)."""

    table: str
    dims: tuple[tuple[str, str], ...]  # (column, SQL over the raw tables)
    measures: tuple[tuple[str, str], ...]  # (column, aggregate SQL over the raw tables)
    where: str = ""
    fixed: tuple[tuple[str, str], ...] = ()  # (column, constant) naming this source's rows
    joined: bool = True

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(c for c, _ in self.fixed) + tuple(c for c, _ in self.dims)

    @property
    def measure_names(self) -> tuple[str, ...]:
        return tuple(c for c, _ in self.measures)


TRAFFIC = Source(
    table="stats_traffic",
    dims=(("tenant", "d.tenant"), ("model", "d.model"), ("kind", "d.kind"),
          ("policy_version", "d.policy_version"), ("status", "COALESCE(o.status, '')")),
    measures=(
        ("decisions", "COUNT(*)"),
        ("exploratory", f"SUM(CASE WHEN {EXPLORATORY} THEN 1 ELSE 0 END)"),
        ("feedback", "COUNT(f.seq)"),
        ("score_sum", "COALESCE(SUM(f.score), 0)"),
        ("reward_sum", "COALESCE(SUM(f.reward), 0)"),
        ("cost_n", f"COUNT({COST})"),
        ("cost_usd", f"COALESCE(SUM({COST}), 0)"),
        ("priced_n", f"SUM(CASE WHEN {PRICED} THEN 1 ELSE 0 END)"),
        ("priced_cost_usd", f"COALESCE(SUM(CASE WHEN {PRICED} THEN {COST} END), 0)"),
        ("input_tokens", f"COALESCE(SUM(CASE WHEN {PRICED} THEN {INPUT} END), 0)"),
        ("output_tokens", f"COALESCE(SUM(CASE WHEN {PRICED} THEN {OUTPUT} END), 0)"),
        ("latency_n", f"COUNT({LATENCY})"),
        ("latency_sum", f"COALESCE(SUM({LATENCY}), 0)"),
        ("ttft_n", "COUNT(o.ttft_ms)"),
        ("ttft_sum", "COALESCE(SUM(o.ttft_ms), 0)"),
    ),
)

TASKS = Source(
    table="stats_tasks",
    dims=(("tenant", "d.tenant"), ("task", "COALESCE(d.task, '')"), ("model", "d.model")),
    measures=(
        ("decisions", "COUNT(*)"),
        ("feedback", "COUNT(f.seq)"),
        ("score_sum", "COALESCE(SUM(f.score), 0)"),
        ("cost_n", f"COUNT({COST})"),
        ("cost_usd", f"COALESCE(SUM({COST}), 0)"),
    ),
    where="d.kind = 'policy'",
)

_COUNT = (("count", "COUNT(*)"),)
LATENCIES = Source(
    table="stats_histograms", fixed=(("metric", "latency"),),
    dims=(("tenant", "d.tenant"), ("model", "d.model"), ("bin", "{latency_bin}")),
    measures=_COUNT, where=f"{LATENCY} IS NOT NULL AND COALESCE(o.status, 'ok') = 'ok'",
)
TTFTS = Source(
    table="stats_histograms", fixed=(("metric", "ttft"),),
    dims=(("tenant", "d.tenant"), ("model", "d.model"),
          ("bin", "{ttft_bin}")),
    measures=_COUNT, where="o.ttft_ms IS NOT NULL AND o.status = 'ok'",
)
PROPENSITIES = Source(
    table="stats_histograms", fixed=(("metric", "propensity"),),
    dims=(("tenant", "d.tenant"), ("model", "d.model"),
          ("bin", "{propensity_bin}")),
    measures=_COUNT, where="d.kind = 'policy'", joined=False,
)

SOURCES = (TRAFFIC, TASKS, LATENCIES, TTFTS, PROPENSITIES)
#: Each roll-up table with its key columns (besides grain and start) and its measures.
TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    s.table: (s.keys, s.measure_names) for s in SOURCES
}


class Dialect:
    """The SQL that differs between SQLite and PostgreSQL."""

    def __init__(self, name: str) -> None:
        self.name = name

    def epoch(self, column: str) -> str:
        """Whole Unix seconds of a timestamp column."""
        if self.name == "sqlite":  # stored as 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC)
            return f"CAST(strftime('%s', {column}) AS INTEGER)"
        return f"CAST(floor(extract(epoch FROM {column})) AS BIGINT)"

    def floor(self, expr: str) -> str:
        """The integer part of a non-negative number (PostgreSQL's CAST rounds)."""
        if self.name == "sqlite":
            return f"CAST({expr} AS INTEGER)"
        return f"CAST(floor({expr}) AS INTEGER)"

    def snippets(self) -> dict[str, str]:
        """What the sources' ``{names}`` stand for in this dialect."""
        return {"pmf_max": self.pmf_max("d.pmf"),
                "latency_bin": latency_bin_sql(LATENCY, self.floor),
                "ttft_bin": latency_bin_sql("o.ttft_ms", self.floor),
                "propensity_bin": propensity_bin_sql("d.probability", self.floor)}

    def pmf_max(self, column: str) -> str:
        """The largest probability in a decision's pmf (``[[model, p], ...]``)."""
        if self.name == "sqlite":
            return f"(SELECT max(json_extract(e.value, '$[1]')) FROM json_each({column}) e)"
        return (f"(SELECT max(CAST(e.value ->> 1 AS DOUBLE PRECISION)) "
                f"FROM json_array_elements({column}) e)")


def raw_select(source: Source, dialect: Dialect, *, grain_s: int, lo: str, hi: str,
               tenant: str | None = None, measures: tuple[str, ...] | None = None) -> str:
    """``source``'s rows summed from the raw tables over ``[:lo, :hi)`` (bind names) in
    periods of ``grain_s`` seconds; columns: ``start``, the keys, the measures."""
    wanted = source.measure_names if measures is None else measures
    exprs = dict(source.measures)
    sql = dialect.snippets()
    start = f"({dialect.epoch('d.created_at')} / {grain_s}) * {grain_s}"
    cols = [f"{start} AS start"]
    cols += [f"'{value}' AS {col}" for col, value in source.fixed]
    cols += [f"{expr.format(**sql)} AS {col}" for col, expr in source.dims]
    cols += [f"{exprs[m].format(**sql)} AS {m}" for m in wanted]
    where = [f"d.created_at >= :{lo}", f"d.created_at < :{hi}"]
    if tenant is not None:
        where.append(f"d.tenant = :{tenant}")
    if source.where:
        where.append(f"({source.where})")
    groups = ", ".join(str(i) for i in [1, *range(2 + len(source.fixed),
                                                 2 + len(source.fixed) + len(source.dims))])
    return (f"SELECT {', '.join(cols)} FROM {JOINED if source.joined else ALONE} "
            f"WHERE {' AND '.join(where)} GROUP BY {groups}")


def rollup_select(source: Source, *, grain: str, a: str, b: str, tenant: str | None = None,
                  measures: tuple[str, ...] | None = None) -> str:
    """``source``'s roll-up rows of ``grain`` with ``:a <= start < :b``, in the columns of
    :func:`raw_select`."""
    wanted = source.measure_names if measures is None else measures
    cols = ["start", *source.keys, *wanted]
    where = [f"grain = '{grain}'", f"start >= :{a}", f"start < :{b}"]
    if tenant is not None:
        where.append(f"tenant = :{tenant}")
    where += [f"{col} = '{value}'" for col, value in source.fixed]
    return f"SELECT {', '.join(cols)} FROM {source.table} WHERE {' AND '.join(where)}"


__all__ = ["LATENCIES", "PROPENSITIES", "SOURCES", "TABLES", "TASKS", "TRAFFIC", "TTFTS",
           "Dialect", "Source", "raw_select", "rollup_select"]
