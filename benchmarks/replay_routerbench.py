"""Full replay of the RouterBench subset: the bandit's headline numbers against targets.

Usage (from the repository root, in the project's virtualenv)::

    python benchmarks/replay_routerbench.py [--passes N] [--seed S] [--exploration E]
        [--json out/replay.json] [--plot out/replay.png]

The data is read from ``$ROUTEBANDIT_SHARED/data/routerbench-subset/outcomes.csv``
(default ``../shared`` next to the repository); it is never copied into the repository.
The run takes a few minutes of one CPU core. It prints the full replay table, then the
bandit's four headline numbers next to the targets and next to the full-information
baseline measured in the same run. Exit code 0 whether or not the targets are met; the
verdict is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from tqdm import tqdm

from bandit.outcomes import load_outcomes
from bandit.policy import EXPLORATIONS, PolicyConfig
from bandit.replay import DEFAULT_COST_WEIGHTS, ReplayConfig, replay, work_units
from serving.commands.replay import plot, render

ROOT = Path(__file__).resolve().parents[1]
# (metric, comparison, target): cost in % of the best single model's cost, quality in %
# of its quality.
TARGETS = (
    ("cost_pct_for_95", "<=", 25.0),
    ("cost_pct_for_98", "<=", 40.0),
    ("quality_pct_at_10", ">=", 95.0),
)
LABELS = {
    "cost_pct_for_95": "cost to reach 95% of best quality",
    "cost_pct_for_98": "cost to reach 98% of best quality",
    "quality_pct_at_10": "quality at 10% of best cost",
    "quality_pct_at_30": "quality at 30% of best cost",
    "aiq": "AIQ",
}


def data_path() -> Path:
    shared = Path(os.environ.get("ROUTEBANDIT_SHARED", ROOT.parent / "shared"))
    return shared / "data" / "routerbench-subset" / "outcomes.csv"


def _fmt(value: float | None, key: str) -> str:
    if value is None:
        return "not reached"
    return f"{value:.4f}" if key == "aiq" else f"{value:.1f}%"


def _meets(value: float | None, op: str, target: float) -> bool:
    if value is None:
        return False
    return value <= target if op == "<=" else value >= target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="replay seed (default: 0)")
    parser.add_argument("--passes", type=int, default=1,
                        help="passes over train (default: 1, online only)")
    parser.add_argument("--exploration", choices=EXPLORATIONS,
                        default=PolicyConfig().exploration,
                        help="the policy's exploration (default: %(default)s)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--plot", type=Path, default=None, help="write the PNG here")
    args = parser.parse_args(argv)

    path = data_path()
    if not path.exists():
        print(f"routerbench subset not found at {path}; set ROUTEBANDIT_SHARED",
              file=sys.stderr)
        return 2
    table = load_outcomes(path)
    config = ReplayConfig(seed=args.seed, passes=args.passes,
                          cost_weights=DEFAULT_COST_WEIGHTS,
                          policy=PolicyConfig(exploration=args.exploration))
    with tqdm(total=work_units(table, config), file=sys.stderr, unit="step",
              desc="replay") as bar:
        result = replay(table, config, progress=bar.update)
    print(render(result, source=str(path)))
    bandit = result.bandit.metrics.to_dict()
    full = result.baseline("full_information").metrics.to_dict()
    print()
    print(f"  {'headline':<36} {'target':>9} {'bandit':>12} {'':>4} {'full-info':>12}")
    met = 0
    for key, op, target in TARGETS:
        ok = _meets(bandit[key], op, target)
        met += ok
        print(f"  {LABELS[key]:<36} {op + f'{target:g}%':>9} {_fmt(bandit[key], key):>12} "
              f"{'ok' if ok else 'MISS':>4} {_fmt(full[key], key):>12}")
    for key in ("quality_pct_at_30", "aiq"):
        print(f"  {LABELS[key]:<36} {'':>9} {_fmt(bandit[key], key):>12} {'':>4} "
              f"{_fmt(full[key], key):>12}")
    print(f"\n  bandit meets {met} of {len(TARGETS)} targets "
          "(full-info = full-information baseline, sees every model's grade on train)")
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
