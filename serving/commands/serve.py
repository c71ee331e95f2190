"""``routebandit serve``: run the decision service (one uvicorn worker)."""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import socket
import sys
from typing import Any


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """Flags shared by commands that open the service's database."""
    parser.add_argument("--config", metavar="FILE",
                        help="TOML or YAML config file (also ROUTEBANDIT_CONFIG)")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="state directory (default ~/.routebandit)")
    parser.add_argument("--database-url", metavar="URL",
                        help="SQLAlchemy URL (default SQLite in the data directory)")


def settings_from(args: argparse.Namespace, **extra: Any) -> Any:
    from serving.settings import load_settings

    return load_settings(args.config, data_dir=args.data_dir,
                         database_url=args.database_url, **extra)


def register(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="run the decision service (HTTP API)",
        description="Run the decision service. Every setting can also come from "
        "ROUTEBANDIT_<NAME> environment variables or a config file; flags win.",
    )
    p.add_argument("--host", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="TCP port (default 8000)")
    p.add_argument("--catalog", metavar="PATH", help="model catalog YAML (default: example)")
    p.add_argument("--policy", metavar="PATH",
                   help="saved policy to start from when the database has no checkpoint")
    p.add_argument("--log-level", choices=("critical", "error", "warning", "info", "debug"),
                   help="logging level (default info)")
    add_settings_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from serving.app import create_app, preflight, prepare_tracking

    settings = settings_from(args, host=args.host, port=args.port, catalog=args.catalog,
                             policy=args.policy, log_level=args.log_level)
    pre = preflight(settings)  # fail here, with a clear message, not inside uvicorn
    pre.store.close()
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if pre.dev_mode:
        print(f"routebandit: DEVELOPMENT MODE (no API keys): bound to {settings.host} only; "
              "create keys with `routebandit keys create --tenant NAME`", file=sys.stderr)
    prepare_tracking(settings)  # MLflow's store and imports now, not under load
    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, workers=1,
                            log_level=settings.log_level, access_log=False, lifespan="on")

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)  # the lifespan, then the listeners
            tune_gc()

    server = Server(config)
    with contextlib.suppress(KeyboardInterrupt):  # as uvicorn.run
        server.run()
    return 0 if server.started else 3  # uvicorn.run's status when start-up fails


def tune_gc() -> None:
    """Take what start-up built out of the cyclic GC's view and collect less often.

    Called once the lifespan has started, before the first request: everything imported
    and built so far (modules, MLflow, the policy, the engine, compiled statements) lives
    as long as the process, and every full collection walked it (~130k objects: a
    50-200 ms pause, which is what a p99 sees).
    """
    gc.collect()
    gc.freeze()
    # 32 requests in flight hold thousands of young objects; at the default 700 each
    # young collection promoted them, which set off a full collection every few seconds
    # (10-30 ms each, a p99 spike). At 10,000 / 20 / 20 a 25 s wrk run saw none, and the
    # young collections cost less than half as much CPU in total.
    gc.set_threshold(10_000, 20, 20)
    logging.getLogger("routebandit").info("GC: %d start-up objects frozen",
                                          gc.get_freeze_count())
