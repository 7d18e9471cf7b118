"""The measure stage: effective depth and the per-layer core network of the trained runs.

One job measures the whole study (``measure --params P --out results/depth.json runs``): the
APL of a trained net takes milliseconds, and a process per run would pay the start-up of torch
(seconds) for each. ``--run DIR`` measures one run directory.
"""

from __future__ import annotations

from pathlib import Path

import torch

from . import fileio, plan, schemas
from .depth import depth_summary
from .errors import UserError
from .trainer import load_checkpoint, model_from_checkpoint


def depth_eps_of(params: dict | None = None) -> float:
    """The second threshold of the depth file (``analysis.depth_eps``); the schema's default without one."""
    section = schemas.load(schemas.PARAMS)["properties"]["analysis"]
    return schemas.with_defaults(((params or {}).get("analysis") or {}), section)["depth_eps"]


def measure(run_dir: str | Path, eps: float | None = None, depth_eps: float | None = None) -> dict:
    """APLs and layer profile of ``run_dir/checkpoint.pt`` (eps defaults to the run's own), and
    both APLs, the nonlinear count and the slope quantiles at ``depth_eps`` (default: the schema's)."""
    ckpt_path = Path(run_dir) / "checkpoint.pt"
    ckpt = load_checkpoint(ckpt_path)
    if ckpt["epoch"] < ckpt["config"]["epochs"]:
        raise UserError(f"run {ckpt['config']['name']}: {ckpt_path} holds epoch {ckpt['epoch']} of "
                        f"{ckpt['config']['epochs']}; finish the training first")
    eps = ckpt["config"]["eps"] if eps is None else eps
    model = model_from_checkpoint(ckpt).eval()
    depth_eps = depth_eps_of() if depth_eps is None else depth_eps
    summary = depth_summary(model, torch.zeros(1, *ckpt["input_shape"]), eps=eps, depth_eps=depth_eps)
    return {"run": ckpt["config"]["name"], "eps": eps, **summary}


def measure_study(params: dict, root: str | Path, eps: float | None = None) -> dict[str, dict]:
    """Every trained run of the plan, by run id (one entry per network: see plan.runs), the
    second threshold from the params' ``analysis.depth_eps``."""
    depth_eps = depth_eps_of(params)
    return {run_id: measure(plan.run_dir(run_id, root=str(root)), eps, depth_eps) for run_id in plan.run_ids(params)}


def write_depth(path, results: dict[str, dict]) -> None:
    """The study's depth file: run id -> that run's measure() result (fileio.read_json reads it)."""
    fileio.write_json(path, results)


def _cli(args) -> int:
    if args.eps is not None and args.eps < 0:
        raise UserError(f"--eps must be >= 0, got {args.eps}")
    if args.run:
        results = {"": measure(args.run, args.eps)}
        fileio.write_json(args.out, results[""])
    else:
        if not args.params:
            raise UserError("give --run DIR, or --params PARAMS and the runs root (runs)")
        results = measure_study(plan.load_params(args.params), args.root, args.eps)
        write_depth(args.out, results)
    for result in results.values():
        print(f"{result['run']}: APL {result['apl_normalized']:.3f} (normalized), "
              f"{result['apl_unnormalized']:.3f} (unnormalized), "
              f"{result['nonlinear_channels']}/{result['total_channels']} nonlinear channels; at |1 - a| > "
              f"{result['depth_eps']:g}: APL {result['apl_normalized_eps']:.3f}, {result['nonlinear_channels_eps']}")
    return 0


def add_cli(sub) -> None:
    p = sub.add_parser("measure", help="measure the APL and per-layer profile of the trained runs",
                       description="Average path length (normalized and unnormalized) and the per-layer "
                                   "nonlinear widths: of every run a params file plans (one JSON file keyed by "
                                   "run id), or of one run directory (--run).")
    p.add_argument("root", nargs="?", default="runs", help="the runs root, with --params (default: runs)")
    p.add_argument("--params", help="params.yaml: measure every run it plans, under ROOT")
    p.add_argument("--run", help="one run directory holding checkpoint.pt, instead of --params")
    p.add_argument("--out", required=True, help="the JSON file to write, e.g. results/depth.json")
    p.add_argument("--eps", type=float, default=None,
                   help="a channel is nonlinear when |1 - slope| > eps (default: each run's eps)")
    p.set_defaults(func=_cli)
