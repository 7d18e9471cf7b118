"""The measure stage: effective depth and the per-layer core network of one trained run."""

from __future__ import annotations

from pathlib import Path

import torch

from . import fileio
from .depth import depth_summary
from .errors import UserError
from .trainer import load_checkpoint, model_from_checkpoint


def measure(run_dir: str | Path, eps: float | None = None) -> dict:
    """APLs and layer profile of ``run_dir/checkpoint.pt``; eps defaults to the run's own."""
    ckpt_path = Path(run_dir) / "checkpoint.pt"
    ckpt = load_checkpoint(ckpt_path)
    if ckpt["epoch"] < ckpt["config"]["epochs"]:
        raise UserError(f"run {ckpt['config']['name']}: {ckpt_path} holds epoch {ckpt['epoch']} of "
                        f"{ckpt['config']['epochs']}; finish the training first")
    eps = ckpt["config"]["eps"] if eps is None else eps
    model = model_from_checkpoint(ckpt).eval()
    summary = depth_summary(model, torch.zeros(1, *ckpt["input_shape"]), eps=eps)
    return {"run": ckpt["config"]["name"], "eps": eps, **summary}


def _cli(args) -> int:
    if args.eps is not None and args.eps < 0:
        raise UserError(f"--eps must be >= 0, got {args.eps}")
    result = measure(args.run, args.eps)
    fileio.write_json(args.out, result)
    print(f"{result['run']}: APL {result['apl_normalized']:.3f} (normalized), "
          f"{result['apl_unnormalized']:.3f} (unnormalized), "
          f"{result['nonlinear_channels']}/{result['total_channels']} nonlinear channels")
    return 0


def add_cli(sub) -> None:
    p = sub.add_parser("measure", help="measure the APL and per-layer profile of a trained run",
                       description="Average path length (normalized and unnormalized) and the "
                                   "per-layer nonlinear widths of RUN/checkpoint.pt.")
    p.add_argument("--run", required=True, help="run directory holding checkpoint.pt")
    p.add_argument("--out", required=True, help="depth.json to write")
    p.add_argument("--eps", type=float, default=None,
                   help="a channel is nonlinear when |1 - slope| > eps (default: the run's eps)")
    p.set_defaults(func=_cli)
