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


def check_prepared(path, d: dict, expect: dict | None) -> None:
    """Compare a loaded prepared file with what its run expects (the run config's ``data_check``):
    a UserError naming the file and each field that differs, with the expected and the found value."""
    found = {"dataset": d["name"], "image_shape": list(d["train_x"].shape[1:]), "train_size": len(d["train_y"]),
             "val_size": len(d["val_y"]), "test_size": len(d["test_y"]), "pool": d.get("pool"), "seed": d["seed"]}
    wrong = [f"{key}: expected {want}, found {'none recorded (an older prepare)' if found[key] is None else found[key]}"
             for key, want in (expect or {}).items() if want != found[key]]
    if wrong:
        raise UserError(f"{path}: not the prepared data this run expects (its config's data_check, from the params' "
                        f"dataset entry and data_seed):\n  " + "\n  ".join(wrong)
                        + "\nPrepare it again with the params' sizes, pool and seed (the pipeline's prepare step), "
                        "or point the run at the right file.")
