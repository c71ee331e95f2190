"""``routebandit replay OUTCOMES.csv``: the offline replay benchmark.

Replays an outcome table (every model's graded, priced answer to every prompt; format
in :mod:`bandit.outcomes`) through the bandit at a sweep of cost weights, learning only
from the model it chose, and compares its cost-quality frontier with every single model,
random routing, the oracle, the task ceiling and a full-information baseline. The
protocol and the metrics are described in :mod:`bandit.replay`, :mod:`bandit.frontier`
and ``docs/replay.md``.

A progress bar goes to stderr, a table of results to stdout. ``--json PATH`` writes::

    {
      "schema": "routebandit.replay/1",
      "config": {"seed", "passes", "cost_weights": [..], "exploration", "policy": {..},
                 "curve_every", "task_tag", "full_info_passes",
                 "full_info_learning_rate", "changes": [..], "change_window",
                 "judge": {"noise", "bias": {model: bias}, "human_share", "weight",
                           "calibrate", "min_pairs"} | null,
                 "limit", "embedder"},
      "data": {"source", "n_train", "n_test", "models": [..],
               "tasks": {task: {"train": n, "test": n}}, "split_assigned"},
      "best_single": {"model", "quality", "cost_per_prompt"},
      "frontier": [{"cost_weight", "quality", "cost_per_prompt",
                    "choices": {model: share},            # the bandit, one per weight
                    "by_task": {task: {"quality", "cost_per_prompt", "choices"}}}],
      "hull": [{"cost_per_prompt", "quality"}],            # its non-decreasing hull
      "cost_pct_for_95", "cost_pct_for_98",                # % of best_single's cost
      "quality_pct_at_10", "quality_pct_at_30",            # % of best_single's quality
      "aiq", "aiq_cost_range": [0, c_max],
      "baselines": {
        name: {"label", "peeks", "frontier": [...], "hull": [...],
               "cost_pct_for_95", "cost_pct_for_98", "quality_pct_at_10",
               "quality_pct_at_30", "aiq",
               "within_task_auc": {task: {model: auc}}}  # full_information only
      },  # names: full_information, per_task, task_ceiling, oracle, random, single_models
      "learning_curve": [{"cost_weight", "points": [{"step", "mean_reward",
                          "mean_quality", "mean_cost_per_prompt"}]}],
      "learning_curve_reference": {"model", "points": [{"step", "mean_quality"}]},
      "changes": [{"change", "kind", "model", "step", "window", "threshold",
                   "by_cost_weight": [{"cost_weight", "share_before", "windows": [..],
                                       "decisions_to_cross"}]}],   # one per --change
      "clusters": {"n_clusters", "n_leaves", "depth", "leaf_sizes": [..],
                   "checkpoint_bytes", "cap", "split_after", "n_learned",
                   "purity", "purity_top", "nmi"},   # null with --embedder none
      "judge": {"judge": {..}, "label",                  # null without a judge option
                "clean": {"cost_pct_for_95", "cost_pct_for_98", "quality_pct_at_10",
                          "quality_pct_at_30", "aiq"},     # the bandit above
                "judged": {...the same...}, "difference": {the first three: judged - clean},
                "frontier": [...], "hull": [...],
                "by_cost_weight": [{"cost_weight", "decisions", "human_decisions",
                                    "calibration": {model: {"offset", "pairs",
                                                            "applied_from_step"}}}]},
      "elapsed_seconds"
    }

With ``--embedder local`` (the default) every prompt is embedded as the service embeds
it (serving/embedder.py: wordllama, the bounded head and tail of the last user turn) and
routed by its clusters of meaning (:func:`bandit.replay.grow_clusters`).

With ``--judge-noise``, ``--judge-bias`` or ``--human-share`` a simulated judge stands in
for the table's grades on train (:class:`bandit.replay.SimulatedJudge`): the sweep runs
clean and under the judge on the same contexts, and the table ends with the two sets of
figures and their difference.

Costs are mean USD per test prompt, qualities mean graded quality in [0, 1]; a headline
number is ``null`` when the router never reaches it. ``single_models`` frontier points
carry ``model`` instead of ``cost_weight``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bandit.calibration import DEFAULT_JUDGE_WEIGHT, DEFAULT_MIN_PAIRS
from bandit.errors import RequestError, RouteBanditError
from bandit.features import parse_request
from bandit.outcomes import OutcomeTable, load_outcomes
from bandit.policy import EXPLORATIONS, PolicyConfig
from bandit.replay import (
    DEFAULT_COST_WEIGHTS,
    JUDGE_FIGURES,
    Change,
    ChangeReport,
    ClusterReport,
    JudgeReport,
    OperatingPoint,
    ReplayConfig,
    ReplayResult,
    RouterResult,
    SimulatedJudge,
    check_changes,
    check_judge,
    replay,
    work_units,
)
from serving.commands.tracking_args import add_store_args, tracker


def _cost_weights(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of numbers, got {text!r}"
        ) from None
    if not values or any(not (v >= 0 and v != float("inf")) for v in values):
        raise argparse.ArgumentTypeError(f"expected finite numbers >= 0, got {text!r}")
    return values


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _change(text: str) -> Change:
    """``degrade:MODEL@STEP``, ``add:MODEL@STEP`` or ``price:MODEL@STEP=IN,OUT``."""
    usage = ("expected degrade:MODEL@STEP, add:MODEL@STEP or price:MODEL@STEP=IN,OUT "
             f"(IN, OUT: USD per million tokens), got {text!r}")
    kind, sep, rest = text.partition(":")
    prices: tuple[float, float] | None = None
    if kind == "price":
        rest, eq, priced = rest.rpartition("=")
        try:
            a, b = (float(v) for v in priced.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(usage) from None
        if not eq:
            raise argparse.ArgumentTypeError(usage)
        prices = (a, b)
    model, at, step = rest.rpartition("@")
    if not sep or not at or not model or not step.isdigit():
        raise argparse.ArgumentTypeError(usage)
    try:
        return Change(kind, model, int(step), *(prices or (None, None)))
    except RouteBanditError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _judge_bias(text: str) -> tuple[str, float]:
    """``MODEL=+0.2``: the simulated judge's bias on that model's grades."""
    model, eq, value = text.rpartition("=")
    try:
        bias = float(value)
    except ValueError:
        bias = float("nan")
    if not eq or not model or not -1.0 <= bias <= 1.0:
        raise argparse.ArgumentTypeError(
            f"expected MODEL=BIAS with BIAS in [-1, 1], e.g. gpt-4=+0.2, got {text!r}")
    return model, bias


def _unit(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def _judge(args: argparse.Namespace) -> SimulatedJudge | None:
    """The simulated judge the options ask for, or ``None`` (no judge option given)."""
    asked = (args.judge_noise is not None or args.judge_bias or args.human_share is not None
             or args.judge_weight is not None)
    if not asked:
        return None
    return SimulatedJudge(
        noise=args.judge_noise or 0.0, bias=tuple(args.judge_bias),
        human_share=args.human_share or 0.0,
        weight=DEFAULT_JUDGE_WEIGHT if args.judge_weight is None else args.judge_weight,
        calibrate=not args.no_calibration, min_pairs=args.calibration_min_pairs)


def _interactions(text: str) -> tuple[str, ...]:
    pairs = tuple(p.strip() for p in text.split(",") if p.strip())
    try:
        PolicyConfig(interactions=pairs)
    except RouteBanditError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return pairs


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "replay",
        help="replay an outcome table: the bandit's cost-quality frontier vs baselines",
        description=(
            "Replay an outcome table through the bandit at a sweep of cost weights "
            "(learning only from the model it chose) and compare its cost-quality "
            "frontier with every single model, random routing, the oracle and a "
            "full-information baseline. See docs/replay.md."
        ),
    )
    p.add_argument("outcomes", metavar="OUTCOMES",
                   help="outcome table CSV (id, task, [split], prompt, <model>|quality, "
                        "<model>|cost_usd, <model>|output_chars)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the train order, the policies and any drawn split "
                        "(default: 0)")
    p.add_argument("--passes", type=_positive_int, default=1,
                   help="passes over train: 1 = online only; more re-learn the bandit's "
                        "own logged decisions (default: 1)")
    p.add_argument("--cost-weights", type=_cost_weights, default=DEFAULT_COST_WEIGHTS,
                   metavar="W1,W2,...",
                   help="cost weights to sweep, quality points per $0.001 (default: "
                        + ",".join(f"{w:g}" for w in DEFAULT_COST_WEIGHTS) + ")")
    p.add_argument("--exploration", choices=EXPLORATIONS, default=PolicyConfig().exploration,
                   help="the policy's exploration algorithm (default: %(default)s)")
    p.add_argument("--interactions", type=_interactions, default=PolicyConfig().interactions,
                   metavar="PAIRS",
                   help="context namespaces crossed with the model, comma-separated (default: "
                        f"{','.join(PolicyConfig().interactions)}; see docs/policy.md)")
    p.add_argument("--limit", type=_positive_int, default=None, metavar="N",
                   help="use a seeded random sample of N prompts (both splits kept in "
                        "proportion) for a quick run")
    p.add_argument("--task-tag", action="store_true",
                   help="let the routers see the table's task as request metadata "
                        "(default: the prompt only)")
    p.add_argument("--change", type=_change, action="append", default=[], dest="changes",
                   metavar="KIND:MODEL@STEP",
                   help="change the world at a train step and see how the bandit reacts "
                        "(repeatable): degrade:MODEL@STEP (its answers all wrong from then "
                        "on), add:MODEL@STEP (not offered before), price:MODEL@STEP=IN,OUT "
                        "(new list prices, USD per million tokens)")
    p.add_argument("--change-window", type=_positive_int, default=100, metavar="N",
                   help="decisions per window of the changed model's share (default: 100)")
    judge = p.add_argument_group(
        "simulated judge",
        "stand a simulated judge in for the table's grades on train and print its "
        "figures against the clean replay of the same run (see docs/replay.md); any of "
        "these options turns it on; seeded by --seed")
    judge.add_argument("--judge-noise", type=float, default=None, metavar="SD",
                       help="sd of Gaussian noise on the judge's grade, clipped to [0, 1] "
                            "(default: 0)")
    judge.add_argument("--judge-bias", type=_judge_bias, action="append", default=[],
                       metavar="MODEL=BIAS",
                       help="the judge over- (+) or under-grades MODEL's answers by BIAS "
                            "(repeatable)")
    judge.add_argument("--human-share", type=_unit, default=None, metavar="SHARE",
                       help="share of train decisions that keep their true grade as "
                            "people's scores (learned whole; the judge is calibrated "
                            "against them) (default: 0)")
    judge.add_argument("--judge-weight", type=_unit, default=None, metavar="W",
                       help="the judge's weight, as the service's judge.weight "
                            f"(default: {DEFAULT_JUDGE_WEIGHT:g})")
    judge.add_argument("--no-calibration", action="store_true",
                       help="do not calibrate the judge per model (see what it costs "
                            "uncalibrated)")
    judge.add_argument("--calibration-min-pairs", type=_positive_int,
                       default=DEFAULT_MIN_PAIRS, metavar="N",
                       help="people's scores of a model before its calibration applies, "
                            "as the service's judge.calibration_min_pairs "
                            "(default: %(default)s)")
    p.add_argument("--embedder", choices=REPLAY_EMBEDDERS, default="local",
                   help="embed prompts as the service does and route by their clusters of "
                        "meaning (local: wordllama, in process), or not (none) "
                        "(default: %(default)s)")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", dest="json_path",
                   help="write every result as JSON to PATH (schema: docs/replay.md)")
    p.add_argument("--plot", type=Path, default=None, metavar="PATH.png",
                   help="write a PNG: frontiers (left) and the learning curves (right)")
    p.add_argument("--no-mlflow", action="store_true", dest="no_mlflow",
                   help="do not log the run to MLflow (by default every replay is logged as "
                        "one run: configuration, headline numbers, frontier and plot)")
    add_store_args(p)
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar on stderr")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    table = load_outcomes(args.outcomes, seed=args.seed)
    if args.limit is not None:
        table = table.limit(args.limit, seed=args.seed)
    config = ReplayConfig(
        seed=args.seed,
        passes=args.passes,
        cost_weights=tuple(args.cost_weights),
        policy=PolicyConfig(exploration=args.exploration, interactions=args.interactions),
        task_tag=args.task_tag,
        changes=tuple(args.changes),
        change_window=args.change_window,
        judge=_judge(args),
    )
    check_changes(table, config.changes)  # before the embedding's seconds
    check_judge(table, config.judge)
    embeddings = None if args.embedder == "none" else embed_table(table)
    with tqdm(total=work_units(table, config), file=sys.stderr, unit="step",
              desc="replay", disable=args.quiet, dynamic_ncols=True) as bar:
        result = replay(table, config, embeddings=embeddings, progress=bar.update)
    out = result.to_dict()
    out["data"] = {"source": str(args.outcomes), **out["data"]}
    out["config"]["limit"] = args.limit
    out["config"]["embedder"] = args.embedder
    if args.json_path is not None:
        _write(args.json_path, json.dumps(out, indent=2) + "\n")
    if args.plot is not None:
        plot(result, args.plot)
    print(render(result, source=str(args.outcomes), embedder=args.embedder))
    if not args.no_mlflow:
        run_id = tracker(args).log_replay(
            out, run_name=f"replay {Path(args.outcomes).name} seed {args.seed}")
        print(f"  logged to MLflow as run {run_id} (experiment "
              f"{args.experiment or 'routebandit'}; --no-mlflow to skip)")
    return 0


#: The embedders a replay can use: those of the service that run offline.
REPLAY_EMBEDDERS = ("local", "none")


def embed_table(table: OutcomeTable) -> npt.NDArray[np.float64]:
    """Every prompt's embedding by the service's local embedder, on the text the service
    embeds (the last user turn, bounded): one row per prompt, zeros where the service
    would have none (an empty turn, or a text the embedder cannot read)."""
    from serving.embedder import LocalEmbedder

    embedder = LocalEmbedder()
    rows: list[npt.NDArray[np.float64] | None] = [
        embedder.embed_now(parse_request(prompt=p).last_user).vector for p in table.prompts]
    dim = next((r.size for r in rows if r is not None), 1)
    out = np.zeros((table.n_prompts, dim))
    for i, r in enumerate(rows):
        if r is not None:
            out[i] = r
    return out


def _write(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise RequestError(f"{path}: cannot write ({exc.strerror})") from exc


def _pct(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.1f}%"


def render(result: ReplayResult, *, source: str = "", embedder: str = "none") -> str:
    """The human-readable summary printed at the end of a run."""
    best = result.best_single
    cfg = result.config
    lines = [
        f"routebandit replay {source}".rstrip(),
        f"  {result.n_train} train / {result.n_test} test prompts, {len(result.models)} "
        f"models, {len(cfg.cost_weights)} cost weights, {cfg.passes} pass(es), "
        f"exploration {cfg.policy.exploration}, seed {cfg.seed}, "
        f"{result.elapsed_seconds:.1f} s",
        f"  best single model on test: {best.model}  quality {best.quality:.3f}  "
        f"${best.cost_per_prompt:.5f}/prompt",
        *_cluster_lines(result.clusters, embedder),
        "",
        f"  {'router':<46} {'cost@95%':>11} {'cost@98%':>11} {'q@10%cost':>11} "
        f"{'q@30%cost':>11} {'AIQ':>7}",
    ]
    for r in (result.bandit, *result.baselines):
        m = r.metrics
        lines.append(
            f"  {_short(r):<46} {_pct(m.cost_pct_for_95):>11} {_pct(m.cost_pct_for_98):>11} "
            f"{_pct(m.quality_pct_at_10):>11} {_pct(m.quality_pct_at_30):>11} {m.aiq:>7.4f}"
        )
    lines += [
        "",
        "  cost@X%: cost to reach X% of the best single model's quality, as % of its cost;",
        "  q@X%cost: quality reachable for X% of its cost, as % of its quality (hull, mixing",
        f"  allowed); AIQ over costs [0, ${result.aiq_cost_max:.5f}]. The oracle and the task "
        "ceiling peek at",
        "  test grades; no router that cannot tell a task's prompts apart gets above the task "
        "ceiling.",
        *_auc_lines(result),
        "",
        f"  {'cost weight':>11}  {'bandit q':>8} {'$/prompt':>9}   "
        f"{'full-info q':>11} {'$/prompt':>9}   bandit's most used models",
    ]
    full = result.baseline("full_information")
    for p, f in zip(result.bandit.points, full.points, strict=True):
        top = ", ".join(f"{m} {s:.0%}" for m, s in p.choices[:3])
        lines.append(
            f"  {p.cost_weight:>11g}  {p.quality:>8.3f} {p.cost_per_prompt:>9.5f}   "
            f"{f.quality:>11.3f} {f.cost_per_prompt:>9.5f}   {top}"
        )
    lines += _per_task_lines(result.bandit.points)
    if result.judge is not None:
        lines += _judge_lines(result.judge)
    for report in result.changes:
        lines += _change_lines(report)
    lines += ["", f"  {'single model':<40} {'quality':>8} {'$/prompt':>9}"]
    singles = sorted(result.baseline("single_models").points, key=lambda p: p.cost_per_prompt)
    for p in singles:
        lines.append(f"  {p.model or '':<40} {p.quality:>8.3f} {p.cost_per_prompt:>9.5f}")
    return "\n".join(lines)


#: Leaf sizes printed at most (all are in the JSON).
MAX_LEAF_SIZES = 8


def _cluster_lines(found: ClusterReport | None, embedder: str) -> list[str]:
    if found is None:
        return [f"  clusters of meaning: off (--embedder {embedder})"]
    sizes = ", ".join(str(n) for n in found.leaf_sizes[:MAX_LEAF_SIZES])
    if len(found.leaf_sizes) > MAX_LEAF_SIZES:
        sizes += ", ..."
    lines = [
        f"  clusters of meaning (embedder {embedder}): {found.n_clusters} clusters "
        f"(cap {found.cap}), {found.n_leaves} leaves, depth {found.depth}, "
        f"{found.n_learned} train prompts learned, checkpoint "
        f"{found.checkpoint_bytes / 1024:.1f} KiB",
        f"    prompts per leaf (both splits, by the final tree): {sizes}",
    ]
    if found.purity is not None and found.purity_top is not None and found.nmi is not None:
        lines.append(f"    against the task column (test prompts as routed): purity "
                     f"{found.purity:.3f} by leaf, {found.purity_top:.3f} at the first "
                     f"level; NMI {found.nmi:.3f}")
    return lines


def _judge_lines(report: JudgeReport) -> list[str]:
    """The bandit under the simulated judge against the clean bandit of the same run."""
    names = {"cost_pct_for_95": "cost@95%q", "cost_pct_for_98": "cost@98%q",
             "quality_pct_at_10": "q@10%cost"}
    clean, judged = report.clean.metrics.to_dict(), report.judged.metrics.to_dict()
    diff = report.differences()
    lines = ["", f"  simulated judge on train: {report.judge.label}",
             f"  {'bandit':<34} " + " ".join(f"{names[k]:>11}" for k in JUDGE_FIGURES)]
    clean_row = "clean (the table's grades)"
    lines.append(f"  {clean_row:<34} "
                 + " ".join(f"{_pct(clean[k]):>11}" for k in JUDGE_FIGURES))
    lines.append(f"  {'under the judge':<34} "
                 + " ".join(f"{_pct(judged[k]):>11}" for k in JUDGE_FIGURES))
    lines.append(f"  {'difference (points)':<34} " + " ".join(
        f"{'-' if diff[k] is None else format(diff[k], '+.1f'):>11}" for k in JUDGE_FIGURES))
    if report.runs:
        humans = report.runs[0].humans
        lines.append(f"  {humans} of {report.runs[0].decisions} train decisions kept their "
                     "true grade as people's scores (the same prompts at every weight)")
        cal: dict[str, list[tuple[float, int, int | None]]] = {}
        for r in report.runs:
            for m, off, n, at in r.calibration:
                cal.setdefault(m, []).append((off, n, at))
        if cal:
            lines.append("  the judge's offset from people per model at the end of train, "
                         "mean over the sweep's runs,")
            lines.append("  with the pairs behind it (min-max) and the runs where it applied")
            for m, got in sorted(cal.items()):
                pairs = [n for _, n, _ in got]
                applied = sum(at is not None for _, _, at in got)
                lines.append(f"    {m:<40} {sum(o for o, _, _ in got) / len(got):+.3f}  "
                             f"{min(pairs)}-{max(pairs)} pairs  applied in {applied} of "
                             f"{len(report.runs)}")
    return lines


#: Windows after a change printed at most (all are in the JSON).
MAX_CHANGE_WINDOWS = 8


def _change_lines(report: ChangeReport) -> list[str]:
    c = report.change
    what = {"degrade": "answers all wrong", "add": "offered"}.get(
        c.kind, f"priced {c.input_price or 0:g}/{c.output_price or 0:g} USD per M tokens")
    cross = ("" if report.threshold is None else
             f"; decisions until its share of the last {report.window} "
             f"{'falls below' if c.kind == 'degrade' else 'rises above'} "
             f"{report.threshold:.0%}")
    lines = ["", f"  change {c.label}: {c.model} {what} from train step {c.step} on",
             f"  its share of the bandit's decisions: the {report.window} before, then "
             f"windows of {report.window} after{cross}",
             f"  {'cost weight':>11}  {'before':>6}   after"]
    for r in report.responses:
        shown = " ".join(f"{x:>4.0%}" for x in r.windows[:MAX_CHANGE_WINDOWS])
        if len(r.windows) > MAX_CHANGE_WINDOWS:
            shown += " ..."
        before = "-" if r.share_before is None else f"{r.share_before:.0%}"
        tail = ""
        if report.threshold is not None:
            tail = ("   never" if r.decisions_to_cross is None
                    else f"   {r.decisions_to_cross}")
        lines.append(f"  {r.cost_weight:>11g}  {before:>6}   {shown}{tail}")
    return lines


#: Tasks shown side by side in the per-task block of the table (all are in the JSON).
MAX_TABLE_TASKS = 6


def _per_task_lines(points: Sequence[OperatingPoint]) -> list[str]:
    """The bandit's most used model per task at each cost weight, with the task's quality."""
    if not points or not points[0].by_task or len(points[0].by_task) > MAX_TABLE_TASKS:
        return []
    tasks = [t.task for t in points[0].by_task]
    width = 32
    lines = ["", "  the bandit's most used model per task (its share of the task's test prompts, "
                 "the task's quality)",
             (f"  {'cost weight':>11}  "
              + "".join(f"{t[:width - 2]:<{width}}" for t in tasks)).rstrip()]
    for p in points:
        cells = []
        for t in p.by_task:
            model, share = t.choices[0]
            cells.append(f"{_model_name(model)[:18]} {share:.0%} {t.quality:.3f}"[:width - 2])
        lines.append((f"  {p.cost_weight or 0:>11g}  "
                      + "".join(f"{c:<{width}}" for c in cells)).rstrip())
    return lines


def _auc_lines(result: ReplayResult) -> list[str]:
    """How well the full-information baseline tells a task's prompts apart: its median
    within-task AUC over the models, per task (all of them are in the JSON)."""
    aucs = result.baseline("full_information").within_task_auc
    if not aucs or len(aucs) > MAX_TABLE_TASKS:
        return []
    cells = []
    for task, per_model in aucs.items():
        values = [v for v in per_model.values() if v is not None]
        if values:
            cells.append(f"{task} {statistics.median(values):.2f}")
    if not cells:
        return []
    return ["  Within-task AUC of the full-information baseline, median over models (0.5 = no",
            "  signal to route on within a task): " + ", ".join(cells) + "."]


def _model_name(name: str) -> str:
    """A model name without its provider path (``meta/llama-2-70b-chat``: the last part)."""
    return name.rsplit("/", 1)[-1]


def _short(r: RouterResult) -> str:
    return {
        "bandit": "bandit (routebandit, bandit feedback)",
        "full_information": "full-information baseline (sees all train)",
        "per_task": "per-task table (all train grades + task)",
        "task_ceiling": "task ceiling (test means per task; peeks)",
        "oracle": "oracle (peeks at test grades)",
        "random": "uniform random",
        "single_models": "single models (and their random mixtures)",
    }.get(r.name, r.label)


#: Learning curves drawn at most, spread evenly over the sweep.
MAX_PLOTTED_CURVES = 8

def plot(result: ReplayResult, path: Path) -> None:
    """Write the frontier and learning-curve panels as a PNG (matplotlib's Agg canvas)."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 6), layout="constrained")
    FigureCanvasAgg(fig)
    ax, lc = fig.subplots(1, 2, width_ratios=(1.35, 1))
    best = result.best_single
    styles = (
        (result.bandit, "C0", "o", "bandit (bandit feedback)"),
        (result.baseline("full_information"), "C1", "s",
         "full-information baseline (sees every train grade)"),
        (result.baseline("per_task"), "C4", "v",
         "per-task table (every train grade + the task label)"),
        (result.baseline("oracle"), "C2", "^", "oracle (peeks)"),
    )
    for r, color, marker, label in styles:
        xs = [p.cost_per_prompt for p in r.points]
        ys = [p.quality for p in r.points]
        ax.scatter(xs, ys, color=color, marker=marker, s=22, alpha=0.7)
        hx, hy = zip(*r.metrics.hull, strict=True)
        ax.plot([*hx, result.aiq_cost_max], [*hy, hy[-1]], color=color,
                label=f"{label}, AIQ {r.metrics.aiq:.3f}")
    ceiling = result.baseline("task_ceiling")
    hx, hy = zip(*ceiling.metrics.hull, strict=True)
    ax.plot([*hx, result.aiq_cost_max], [*hy, hy[-1]], color="C4", linestyle="--",
            linewidth=1, label=f"task ceiling (test means per task; peeks), "
                               f"AIQ {ceiling.metrics.aiq:.3f}")
    singles = result.baseline("single_models")
    ax.scatter([p.cost_per_prompt for p in singles.points], [p.quality for p in singles.points],
               color="0.3", marker="x", s=30, label="single models")
    for p in singles.points:
        ax.annotate(_model_name(p.model or ""), (p.cost_per_prompt, p.quality),
                    fontsize=6, xytext=(3, -8), textcoords="offset points", color="0.3")
    hx, hy = zip(*singles.metrics.hull, strict=True)
    ax.plot(hx, hy, color="0.5", linestyle=":", label="mixtures of single models")
    rnd = result.baseline("random").points[0]
    ax.scatter([rnd.cost_per_prompt], [rnd.quality], color="C3", marker="D", s=30,
               label="uniform random")
    for frac, style in ((0.95, "--"), (0.98, ":")):
        ax.axhline(frac * best.quality, color="0.6", linestyle=style, linewidth=0.8)
        ax.text(0.01, frac * best.quality, f"{frac:.0%} of {best.model}", fontsize=7,
                color="0.4", va="bottom", transform=ax.get_yaxis_transform())
    if min(p.cost_per_prompt for p in singles.points) > 0:
        ax.set_xscale("log")
    ax.set_xlabel("mean cost per test prompt (USD)")
    ax.set_ylabel("mean quality on test")
    ax.set_title("Cost-quality frontier on the test split")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    ax.grid(alpha=0.3)

    curves = result.learning_curves
    if len(curves) > MAX_PLOTTED_CURVES:  # a readable panel: an even spread of the sweep
        step = (len(curves) - 1) / (MAX_PLOTTED_CURVES - 1)
        curves = tuple(curves[round(i * step)] for i in range(MAX_PLOTTED_CURVES))
    cmap = colormaps["viridis"]
    for n, (w, curve) in enumerate(curves):
        shade = cmap(0.9 * n / max(1, len(curves) - 1))
        lc.plot([c.step for c in curve], [c.mean_quality for c in curve], color=shade,
                marker=".", label=f"w={w:g}")
    ref = result.reference_curve
    if ref:
        lc.plot([c.step for c in ref], [c.mean_quality for c in ref], color="black",
                linestyle="--", linewidth=1.2,
                label=f"{best.model} on the same prompts (reference)")
    lc.set_xlabel("online train steps (prompts routed)")
    lc.set_ylabel(f"mean quality of the chosen model\n(blocks of {result.config.curve_every} "
                  "steps, exploring)")
    lc.set_title("Learning curves, one per cost weight w" if len(curves) == len(
        result.learning_curves) else f"Learning curves, {len(curves)} of the "
        f"{len(result.learning_curves)} cost weights w")
    lc.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3)
    lc.grid(alpha=0.3)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png", dpi=120)
    except OSError as exc:
        raise RequestError(f"{path}: cannot write the plot ({exc.strerror})") from exc
