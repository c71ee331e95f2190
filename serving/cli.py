"""The ``routebandit`` command line.

Each subcommand lives in its own module under :mod:`serving.commands` and exposes
``register(subparsers)``; it adds its parser and sets ``func`` to a function taking the
parsed arguments and returning an exit code. Nothing runs at import time.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from bandit.errors import RouteBanditError

# Modules providing subcommands, in the order ``--help`` lists them.
COMMAND_MODULES = (
    "serving.commands.serve",
    "serving.commands.keys",
    "serving.commands.replay",
    "serving.commands.train",
    "serving.commands.evaluate",
    "serving.commands.policy",
    "serving.commands.report",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="routebandit",
        description=(
            "Adaptive LLM router: a contextual bandit picks the model for each prompt and "
            "learns from quality, cost and latency."
        ),
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"routebandit {version('routebandit')}"
    except PackageNotFoundError:
        return "routebandit (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except RouteBanditError as exc:
        print(f"routebandit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
