"""Flags shared by ``routebandit policy``, ``evaluate`` and ``train``: where MLflow and the
decision log live, and which window of logged traffic to read."""

from __future__ import annotations

import argparse
import logging
import os
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bandit.errors import RouteBanditError
from bandit.reward import RewardWeights

if TYPE_CHECKING:
    from feedback.tracking import Tracker

DEFAULT_DATA_DIR = "~/.routebandit"
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def add_store_args(parser: argparse.ArgumentParser, *, logs: bool = False) -> None:
    g = parser.add_argument_group("where versions and logs live")
    g.add_argument(
        "--tracking-uri", default=None, metavar="URI",
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else a SQLite store "
             "<data-dir>/mlflow.db)",
    )
    g.add_argument(
        "--data-dir", default=None, metavar="DIR",
        help="routebandit data directory (default: $ROUTEBANDIT_DATA_DIR or ~/.routebandit)",
    )
    g.add_argument(
        "--model-name", default=None, metavar="NAME",
        help="registered model name in the MLflow Model Registry (default: routebandit-policy)",
    )
    g.add_argument(
        "--experiment", default=None, metavar="NAME",
        help="MLflow experiment holding the runs (default: routebandit)",
    )
    if logs:
        g.add_argument(
            "--database-url", default=None, metavar="URL",
            help="decision log database (default: $ROUTEBANDIT_DATABASE_URL, else SQLite "
                 "<data-dir>/routebandit.db)",
        )
        w = parser.add_argument_group("window of logged traffic")
        w.add_argument(
            "--since", type=when, default=None, metavar="TIME",
            help="first decision time: ISO 8601 (2026-01-31T12:00Z) or an age like 7d, 12h",
        )
        w.add_argument(
            "--until", type=when, default=None, metavar="TIME",
            help="decisions strictly before this time (same formats as --since)",
        )
        w.add_argument(
            "--tenant", default=None, help="only this tenant's decisions (default: all)"
        )


def when(text: str) -> datetime:
    """An ISO 8601 time (UTC if no zone) or an age such as ``7d`` (that long ago)."""
    m = _DURATION.match(text.strip())
    if m:
        delta = timedelta(**{_UNITS[m.group(2)]: float(m.group(1))})
        return datetime.now(timezone.utc) - delta
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 time or an age like 7d, 12h, 30m; got {text!r}"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def weights(text: str) -> RewardWeights:
    """``quality=1,cost=0.05,latency=0`` (omitted weights keep their defaults)."""
    changes: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        try:
            changes[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise argparse.ArgumentTypeError(
                f"expected name=number pairs like quality=1,cost=0.05; got {text!r}"
            )
    try:
        return RewardWeights().override(changes)
    except RouteBanditError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def data_dir(args: argparse.Namespace) -> Path:
    raw = args.data_dir or os.environ.get("ROUTEBANDIT_DATA_DIR") or DEFAULT_DATA_DIR
    return Path(raw).expanduser()


def quiet_mlflow() -> None:
    """Keep MLflow's progress bars and INFO lines out of the command's output."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is imported
    logging.getLogger("mlflow").setLevel(logging.WARNING)


def tracker(args: argparse.Namespace) -> Tracker:
    from feedback.tracking import EXPERIMENT, MODEL_NAME, Tracker, resolve_tracking_uri

    quiet_mlflow()
    uri = resolve_tracking_uri(args.tracking_uri, data_dir=data_dir(args))
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    return Tracker(uri, experiment=args.experiment or EXPERIMENT,
                   model_name=args.model_name or MODEL_NAME)


def database_url(args: argparse.Namespace) -> str:
    return (args.database_url or os.environ.get("ROUTEBANDIT_DATABASE_URL")
            or f"sqlite:///{data_dir(args) / 'routebandit.db'}")


def logged_examples(args: argparse.Namespace) -> list[Any]:
    """The window's decisions chosen by a policy, with their rewards, oldest first."""
    from feedback.store import Store

    store = Store(database_url(args))
    try:
        return list(store.logged(args.since, args.until, tenant=args.tenant, kind="policy"))
    finally:
        store.close()


def window(args: argparse.Namespace) -> dict[str, str]:
    return {"window.since": args.since.isoformat() if args.since else "-",
            "window.until": args.until.isoformat() if args.until else "-",
            "window.tenant": args.tenant or "-"}
