"""``routebandit report``: the dashboard's figures for a time range, as one HTML file.

The file is self-contained (plots embedded as PNG data URIs, no script, no external
asset): traffic share per model, kinds of prompt, feedback coverage and mean scores,
spend and the saving against a reference model's prices, latency percentiles, errors
and failovers, exploration, policy versions (with MLflow's off-policy estimates) and
the learner's lag. A short summary is printed. The stats roll-ups are brought up to date
first (as the service does every minute), unless ``--no-refresh``.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from bandit.errors import RouteBanditError
from serving.commands import tracking_args


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "report", help="write the dashboard's figures for a time range as one HTML file",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, default=Path("routebandit-report.html"),
                        metavar="FILE", help="HTML file to write (default: %(default)s)")
    parser.add_argument("--bucket", default="auto", metavar="SIZE",
                        help="bucket size: auto (default), 5m, 1h, 1d, ...")
    parser.add_argument("--reference", default=None, metavar="MODEL",
                        help="catalog model whose prices the saving is counted against "
                             "(default: the most expensive)")
    parser.add_argument("--catalog", default=None, metavar="FILE",
                        help="catalog YAML with the prices (default: ROUTEBANDIT_CATALOG, "
                             "else the example catalog)")
    parser.add_argument("--no-versions", action="store_true",
                        help="leave MLflow's policy versions out")
    parser.add_argument("--no-refresh", action="store_true",
                        help="read the roll-ups as they are (the raw rows cover the rest)")
    tracking_args.add_store_args(parser, logs=True)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from feedback.stats import Stats, window
    from feedback.store import Store
    from serving.report import collect, render, summary

    now = datetime.now(timezone.utc)
    since = args.since or now - timedelta(days=7)
    w = window(since=since, until=args.until or now, bucket=args.bucket, now=now)
    reference = _reference(args)
    store = Store(tracking_args.database_url(args))
    try:
        stats = Stats(store.engine)
        if not args.no_refresh:
            stats.rollup.refresh()
        registry, note = ([], "left out (--no-versions)") if args.no_versions \
            else _registry(args)
        report = collect(stats, w, tenant=args.tenant, reference=reference,
                         registry=registry, registry_note=note)
    finally:
        store.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(report), encoding="utf-8")
    print("\n".join(summary(report)))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def _reference(args: argparse.Namespace) -> Any:
    import os

    from bandit.catalog import Catalog, example_catalog_path
    from feedback.stats import Reference

    path = args.catalog or os.environ.get("ROUTEBANDIT_CATALOG") or example_catalog_path()
    catalog = Catalog.load(path)
    specs = list(catalog)
    if args.reference is not None:
        if args.reference not in catalog:
            raise RouteBanditError(f"reference: no model {args.reference!r} in the catalog "
                                   f"{path} (models: {', '.join(catalog.names)})")
        spec = catalog.get(args.reference)
    elif specs:
        spec = max(specs, key=lambda s: (s.input_price + s.output_price, s.name))
    else:
        return None
    return Reference(spec.name, spec.input_price, spec.output_price)


def _registry(args: argparse.Namespace) -> tuple[list[Any], str]:
    from feedback.stats.figures import registered_version

    tracker = tracking_args.tracker(args)
    if not tracker.exists():
        return [], f"no MLflow store at {tracker.tracking_uri}"
    try:
        return [registered_version(v) for v in tracker.recent_versions(limit=200)], ""
    except RouteBanditError as exc:
        return [], f"MLflow is unavailable: {exc}"
