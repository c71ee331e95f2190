"""What a judge costs the router: the replay's bandit half under a simulated judge.

Usage (from the repository root, in the project's virtualenv)::

    python benchmarks/judge_routerbench.py [--seeds 0,1,2,3] [--workers 2]
        [--embedder none|local] [--json out/judge.json]

For each seed the bandit half of the plain replay (22 cost weights, the default policy,
train learned online once, greedy on test; ``bandit.replay.replay_bandit``) runs clean
and under each scenario of issue 23 (a :class:`bandit.replay.SimulatedJudge` standing in
for the train grades, seeded by the replay's seed):

* ``noise``: Gaussian noise of sd 0.2 on every grade, clipped to [0, 1] (no people's
  scores, so no calibration); target: within 1 point of clean on all three figures;
* ``bias``: a judge over-grading ``mistralai/mixtral-8x7b-chat`` by +0.2, with 5 % of the
  decisions keeping their true grade as people's scores, calibrated per model as the
  service does (offset once 20 pairs back it); target: cost for 95 % within 2 points of
  clean;
* ``bias-raw``: the same judge, not calibrated (``--no-calibration``), for comparison.

The judge's grade is learned at the service's weight, 0.8. Printed: per seed and
scenario the three figures (cost for 95 % and 98 % of the best single model's quality,
as % of its cost; quality at 10 % of its cost, as % of its quality) and their difference
from clean, then the mean ± sd over seeds of each, against the targets. ``--embedder
none`` (the default) is the issue's "plain replay" (seed 0 clean: 19.0 / 34.6 / 93.3);
``local`` routes by the service's clusters of meaning. A seed and scenario take about
20 s of one core without the embedder.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from routerbench import find_subset, metrics_of, wordllama_embed
from tqdm import tqdm

from bandit.features import Context, parse_request
from bandit.outcomes import OutcomeTable, load_outcomes
from bandit.replay import (
    DEFAULT_COST_WEIGHTS,
    JUDGE_FIGURES,
    ReplayConfig,
    SimulatedJudge,
    clustered_contexts,
    featurize_table,
    grow_clusters,
    replay_bandit,
)

BIASED = "mistralai/mixtral-8x7b-chat"
SCENARIOS: dict[str, SimulatedJudge | None] = {
    "clean": None,
    "noise": SimulatedJudge(noise=0.2),
    "bias": SimulatedJudge(bias=((BIASED, 0.2),), human_share=0.05),
    "bias-raw": SimulatedJudge(bias=((BIASED, 0.2),), human_share=0.05, calibrate=False),
}
#: (scenario, figures held, most points from clean)
TARGETS = (("noise", JUDGE_FIGURES, 1.0), ("bias", ("cost_pct_for_95",), 2.0))
SHORT = {"cost_pct_for_95": "cost@95%q", "cost_pct_for_98": "cost@98%q",
         "quality_pct_at_10": "q@10%cost"}

_TABLE: OutcomeTable | None = None
_CONTEXTS: tuple[Context, ...] = ()


def _load(path: str, embedder: str) -> None:
    global _TABLE, _CONTEXTS
    _TABLE = load_outcomes(path)
    _CONTEXTS = featurize_table(_TABLE)


def _contexts(seed: int, embedder: str) -> tuple[Context, ...]:
    assert _TABLE is not None
    if embedder == "none":
        return _CONTEXTS
    # The service's text (the bounded last user turn), wordllama's embedding, the
    # policy's tree grown in this seed's train order: as `routebandit replay` does.
    texts = [parse_request(prompt=p).last_user or "" for p in _TABLE.prompts]
    paths, _ = grow_clusters(_TABLE, wordllama_embed(texts), seed=seed)
    return clustered_contexts(_CONTEXTS, paths)


def run_one(seed: int, scenario: str, embedder: str) -> dict[str, Any]:
    assert _TABLE is not None
    contexts = _contexts(seed, embedder)
    config = ReplayConfig(seed=seed, judge=SCENARIOS[scenario])
    runs = [replay_bandit(_TABLE, contexts, cost_weight=w, config=config)
            for w in DEFAULT_COST_WEIGHTS]
    m = metrics_of(_TABLE, [r.point.xy for r in runs]).to_dict()
    out: dict[str, Any] = {"seed": seed, "scenario": scenario,
                           **{k: m[k] for k in JUDGE_FIGURES}}
    judged = [r.judge for r in runs if r.judge is not None]
    if judged:
        out["human_decisions"] = judged[0].humans
        cal = [next((c for c in j.calibration if c[0] == BIASED), None) for j in judged]
        known = [c for c in cal if c is not None]
        out["biased_offset_mean"] = (float(np.mean([c[1] for c in known]))
                                     if known else None)
        out["biased_pairs"] = [c[2] for c in known]
        out["biased_applied_from"] = [c[3] for c in known]
    return out


def _cell(v: float | None) -> str:
    return "not reached" if v is None else f"{v:.1f}%"


def _diff(v: float | None, clean: float | None) -> str:
    return "-" if v is None or clean is None else f"{v - clean:+.1f}"


def _mean_sd(values: Sequence[float | None]) -> str:
    got = [v for v in values if v is not None]
    if not got:
        return "-"
    text = f"{np.mean(got):.1f} ± {np.std(got):.1f}"
    return text if len(got) == len(values) else f"{text} ({len(got)} of {len(values)})"


def report(rows: list[dict[str, Any]], seeds: Sequence[int]) -> bool:
    by = {(r["seed"], r["scenario"]): r for r in rows}
    print("Replay under a simulated judge: bandit half, 22 cost weights, test split")
    print("judges: " + "; ".join(f"{n}: {j.label}" for n, j in SCENARIOS.items()
                                  if j is not None))
    print()
    print("| seed | scenario | " + " | ".join(SHORT[k] for k in JUDGE_FIGURES)
          + " | difference from clean |")
    print("|---|---|" + "---|" * (len(JUDGE_FIGURES) + 1))
    for s in seeds:
        clean = by[s, "clean"]
        for name in SCENARIOS:
            r = by[s, name]
            diffs = " / ".join(_diff(r[k], clean[k]) for k in JUDGE_FIGURES)
            print(f"| {s} | {name} | " + " | ".join(_cell(r[k]) for k in JUDGE_FIGURES)
                  + f" | {diffs if name != 'clean' else ''} |")
    print()
    print("mean ± sd over seeds (difference: per seed, judged minus clean)")
    print("| scenario | " + " | ".join(SHORT[k] for k in JUDGE_FIGURES)
          + " | " + " | ".join(f"Δ {SHORT[k]}" for k in JUDGE_FIGURES) + " |")
    print("|---|" + "---|" * (2 * len(JUDGE_FIGURES)))
    deltas: dict[tuple[str, str], list[float | None]] = {}
    for name in SCENARIOS:
        values = [_mean_sd([by[s, name][k] for s in seeds]) for k in JUDGE_FIGURES]
        for k in JUDGE_FIGURES:
            deltas[name, k] = [
                None if by[s, name][k] is None or by[s, "clean"][k] is None
                else by[s, name][k] - by[s, "clean"][k] for s in seeds]
        diff = ["" if name == "clean" else _mean_sd(deltas[name, k]) for k in JUDGE_FIGURES]
        print(f"| {name} | " + " | ".join(values) + " | " + " | ".join(diff) + " |")
    for name in ("bias", "bias-raw"):
        sel = [by[s, name] for s in seeds if by.get((s, name))]
        if sel and "human_decisions" in sel[0]:
            offsets = [r["biased_offset_mean"] for r in sel if r["biased_offset_mean"] is not None]
            pairs = [p for r in sel for p in r["biased_pairs"]]
            applied = [a for r in sel for a in r["biased_applied_from"] if a is not None]
            print(f"\n{name}: {sel[0]['human_decisions']} decisions with people's scores per "
                  f"train stream; {BIASED}'s measured offset {np.mean(offsets):+.3f} "
                  f"(mean over runs), pairs per run {min(pairs)}-{max(pairs)}, "
                  + (f"calibration applied from train step {min(applied)}-{max(applied)} "
                     f"in {len(applied)} of {len(pairs)} runs" if applied
                     else "calibration never applied" if name == "bias" else
                     "(not applied: --no-calibration)"))
    print()
    ok = True
    for name, keys, most in TARGETS:
        for k in keys:
            d = [v for v in deltas[name, k] if v is not None]
            mean = float(np.mean(d)) if len(d) == len(seeds) else float("inf")
            met = abs(mean) <= most
            ok &= met
            print(f"target {name} {SHORT[k]}: |mean difference| {abs(mean):.1f} <= {most:g} "
                  f"points: {'met' if met else 'MISSED'}")
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2,3", help="replay seeds (comma-separated)")
    parser.add_argument("--workers", type=int, default=2, help="processes")
    parser.add_argument("--embedder", choices=("none", "local"), default="none",
                        help="route by the service's clusters of meaning (local) or not "
                             "(default: %(default)s, the issue's plain replay)")
    parser.add_argument("--json", type=Path, default=None, help="write the rows as JSON")
    args = parser.parse_args(argv)
    path = find_subset()
    if path is None:
        return 1
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs = [(s, name, args.embedder) for s in seeds for name in SCENARIOS]
    with ProcessPoolExecutor(max_workers=args.workers, initializer=_load,
                             initargs=(str(path), args.embedder)) as pool:
        futures = [pool.submit(run_one, *job) for job in jobs]
        rows = [f.result() for f in tqdm(futures, desc="replays", file=sys.stderr)]
    print(f"$ python benchmarks/judge_routerbench.py --seeds {args.seeds} "
          f"--embedder {args.embedder}")
    ok = report(rows, seeds)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    print("all targets met" if ok else "some targets missed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
