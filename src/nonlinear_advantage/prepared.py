"""The prepared-dataset file (``prepare``'s output): its splits and the check of its format.

Its own module so that the trainer reads the format without the dataset table and the download
code (data.py): a new dataset row is not code that decides a run.
"""

from __future__ import annotations

from pathlib import Path

import torch

from . import fileio
from .errors import UserError

SPLITS = ("train", "val", "test")


def load_prepared(path) -> dict:
    """Load a ``prepare`` output (weights_only) and check its format; UserError names the file."""
    path = Path(path)
    hint = "write it with `python -m nonlinear_advantage prepare DATASET --raw ... --out ...`"
    if not path.is_file():
        raise UserError(f"{path}: prepared dataset not found; {hint}")

    def bad(why):
        return UserError(f"{path}: not a prepared dataset: {why}; {hint}")

    d = fileio.torch_load(path, "a prepared dataset", hint)
    if not isinstance(d, dict):
        raise bad(f"holds a {type(d).__name__}, not a dict")
    keys = {f"{s}_{v}" for s in SPLITS for v in "xy"} | {"name", "classes", "mean", "std", "seed"}
    if missing := sorted(keys - d.keys()):
        raise bad(f"missing {', '.join(missing)}")
    channels = None
    for s in SPLITS:
        x, y = d[f"{s}_x"], d[f"{s}_y"]
        if not (isinstance(x, torch.Tensor) and x.dtype == torch.uint8 and x.dim() == 4):
            raise bad(f"{s}_x must be a uint8 tensor [N,C,H,W]")
        if not (isinstance(y, torch.Tensor) and y.dtype == torch.int64 and y.shape == (len(x),)):
            raise bad(f"{s}_y must be an int64 tensor [N] matching {s}_x")
        if len(y) and not (0 <= int(y.min()) and int(y.max()) < len(d["classes"])):
            raise bad(f"{s}_y has labels outside 0..{len(d['classes']) - 1}")
        if channels not in (None, x.shape[1:]):
            raise bad(f"{s}_x has image shape {tuple(x.shape[1:])}, unlike the other splits")
        channels = x.shape[1:]
    if not len(d["mean"]) == len(d["std"]) == channels[0]:
        raise bad(f"mean/std need one value per channel ({channels[0]})")
    return d
