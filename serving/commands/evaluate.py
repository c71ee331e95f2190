"""``routebandit evaluate CANDIDATE``: score a version on logged traffic before it serves.

Every logged decision carries the probability it was taken with, so the candidate's mean
reward on that traffic is estimated off-policy with IPS, SNIPS and doubly robust
estimators (95% normal intervals, see :mod:`bandit.ope`), next to the champion's and
the logging policy's observed mean. The result is also logged as an ``evaluation`` run.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from bandit.ope import summary
from feedback.evaluation import by_version
from serving.commands import tracking_args


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="score a policy version on logged traffic against the champion",
        description=__doc__,
    )
    parser.add_argument("candidate", metavar="CANDIDATE",
                        help="version to score: 3, v3, challenger or champion")
    parser.add_argument("--champion", default="champion", metavar="V",
                        help="version to compare against (default: the champion alias)")
    parser.add_argument("--weights", type=tracking_args.weights, default=None,
                        metavar="q=..,cost=..",
                        help="recompute every reward under these weights, e.g. "
                             "quality=1,cost=0.05,latency=0 (default: the logged rewards)")
    parser.add_argument("--greedy", action="store_true",
                        help="score the versions' greedy choice instead of their "
                             "exploring pmf")
    parser.add_argument("--arms", action="store_true",
                        help="also compare the observed mean reward of every policy version "
                             "that served in the window (A/B mode), logged with the run")
    parser.add_argument("--no-log", action="store_true",
                        help="do not log the result as an MLflow evaluation run")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    tracking_args.add_store_args(parser, logs=True)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    examples = tracking_args.logged_examples(args)
    tracker = tracking_args.tracker(args)
    arms = by_version(examples, weights=args.weights) if args.arms else {}
    ev = tracker.evaluate(args.candidate, examples, champion=args.champion,
                          weights=args.weights, greedy=args.greedy, log=not args.no_log,
                          window=tracking_args.window(args), arms=arms)
    if args.json:
        print(json.dumps({"candidate": ev.candidate.name,
                          "champion": ev.champion.name if ev.champion else None,
                          "run_id": ev.run_id,
                          "arms": {v: e.to_dict() for v, e in arms.items()},
                          "reports": {k: summary(r) for k, r in ev.reports.items()}},
                         indent=2, allow_nan=True))
        return 0
    first = next(iter(ev.reports.values()))
    print(f"{len(examples)} logged decisions, effective sample size {first.ess:.0f}")
    print(f"{'policy':<16} {'estimator':<9} {'mean reward':>11}  95% interval")
    for label, est, value, low, high in ev.table():
        role = (" (candidate)" if label == ev.candidate.name else
                " (champion)" if ev.champion and label == ev.champion.name else "")
        print(f"{label + role:<16} {est:<9} {_f(value):>11}  [{_f(low)}, {_f(high)}]")
    if ev.champion is not None:
        cand, champ = ev.reports[ev.candidate.name].dr, ev.reports[ev.champion.name].dr
        a, b = ev.candidate.name, ev.champion.name
        verdict = (f"{a} is better than {b}" if cand.low > champ.high else
                   f"{a} is worse than {b}" if cand.high < champ.low else
                   f"{a} and {b} are not distinguishable at 95%")
        print(f"DR verdict: {verdict}")
    if arms:
        print("served in the window (observed, on-policy):")
        for version, e in arms.items():
            print(f"  {version:<14} n={e.n:<6} {_f(e.value)}  [{_f(e.low)}, {_f(e.high)}]")
    return 0


def _f(x: float) -> str:
    return "nan" if math.isnan(x) else f"{x:.4f}"
