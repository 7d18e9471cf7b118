"""``python -m nonlinear_advantage COMMAND``: one subcommand per pipeline stage.

Each stage module exposes ``add_cli(subparsers)``; it registers its command and sets
``func``. Modules are imported here so that ``--help`` lists every command that exists.
A :class:`UserError` ends the run with its message and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import UserError

# Module per stage, in pipeline order; each defines add_cli(subparsers).
STAGE_MODULES = ("data", "trainer", "measure", "plan", "aggregate", "figures", "report")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nonlinear_advantage",
        description="Sparsified PReLU networks and their average path length: the pipeline's stages.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in STAGE_MODULES:
        try:
            module = importlib.import_module(f".{name}", __package__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.{name}":
                raise
            continue  # a stage that is not built yet
        module.add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
