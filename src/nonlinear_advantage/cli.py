"""``python -m nonlinear_advantage COMMAND``: one subcommand per pipeline stage.

Each stage module exposes ``add_cli(subparsers)``; it registers its command and sets
``func``. A command imports only its own module (a training job need not load matplotlib
and reportlab: every one of the study's jobs pays the import); ``--help`` imports them all.
A :class:`UserError` ends the run with its message and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import UserError

# Module per stage, in pipeline order; each defines add_cli(subparsers).
STAGE_MODULES = ("data", "trainer", "measure", "plan", "aggregate", "metrics", "figures", "report", "generate")
COMMAND_MODULE = {"download": "data", "prepare": "data", "train": "trainer", "measure": "measure",
                  "validate-params": "plan", "configure": "plan", "aggregate": "aggregate", "metrics": "metrics",
                  "figures": "figures", "report": "report", "generate": "generate"}


def run_config(params_path: str, run_id: str) -> dict:
    """``train --params P --run R``: the run's config as ``configure`` resolves it. The plan is
    loaded by name, so that it is not part of the trainer's code: a pipeline job trains from
    the resolved config file, which is its dependency (plan.py, "code as a dependency")."""
    plan = importlib.import_module(".plan", __package__)
    return plan.run_config(plan.load_params(params_path), run_id)


def build_parser(modules=STAGE_MODULES) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nonlinear_advantage",
        description="Sparsified PReLU networks and their average path length: the pipeline's stages.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in modules:
        try:
            module = importlib.import_module(f".{name}", __package__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.{name}":
                raise
            continue  # a stage that is not built yet
        module.add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    first = next((a for a in argv if not a.startswith("-")), None)
    modules = (COMMAND_MODULE[first],) if first in COMMAND_MODULE else STAGE_MODULES
    args = build_parser(modules).parse_args(argv)
    try:
        return args.func(args) or 0
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
