"""The figures of a time range as one self-contained HTML file (``routebandit report``):
the dashboard's panels as matplotlib PNGs embedded as data URIs, their tables, the
methods, and a few lines of summary for the terminal. No script, no external file."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from feedback.stats import Reference, Stats, Window
from feedback.stats.figures import (
    Errors,
    Exploration,
    Feedback,
    Kinds,
    Latency,
    Learner,
    RegisteredVersion,
    Spend,
    Traffic,
    Versions,
)
from feedback.stats.window import label

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class Report:
    """Every panel of one window (and tenant)."""

    window: Window
    tenant: str | None
    traffic: Traffic
    kinds: Kinds
    feedback: Feedback
    spend: Spend
    latency: Latency
    errors: Errors
    exploration: Exploration
    versions: Versions
    learner: Learner
    created: str


def collect(stats: Stats, w: Window, *, tenant: str | None, reference: Reference | None,
            registry: Sequence[RegisteredVersion] = (), registry_note: str = "") -> Report:
    """Ask every question of ``w``; ``registry`` holds MLflow's versions (if read)."""
    lo, hi = w.since.isoformat(), w.until.isoformat()
    versions = stats.versions(w, tenant=tenant)
    shown = [v for v in registry if lo <= v.created < hi or v.aliases]
    from dataclasses import replace

    return Report(
        window=w, tenant=tenant, traffic=stats.traffic(w, tenant=tenant),
        kinds=stats.kinds(w, tenant=tenant), feedback=stats.feedback(w, tenant=tenant),
        spend=stats.spend(w, tenant=tenant, reference=reference),
        latency=stats.latency(w, tenant=tenant), errors=stats.errors(w, tenant=tenant),
        exploration=stats.exploration(w, tenant=tenant),
        versions=replace(versions, registry=shown, registry_note=registry_note),
        learner=stats.learner(w, tenant=tenant),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"))


# -- numbers as text ------------------------------------------------------------------
def _pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def _usd(x: float | None) -> str:
    if x is None:
        return "-"
    x = 0.0 if abs(x) < 5e-7 else x  # no "-$0.000000" from float noise
    a = abs(x)
    digits = 0 if a >= 100 else 2 if a >= 1 else 4 if a >= 0.01 else 6
    return f"{'-' if x < 0 else ''}${a:,.{digits}f}"


def _ms(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.0f} ms" if x < 1000 else f"{x / 1000:.{1 if x >= 10000 else 2}f} s"


def _num(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _when(iso: str) -> str:
    return iso.replace("T", " ")[:16] + " UTC"


def _scope(r: Report) -> str:
    return f"tenant {r.tenant}" if r.tenant else "every tenant"


def summary(r: Report) -> list[str]:
    """A few lines for the terminal."""
    t, f, s, e, x, lr = r.traffic, r.feedback, r.spend, r.errors, r.exploration, r.learner
    total = sum(t.totals.values())
    lines = [f"routebandit report: {_when(t.span.since)} to {_when(t.span.until)} "
             f"({label(t.span.bucket_s)} buckets), {_scope(r)}"]
    kinds = ", ".join(f"{k} {_pct(n / total, 0)}" for k, n in t.kinds.items()) if total else ""
    lines.append(f"  decisions     {total:,}" + (f" ({kinds})" if kinds else "")
                 + (f"; {t.shadow:,} shadow" if t.shadow else ""))
    if total:
        lines.append("  traffic       " + ", ".join(
            f"{m} {_pct(t.totals[m] / total, 0)}" for m in t.models[:6]))
    scored = sum(f.scored)
    lines.append(f"  feedback      {_pct(scored / total if total else None)} scored; mean "
                 + (", ".join(f"{m.model} {_num(m.mean_score, 2)} (n={m.scored:,})"
                              for m in f.models[:4]) or "-"))
    saving = "" if s.reference is None else (
        f"; {'saved' if s.saving_usd_total >= 0 else 'spent'} "
        f"{_usd(abs(s.saving_usd_total))} ({_pct(s.saving_share)}) "
        f"{'against' if s.saving_usd_total >= 0 else 'more than'} {s.reference.model} "
        f"at its prices")
    lines.append(f"  spend         {_usd(s.total_cost_usd)}{saving}")
    if r.latency.models:
        lines.append("  latency p95   " + ", ".join(
            f"{m.model} {_ms(m.p95_ms)}" for m in r.latency.models[:5]))
    calls = sum(e.outcomes)
    failed = sum((m.error_rate or 0) * m.outcomes for m in e.models)
    lines.append(f"  errors        {_pct(failed / calls if calls else None)} of {calls:,} "
                 f"calls failed; failovers {sum(e.failovers):,}")
    lines.append(f"  exploration   {_pct(_ratio(x.total_exploratory, x.total_decisions))} of "
                 f"{x.total_decisions:,} policy decisions exploratory")
    served = ", ".join(u.version for u in r.versions.used[-5:]) or "-"
    champion = next((v for v in r.versions.registry if "champion" in v.aliases), None)
    lines.append(f"  versions      served {served}" + (
        f"; champion {champion.version} DR {_num(champion.dr)} "
        f"[{_num(champion.dr_low)}, {_num(champion.dr_high)}]" if champion else ""))
    cp = lr.last_checkpoint
    lines.append(f"  learner       {lr.waiting:,} decisions waiting for feedback; "
                 f"{lr.unlearned:,} feedback not learned; last checkpoint "
                 + (_when(cp.created) if cp else "never"))
    return lines


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


# -- figures --------------------------------------------------------------------------
def _png(fig: Figure) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(title: str, ylabel: str, height: float = 3.0) -> tuple[Figure, Axes]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, height), layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=11, loc="left")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return fig, ax


def _times(buckets: Sequence[int]) -> Any:
    # matplotlib plots datetimes (its stubs declare numbers and arrays only)
    return [datetime.fromtimestamp(b, timezone.utc) for b in buckets]


def _legend(ax: Axes) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, ncols=4, loc="upper left", framealpha=0.8)


def _stacked(title: str, ylabel: str, buckets: Sequence[int],
             series: dict[str, list[float]] | dict[str, list[int]]) -> str | None:
    if not series or not any(any(v) for v in series.values()):
        return None
    fig, ax = _figure(title, ylabel)
    ax.stackplot(_times(buckets), *[list(v) for v in series.values()],
                 labels=list(series), alpha=0.85)
    _legend(ax)
    return _png(fig)


def _lines(title: str, ylabel: str, buckets: Sequence[int],
           series: dict[str, list[float | None]], *, ylim: tuple[float, float] | None = None
           ) -> str | None:
    if not any(v is not None for vals in series.values() for v in vals):
        return None
    fig, ax = _figure(title, ylabel)
    xs = _times(buckets)
    for name, vals in series.items():
        ax.plot(xs, [float("nan") if v is None else v for v in vals], marker=".", label=name)
    if ylim:
        ax.set_ylim(*ylim)
    if len(xs) > 1:  # the window, even where a series has no value
        ax.set_xlim(xs[0], xs[-1])
    _legend(ax)
    return _png(fig)


def _intervals(rows: Sequence[RegisteredVersion]) -> str | None:
    rows = [v for v in rows if v.dr is not None]
    if not rows:
        return None
    fig, ax = _figure("MLflow versions: DR estimate of mean reward, 95% interval",
                      "mean reward")
    xs: Any = [datetime.fromisoformat(v.created) for v in rows]
    ys = [v.dr or 0.0 for v in rows]
    low = [y - (v.dr_low if v.dr_low is not None else y) for y, v in zip(ys, rows, strict=True)]
    high = [(v.dr_high if v.dr_high is not None else y) - y for y, v in zip(ys, rows,
                                                                             strict=True)]
    ax.errorbar(xs, ys, yerr=[low, high], fmt="o", capsize=4)
    for x, y, v in zip(xs, ys, rows, strict=True):
        ax.annotate(v.version + (f" ({', '.join(v.aliases)})" if v.aliases else ""), (x, y),
                    fontsize=7, xytext=(4, 4), textcoords="offset points")
    return _png(fig)


def _histogram(e: Exploration) -> str | None:
    if not any(b.decisions for b in e.propensities):
        return None
    fig, ax = _figure("propensities of policy decisions", "decisions", height=2.4)
    ax.bar([b.low for b in e.propensities], [b.decisions for b in e.propensities],
           width=0.045, align="edge")
    ax.set_xlabel("probability the chosen model was logged with")
    return _png(fig)


# -- the document ---------------------------------------------------------------------
def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(uri: str | None, alt: str) -> str:
    if uri is None:
        return f"<p class='empty'>No data for {html.escape(alt)} in this range.</p>"
    return f"<img src='{uri}' alt='{html.escape(alt)}'>"


def _section(title: str, *parts: str, note: str = "") -> str:
    n = f"<p class='note'>{html.escape(note)}</p>" if note else ""
    return f"<section><h2>{html.escape(title)}</h2>{n}{''.join(parts)}</section>"


_CSS = """
body{font:14px/1.45 system-ui,sans-serif;color:#1d2430;max-width:1000px;margin:24px auto;
padding:0 16px}h1{margin-bottom:0}.sub{color:#5d6878;margin-top:2px}section{margin:28px 0}
h2{font-size:17px;border-bottom:1px solid #dfe3ea;padding-bottom:4px}img{max-width:100%}
table{border-collapse:collapse;width:100%;font-size:13px;margin-top:8px}td,th{padding:3px 8px;
border-bottom:1px solid #dfe3ea;text-align:right}td:first-child,th:first-child{text-align:left}
th{color:#5d6878;font-weight:500}.note,.empty{color:#5d6878;font-size:13px}
.method{background:#f3f5f9;padding:6px 8px;border-radius:5px;font-size:13px}
pre{background:#f3f5f9;padding:10px;border-radius:5px;font-size:12.5px}
"""


def render(r: Report) -> str:
    """The report as one HTML document."""
    t, k, f, s, lat, e, x, v, lr = (r.traffic, r.kinds, r.feedback, r.spend, r.latency,
                                    r.errors, r.exploration, r.versions, r.learner)
    b = t.span.buckets
    sections = [
        _section("Traffic share per model",
                 _img(_stacked("decisions per bucket", "decisions", b, t.decisions),
                      "traffic"),
                 _table(["model", "decisions", "share"],
                        [(m, f"{t.totals[m]:,}", _pct(t.totals[m] / max(1, sum(t.totals.values()))))
                         for m in t.models]),
                 note="Decisions served per bucket (shadow decisions excluded)."),
        _section("Kinds of prompt",
                 _table(["kind (task tag)", "decisions", "models chosen", "scored",
                         "mean score"],
                        [(kk.kind or "(no task tag)", f"{kk.decisions:,}",
                          ", ".join(f"{m.model} {_pct(m.share, 0)}" for m in kk.models[:4]),
                          _pct(_ratio(kk.scored, kk.decisions), 0), _num(kk.mean_score, 2))
                         for kk in k.kinds])
                 + (f"<p class='note'>and {k.other_kinds:,} more kinds with "
                    f"{k.other_decisions:,} decisions</p>" if k.other_kinds else ""),
                 note="The most frequent task tags of policy decisions."),
        _section("Feedback",
                 _img(_lines("coverage and mean score per model", "share / score", b,
                             {"coverage": list(f.coverage), **{
                                 f"{m} mean score": vals for m, vals in f.mean_score.items()}},
                             ylim=(0, 1)), "feedback"),
                 _table(["model", "decisions", "scored", "coverage", "mean score",
                         "mean reward"],
                        [(m.model, f"{m.decisions:,}", f"{m.scored:,}", _pct(m.coverage),
                          _num(m.mean_score), _num(m.mean_reward)) for m in f.models])),
        _section("Spend and saving",
                 f"<p><b>{_usd(s.saving_usd_total)}</b> saved against "
                 f"{html.escape(s.reference.model)} ({_pct(s.saving_share)}): spent "
                 f"{_usd(s.priced_cost_usd)} where it would have cost "
                 f"{_usd(s.reference_cost_usd)}. Total spend {_usd(s.total_cost_usd)}"
                 + (f"; {s.unpriced:,} decisions without cost or tokens left out" if
                    s.unpriced else "") + ".</p>" if s.reference else "",
                 _img(_stacked("spend per bucket", "USD", b, s.cost_usd), "spend"),
                 _table(["model", "decisions", "spend", "input tokens", "output tokens",
                         "at reference", "saving"],
                        [(m.model, f"{m.decisions:,}", _usd(m.cost_usd), f"{m.input_tokens:,}",
                          f"{m.output_tokens:,}", _usd(m.reference_cost_usd),
                          _usd(m.saving_usd)) for m in s.models]),
                 f"<p class='method'>{html.escape(s.method)}</p>"),
        _section("Latency",
                 _img(_lines("p95 latency per model", "ms", b,
                             {f"{m} p95": vals for m, vals in lat.p95_ms.items()}), "latency"),
                 _table(["model", "calls", "p50", "p95", "p99", "TTFT p50", "TTFT p95"],
                        [(m.model, f"{m.calls:,}", _ms(m.p50_ms), _ms(m.p95_ms), _ms(m.p99_ms),
                          _ms(m.ttft_p50_ms), _ms(m.ttft_p95_ms)) for m in lat.models]),
                 f"<p class='method'>{html.escape(lat.method)}</p>"),
        _section("Errors and failovers",
                 _img(_stacked("outcomes other than ok, and failovers", "calls", b, {
                     **{st: vals for st, vals in e.statuses.items() if st != "ok"},
                     "failovers": e.failovers}), "errors"),
                 _table(["model", "calls", "error rate", "failovers", "statuses"],
                        [(m.model, f"{m.outcomes:,}", _pct(m.error_rate), f"{m.failovers:,}",
                          ", ".join(f"{st} {n:,}" for st, n in m.statuses.items()))
                         for m in e.models]),
                 note="Cooldowns are live state of a running gateway: see the dashboard."),
        _section("Exploration",
                 _img(_lines("share of exploratory policy decisions", "share", b,
                             {"exploratory": list(x.share)}, ylim=(0, 1)), "exploration"),
                 _img(_histogram(x), "propensities"),
                 note="Exploratory: a policy decision that did not take the most probable "
                      "model."),
        _section("Policy versions",
                 _img(_stacked("decisions per policy version", "decisions", b, v.decisions),
                      "versions"),
                 _img(_intervals(v.registry), "MLflow versions"),
                 _table(["version", "created", "kind", "aliases", "DR [95%]", "logged", "n"],
                        [(rv.version, _when(rv.created), rv.kind, ", ".join(rv.aliases),
                          f"{_num(rv.dr)} [{_num(rv.dr_low)}, {_num(rv.dr_high)}]",
                          _num(rv.logged), "-" if rv.n is None else f"{rv.n:,}")
                         for rv in v.registry])
                 + (f"<p class='note'>{html.escape(v.registry_note)}</p>"
                    if v.registry_note else "")),
        _section("Learner",
                 _table(["", ""], [
                     ("decisions waiting for feedback", f"{lr.waiting:,} of {lr.decisions:,}"),
                     ("feedback not in a checkpoint", f"{lr.unlearned:,}"),
                     ("newest feedback", _when(lr.newest_feedback) if lr.newest_feedback
                      else "-"),
                     ("last checkpoint", _when(lr.last_checkpoint.created) + " ("
                      + lr.last_checkpoint.policy_version + ")" if lr.last_checkpoint
                      else "never")])),
    ]
    title = f"routebandit report: {_when(t.span.since)} to {_when(t.span.until)}"
    text = "\n".join(summary(r))
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p class='sub'>{html.escape(_scope(r))}, "
            f"{label(t.span.bucket_s)} buckets; made {html.escape(r.created)}</p>"
            f"<pre>{html.escape(text)}</pre>{''.join(sections)}</body></html>")


__all__ = ["Report", "collect", "render", "summary"]
