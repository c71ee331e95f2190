"""``routebandit train``: fit a candidate policy from logged decisions and log it.

The decisions in the window are re-learned, oldest first, with the probabilities they
were logged with, by a fresh policy with another configuration: exploration, VW
arguments, reward weights. The newest ``--holdout`` share is kept out of training and
scores the candidate (IPS, SNIPS, DR with 95% intervals). The candidate becomes a new
registered version (kind ``train``), optionally the ``challenger``.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from bandit.catalog import Catalog, example_catalog_path
from bandit.errors import RouteBanditError
from bandit.policy import EXPLORATIONS, Policy, PolicyConfig
from serving.commands import tracking_args


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "train", help="fit a candidate policy from logged decisions and log it to MLflow",
        description=__doc__,
    )
    parser.add_argument("--base", default="champion", metavar="V",
                        help="version whose configuration, weights and catalog the "
                             "candidate starts from (its learned weights are not reused); "
                             "default: the champion, else the defaults")
    parser.add_argument("--catalog", default=None, metavar="FILE",
                        help="catalog YAML for the candidate (default: the base version's, "
                             "else the example catalog)")
    parser.add_argument("--exploration", choices=EXPLORATIONS, default=None,
                        help="exploration of the candidate (default: the base's)")
    parser.add_argument("--epsilon", type=float, default=None,
                        help="epsilon for epsilon, bag and cover exploration")
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="VW learning rate (-l)")
    parser.add_argument("--interactions", default=None, metavar="PAIRS",
                        help="comma-separated VW namespace interactions, e.g. ua,qa,ta "
                             "(the feature configuration)")
    parser.add_argument("--weights", type=tracking_args.weights, default=None,
                        metavar="q=..,cost=..",
                        help="reward weights to learn, e.g. quality=1,cost=0.05; rewards "
                             "are recomputed from logged quality, cost and latency")
    parser.add_argument("--passes", type=int, default=1,
                        help="passes over the training window (default: 1)")
    parser.add_argument("--holdout", type=float, default=0.2,
                        help="newest share of the window kept to score the candidate "
                             "(default: 0.2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the candidate's RNG")
    parser.add_argument("--challenger", action="store_true",
                        help="set the challenger alias on the new version")
    parser.add_argument("--run-name", default=None, help="MLflow run name")
    tracking_args.add_store_args(parser, logs=True)
    parser.set_defaults(func=run)


def candidate(args: argparse.Namespace, base: Policy | None) -> Policy:
    config = base.config if base is not None else PolicyConfig()
    changes: dict[str, Any] = {}
    if args.exploration:
        changes["exploration"] = args.exploration
    if args.epsilon is not None:
        changes["epsilon"] = args.epsilon
    if args.learning_rate is not None:
        changes["learning_rate"] = args.learning_rate
    if args.interactions is not None:
        changes["interactions"] = tuple(p.strip() for p in args.interactions.split(",")
                                        if p.strip())
    config = replace(config, **changes)
    if args.catalog:
        catalog = Catalog.load(args.catalog)
    elif base is not None:
        catalog = base.catalog
    else:
        catalog = Catalog.load(example_catalog_path())
    weights = args.weights or (base.weights if base is not None else None)
    return Policy(catalog, config=config, weights=weights, seed=args.seed)


def run(args: argparse.Namespace) -> int:
    from feedback.training import relearn

    if not 0.0 <= args.holdout < 1.0:
        raise RouteBanditError(f"--holdout: must be in [0, 1), got {args.holdout}")
    if args.passes < 1:
        raise RouteBanditError(f"--passes: must be >= 1, got {args.passes}")
    tracker = tracking_args.tracker(args)
    examples = tracking_args.logged_examples(args)
    if not examples:
        raise RouteBanditError("train: no logged decisions with a reward in the window")
    base = None
    if args.base == "champion":
        if tracker.alias_version("champion") is not None:
            base = tracker.load_version("champion")
    elif args.base != "none":
        base = tracker.load_version(args.base)
    policy = candidate(args, base)
    cut = len(examples) - int(round(len(examples) * args.holdout))
    train, held = examples[:cut], examples[cut:]
    learned = 0
    for _ in range(args.passes):
        learned += relearn(policy, train, weights=args.weights)
    policy.set_version("train", parent=base.version if base is not None else "")
    v = tracker.log_policy_version(
        policy, examples=held, kind="train", weights=args.weights,
        params={"train.examples": len(train), "train.learned": learned,
                "train.holdout": len(held), "train.passes": args.passes,
                "train.base": base.version if base is not None else "-",
                **tracking_args.window(args)},
        alias="challenger" if args.challenger else None, run_name=args.run_name,
    )
    dr = v.metrics.get("ope.dr")
    score = "" if dr is None else (
        f"; held-out DR reward {dr:.4f} [{v.metrics['ope.dr_low']:.4f}, "
        f"{v.metrics['ope.dr_high']:.4f}] on {len(held)} decisions")
    print(f"logged {v.name} ({', '.join(v.aliases) or 'no alias'}): learned {learned} "
          f"decisions{score}")
    return 0
