"""``routebandit policy list|show|compare|promote|rollback|challenger|reset-model``.

Every version is an MLflow run and a registered model version; the ``champion`` alias is
what the service serves and ``challenger`` what shadow and A/B modes try. A running
service picks up a promotion or a rollback by itself, without dropping a request.

``reset-model`` tells a running service that a model changed (its provider updated it
behind the same name, say): the live policy forgets what it learned of that model's
quality (and, unless ``--keep-estimates``, its cost, latency and answer length) and
keeps every other model's (docs/policy.md, "Adapting to change").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import httpx

from serving.commands import tracking_args

SHOWN_METRICS = ("ope.dr", "ope.dr_low", "ope.dr_high", "ope.logged", "ope.quality",
                 "ope.cost_usd", "ope.n")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "policy", help="list, inspect, compare, promote and roll back policy versions",
        description=__doc__,
    )
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True

    p = sub.add_parser("list", help="every registered version, newest first")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    tracking_args.add_store_args(p)
    p.set_defaults(func=_list)

    p = sub.add_parser("show", help="params, metrics and aliases of one version")
    p.add_argument("version", metavar="V", help="a version: 3, v3, champion or challenger")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    tracking_args.add_store_args(p)
    p.set_defaults(func=_show)

    p = sub.add_parser("compare", help="two versions' params and metrics side by side")
    p.add_argument("a", metavar="A", help="first version (number, vN or alias)")
    p.add_argument("b", metavar="B", help="second version (number, vN or alias)")
    p.add_argument("--all", action="store_true",
                   help="show rows that are equal too (default: only the differences)")
    tracking_args.add_store_args(p)
    p.set_defaults(func=_compare)

    p = sub.add_parser("promote", help="make a version the champion (the service swaps to it)")
    p.add_argument("version", metavar="V", help="version to serve: 3, v3 or challenger")
    tracking_args.add_store_args(p)
    p.set_defaults(func=_promote)

    p = sub.add_parser("rollback", help="restore the champion before the last promotion")
    tracking_args.add_store_args(p)
    p.set_defaults(func=_rollback)

    p = sub.add_parser("challenger", help="name the version shadow and A/B modes try")
    p.add_argument("version", metavar="V", help="version to try: 3 or v3")
    tracking_args.add_store_args(p)
    p.set_defaults(func=_challenger)

    p = sub.add_parser(
        "reset-model", help="tell a running service that a model changed",
        description="Forget what the live policy learned of one model (its quality, and "
                    "unless --keep-estimates its cost, latency and answer length), keep "
                    "the others'. Calls the service's admin API (POST "
                    "/v1/policy/reset-model).")
    p.add_argument("model", metavar="NAME", help="the model's catalog name")
    p.add_argument("--url", default=os.environ.get("ROUTEBANDIT_URL", "http://127.0.0.1:8000"),
                   help="the service (default $ROUTEBANDIT_URL or http://127.0.0.1:8000)")
    p.add_argument("--api-key-env", default="ROUTEBANDIT_ADMIN_KEY", metavar="VAR",
                   help="environment variable holding an admin API key (default "
                        "ROUTEBANDIT_ADMIN_KEY; not needed in development mode)")
    p.add_argument("--keep-estimates", action="store_true",
                   help="keep its measured cost, latency and answer length")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait (default 30)")
    p.set_defaults(func=_reset_model)


def _reset_model(args: argparse.Namespace) -> int:
    key = os.environ.get(args.api_key_env)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    url = args.url.rstrip("/") + "/v1/policy/reset-model"
    try:
        response = httpx.post(url, json={"model": args.model,
                                         "estimates": not args.keep_estimates},
                              headers=headers, timeout=args.timeout)
    except httpx.HTTPError as exc:
        print(f"routebandit policy reset-model: cannot reach the service at {args.url}: "
              f"{type(exc).__name__}; is `routebandit serve` running there? (--url)",
              file=sys.stderr)
        return 2
    if response.status_code != 200:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:200]
        hint = (f" (set {args.api_key_env} to an admin API key)"
                if response.status_code in (401, 403) else "")
        print(f"routebandit policy reset-model: HTTP {response.status_code}: {message}{hint}",
              file=sys.stderr)
        return 2
    change = response.json()["change"]
    print(f"{change['model']}: declared changed after {change['at']} learning steps; "
          "what the policy learned of it is forgotten, the other models' is kept")
    return 0


def _when(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ms / 1000)) if ms else "-"


def _list(args: argparse.Namespace) -> int:
    versions = tracking_args.tracker(args).list_versions()
    if args.json:
        print(json.dumps([{"version": v.version, "aliases": list(v.aliases), "kind": v.kind,
                           "created_ms": v.created_ms, "n_learned": v.n_learned,
                           "parent": v.parent, "run_id": v.run_id,
                           "metrics": dict(v.metrics)} for v in versions], indent=2))
        return 0
    if not versions:
        print("no policy versions yet", file=sys.stderr)
        return 0
    print(f"{'version':<8} {'aliases':<20} {'kind':<10} {'created (UTC)':<17} "
          f"{'learned':>8} {'DR reward [95% CI]':>26}")
    for v in versions:
        dr = v.metrics.get("ope.dr")
        est = "-" if dr is None else (
            f"{dr:.4f} [{v.metrics.get('ope.dr_low', float('nan')):.4f}, "
            f"{v.metrics.get('ope.dr_high', float('nan')):.4f}]")
        print(f"{v.name:<8} {','.join(v.aliases) or '-':<20} {v.kind or '-':<10} "
              f"{_when(v.created_ms):<17} {v.n_learned:>8} {est:>26}")
    return 0


def _show(args: argparse.Namespace) -> int:
    v = tracking_args.tracker(args).show(args.version)
    if args.json:
        print(json.dumps({"version": v.version, "aliases": list(v.aliases), "kind": v.kind,
                          "run_id": v.run_id, "created_ms": v.created_ms,
                          "params": dict(v.params), "metrics": dict(v.metrics)}, indent=2))
        return 0
    print(f"{v.name}  aliases: {', '.join(v.aliases) or '-'}  kind: {v.kind or '-'}  "
          f"run: {v.run_id}  created: {_when(v.created_ms)} UTC")
    print("params:")
    for key in sorted(v.params):
        print(f"  {key} = {v.params[key]}")
    print("metrics:")
    for key in sorted(v.metrics):
        print(f"  {key} = {v.metrics[key]:.6g}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    rows = tracking_args.tracker(args).compare(args.a, args.b)
    keep = [r for r in rows if args.all or r[0] in ("version", "aliases") or r[1] != r[2]]
    width = max(len(r[0]) for r in keep)
    for name, a, b in keep:
        print(f"{name:<{width}}  {a:>24}  {b:>24}")
    return 0


def _promote(args: argparse.Namespace) -> int:
    tracker = tracking_args.tracker(args)
    before = tracker.alias_version("champion")
    v = tracker.promote(args.version)
    print(f"champion: {'v' + str(before) if before else '-'} -> {v.name}")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    tracker = tracking_args.tracker(args)
    before = tracker.alias_version("champion")
    v = tracker.rollback()
    print(f"champion: {'v' + str(before) if before else '-'} -> {v.name} (rolled back)")
    return 0


def _challenger(args: argparse.Namespace) -> int:
    v = tracking_args.tracker(args).set_challenger(args.version)
    print(f"challenger: {v.name}")
    return 0
