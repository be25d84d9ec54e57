"""`hetserve` command line: thin shells over library calls, one module per subcommand.

Each module in hetserve/commands/ exposes `register(subparsers)` which adds its parser and sets
`func(args) -> int`. Bad input (ConfigError) prints the field path and exits 2; a runtime failure
(RuntimeFailure: a process did not start, a cluster is still running) prints what failed and
exits 1; neither prints a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from hetserve.errors import ConfigError, RuntimeFailure

# Subcommand modules, in the order `--help` lists them.
COMMANDS = ("plan", "simulate", "profile", "bench", "cluster")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hetserve", description="Serve one LLM at the highest throughput a heterogeneous Ray cluster can give."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"hetserve.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"hetserve.commands.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"hetserve {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeFailure as exc:
        print(f"hetserve {args.command}: failed: {exc}", file=sys.stderr)
        return 1


def entrypoint() -> None:
    sys.exit(main())
