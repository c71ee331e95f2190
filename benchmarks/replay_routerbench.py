"""Full replay of the RouterBench subset: the bandit's headline numbers against targets.

Usage (from the repository root, in the project's virtualenv)::

    python benchmarks/replay_routerbench.py [--passes N] [--seeds 0,1,2] [--exploration E]
        [--json out/replay.json] [--plot out/replay.png]

The data is read from ``$ROUTEBANDIT_SHARED/data/routerbench-subset/outcomes.csv``
(default ``../shared`` next to the repository); it is never copied into the repository.
One seed takes about a minute of one CPU core. It prints the full replay table, then the
bandit's four headline numbers next to the targets and next to the full-information
baseline measured in the same run. Exit code 0 whether or not the targets are met; the
verdict is printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from routerbench import TARGETS, find_subset, fmt, meets
from tqdm import tqdm

from bandit.frontier import frontier_metrics
from bandit.outcomes import load_outcomes
from bandit.policy import EXPLORATIONS, PolicyConfig
from bandit.replay import (
    COARSE_COST_WEIGHTS,
    DEFAULT_COST_WEIGHTS,
    ReplayConfig,
    replay,
    work_units,
)
from serving.commands.replay import plot, render

LABELS = {
    "cost_pct_for_95": "cost to reach 95% of best quality",
    "cost_pct_for_98": "cost to reach 98% of best quality",
    "quality_pct_at_10": "quality at 10% of best cost",
    "quality_pct_at_30": "quality at 30% of best cost",
    "aiq": "AIQ",
}


def coarse_metrics(result: Any, router: Any) -> dict[str, float | None]:
    """A router's headline numbers from the points of the sessions 1-3 sweep only."""
    points = [p.xy for p in router.points if p.cost_weight in COARSE_COST_WEIGHTS]
    best = result.best_single
    return frontier_metrics(points, reference_cost=best.cost_per_prompt,
                            reference_quality=best.quality,
                            c_max=result.aiq_cost_max).to_dict()


def print_means(results: list[Any],
                metrics: Callable[[Any, Any], dict[str, float | None]]) -> None:
    """Mean headline numbers of the bandit and the full-information baseline."""
    for key in (*(k for k, _, _ in TARGETS), "quality_pct_at_30", "aiq"):
        row = []
        for name in ("bandit", "full_information"):
            vals = [metrics(r, r.bandit if name == "bandit" else r.baseline(name))[key]
                    for r in results]
            got = [v for v in vals if v is not None]
            mean = fmt(sum(got) / len(got), key) if got else "not reached"
            row.append(f"{mean} ({len(got)}/{len(vals)} reached)")
        print(f"  {LABELS[key]:<36} bandit {row[0]:<26} full-info {row[1]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0",
                        help="comma-separated replay seeds; the first seed's run is "
                             "printed in full, then every seed's headline numbers and their "
                             "mean (default: 0)")
    parser.add_argument("--passes", type=int, default=1,
                        help="passes over train (default: 1, online only)")
    parser.add_argument("--exploration", choices=EXPLORATIONS,
                        default=PolicyConfig().exploration,
                        help="the policy's exploration (default: %(default)s)")
    parser.add_argument("--interactions", default=",".join(PolicyConfig().interactions),
                        help="namespaces crossed with the model (default: %(default)s)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--plot", type=Path, default=None, help="write the PNG here")
    args = parser.parse_args(argv)

    path = find_subset()
    if path is None:
        return 2
    table = load_outcomes(path)
    seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    results = []
    for seed in seeds:
        config = ReplayConfig(seed=seed, passes=args.passes, cost_weights=DEFAULT_COST_WEIGHTS,
                              policy=PolicyConfig(
                                  exploration=args.exploration,
                                  interactions=tuple(args.interactions.split(","))))
        with tqdm(total=work_units(table, config), file=sys.stderr, unit="step",
                  desc=f"replay seed {seed}") as bar:
            results.append(replay(table, config, progress=bar.update))
    result = results[0]
    print(render(result, source=str(path)))
    for seed, res in zip(seeds, results, strict=True):
        bandit = res.bandit.metrics.to_dict()
        full = res.baseline("full_information").metrics.to_dict()
        print(f"\n  seed {seed}: {'headline':<28} {'target':>9} {'bandit':>12} {'':>4} "
              f"{'full-info':>12}")
        met = 0
        for key, op, target in TARGETS:
            ok = meets(bandit[key], op, target)
            met += ok
            print(f"  {LABELS[key]:<36} {op + f'{target:g}%':>9} "
                  f"{fmt(bandit[key], key):>12} {'ok' if ok else 'MISS':>4} "
                  f"{fmt(full[key], key):>12}")
        for key in ("quality_pct_at_30", "aiq"):
            print(f"  {LABELS[key]:<36} {'':>9} {fmt(bandit[key], key):>12} {'':>4} "
                  f"{fmt(full[key], key):>12}")
        print(f"  bandit meets {met} of {len(TARGETS)} targets")
    if len(results) > 1:
        print(f"\n  mean over seeds {args.seeds} (over the seeds that reach it):")
        print_means(results, lambda r, router: router.metrics.to_dict())
        print(f"\n  the same runs, frontier from the {len(COARSE_COST_WEIGHTS)}-weight sweep of "
              "sessions 1-3 only:")
        print_means(results, coarse_metrics)
    print("\n  (full-info = full-information baseline, sees every model's grade on train)")
    if args.json is not None:
        out = result.to_dict()
        out["data"] = {"source": str(path), **out["data"]}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    if args.plot is not None:
        plot(result, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
