"""The learning-rate schedule, and how far the prior can move a slope: torch-free, so the plan
computes each run's λ from the same arithmetic the trainer runs.

The slopes step at ``optimizer.slope_lr_scale`` times the learning rate. Under the prior a slope
moves at most lr·λ/(C·(1 − μ)) per step (lr: the slopes') (``prelu.prox_threshold``), so
over a run at most λ·Σlr/(C·(1 − μ)): the run's *prior shift* (``max_prior_shift`` in its
metrics). A slope starts 1 − slope_init from linear, and a fixed λ means a different shift in
every arm (post-hoc trains a few epochs at a small constant lr after the dense cycle), so
params.yaml gives each arm's grid as shifts and the plan turns them into λ (:func:`lam_for_shift`).
"""

from __future__ import annotations

import math
from functools import cache


def cycle_epochs(cfg: dict) -> int:
    """The span of the warm-up and decay: ``schedule.epochs``, else the whole run. A post-hoc run
    continues the dense run's cycle (span B) and trains on after it at ``schedule.tail_lr``."""
    return cfg["schedule"].get("epochs") or cfg["epochs"]


def lr_at(cfg: dict, step: int, steps_per_epoch: int) -> float:
    """Learning rate at a step: linear warm-up, then one-cycle (linear) or cosine decay over the
    cycle's span; after it, ``schedule.tail_lr``: constant, or (``tail: linear`` or ``cosine``) decaying
    to 0 over the epochs after the cycle, so that a post-hoc fine-tune ends as still as its dense start.

    The warm-up takes at most half the cycle, so a short cycle still decays.
    """
    peak, total = cfg["optimizer"]["lr"], cycle_epochs(cfg) * steps_per_epoch
    if step >= total:
        if cfg["schedule"].get("tail", "constant") == "constant":
            return cfg["schedule"]["tail_lr"]
        tail_steps = (cfg["epochs"] - cycle_epochs(cfg)) * steps_per_epoch
        frac = (step - total) / tail_steps
        if cfg["schedule"]["tail"] == "cosine":
            return cfg["schedule"]["tail_lr"] * 0.5 * (1 + math.cos(math.pi * frac))
        return cfg["schedule"]["tail_lr"] * (1 - frac)
    warm = min(total // 2, round(cfg["schedule"]["warmup_epochs"] * steps_per_epoch))
    if step < warm:
        return peak * (step + 1) / (warm + 1)
    frac = (step - warm) / max(1, total - warm)
    if cfg["schedule"]["kind"] == "cosine":
        return peak * 0.5 * (1 + math.cos(math.pi * frac))
    return peak * (1 - frac)


def steps_per_epoch(train_size: int, batch_size: int) -> int:
    """The trainer's steps per epoch: it drops the ragged tail (BatchNorm needs more than one image)."""
    return train_size // min(batch_size, train_size)


def prior_lr_sum(cfg: dict, train_size: int) -> float:
    """Σ of the slopes' lr over the steps where the prior is on (from ``prior_start_epoch`` to the end)."""
    sched, opt = cfg["schedule"], cfg["optimizer"]
    return opt.get("slope_lr_scale", 1.0) * _lr_sum(
        opt["lr"], sched["kind"], sched["warmup_epochs"], cycle_epochs(cfg), sched.get("tail_lr"),
        sched.get("tail", "constant"), steps_per_epoch(train_size, cfg["batch_size"]), cfg["epochs"],
        cfg["prior_start_epoch"])


@cache  # every run of an arm and dataset shares it, and a paper-scale plan has ~50,000 steps a run
def _lr_sum(peak: float, kind: str, warmup_epochs: float, cycle: int, tail_lr: float | None, tail: str,
            per_epoch: int, epochs: int, start_epoch: int) -> float:
    cfg = {"optimizer": {"lr": peak}, "epochs": epochs,
           "schedule": {"kind": kind, "warmup_epochs": warmup_epochs, "epochs": cycle, "tail_lr": tail_lr,
                        "tail": tail}}
    return math.fsum(lr_at(cfg, step, per_epoch) for step in range(start_epoch * per_epoch, per_epoch * epochs))


def lam_for_shift(shift: float, cfg: dict, train_size: int, channels: int) -> float:
    """The λ whose prior shift over this run is ``shift``, to 4 significant digits: readable in
    configs and tables, and the same on every machine; max_prior_shift records the exact shift."""
    lr_sum = prior_lr_sum(cfg, train_size)
    return float(f"{shift * channels * (1.0 - cfg['optimizer']['momentum']) / lr_sum:.4g}")
