"""Compute: what a training job asks its scheduler for, and what the jobs measured.

**Asked** (the train rule's ``resources``; no torch: the Snakefile calls this while it is parsed).
A training job's time limit is its work, epochs × training images, times a per-architecture
cost, from the plan's resolved run config (the epochs the job trains, :func:`plan.trained_epochs`:
a late run's B − start, a post-hoc run's P; a baseline's architecture):

    runtime = ceil(startup_minutes + margin · epochs · train_size · seconds_per_image[arch] / 60),
              at least min_minutes, and × the attempt (a retry after a timeout gets more time)

The costs are the cluster's, so the calibration is the Slurm profile's (profiles/slurm/config.yaml,
``config: compute:``; Snakemake hands it to the workflow as config, and the Snakefile takes it out
before it checks the params). Without one (local runs), training jobs get no ``runtime``.
Memory needs no calibration: torch's own footprint (:data:`OVERHEAD_MB`) plus the prepared data
at its peak while the trainer loads it (:data:`BYTES_PER_PIXEL`).

**Measured**: Snakemake's ``benchmark:`` files of the training jobs (``logs/benchmarks/train/RUN.tsv``)
summed per arm, for the report's appendix, with the seconds per image-epoch they imply: the
number to put into the calibration.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from . import plan
from .datasets import DATASETS
from .errors import UserError

CONFIG_KEY = "compute"  # the Snakemake config key the profile sets
BENCHMARKS = "logs/benchmarks"  # the rules' benchmark: files, train/RUN.tsv and measure.tsv
OVERHEAD_MB = 4000  # torch, the CUDA context and torch.compile's workers in host memory
# The prepared data while the trainer loads it: the uint8 file and up to three float32 temporaries.
BYTES_PER_PIXEL = 13


@dataclass(frozen=True)
class Calibration:
    seconds_per_image: dict[str, float]  # per architecture: one training image through one epoch, evaluation included
    margin: float  # the limit over the estimate
    startup_minutes: float  # start-up, data loading, compilation
    min_minutes: int

    @classmethod
    def from_config(cls, raw) -> Calibration | None:
        """From the profile's ``compute`` mapping (Snakemake passes its numbers on as strings); None: none given."""
        if raw is None:
            return None
        keys = {"seconds_per_image", "margin", "startup_minutes", "min_minutes"}
        if not isinstance(raw, dict) or set(raw) != keys or not isinstance(raw["seconds_per_image"], dict):
            raise UserError(f"the profile's config.{CONFIG_KEY} must hold exactly {', '.join(sorted(keys))} "
                            f"(seconds_per_image: a number per architecture), not {raw!r}")
        try:
            costs = {arch: float(cost) for arch, cost in raw["seconds_per_image"].items()}
            return cls(costs, float(raw["margin"]), float(raw["startup_minutes"]), int(raw["min_minutes"]))
        except (TypeError, ValueError) as exc:
            raise UserError(f"the profile's config.{CONFIG_KEY}: not a number: {exc}") from None


def train_minutes(params: dict, run_id: str, cal: Calibration, attempt: int = 1) -> int:
    """The time limit of a training job, in minutes."""
    config = plan.run_config(params, run_id)
    arch = config["model"]["arch"]
    if arch not in cal.seconds_per_image:
        raise UserError(f"run {run_id}: the profile's config.{CONFIG_KEY}.seconds_per_image has no cost for "
                        f"architecture {arch!r}")
    images = params["datasets"][config["fields"]["dataset"]]["train_size"]
    seconds = cal.margin * plan.trained_epochs(config) * images * cal.seconds_per_image[arch]
    return max(cal.min_minutes, math.ceil(cal.startup_minutes + seconds / 60)) * attempt


def train_mem_mb(params: dict, run_id: str) -> int:
    """The host memory of a training job, in MB: torch's footprint and its prepared data."""
    dataset = plan.find_run(params, run_id).fields["dataset"]
    sizes, (channels, height, width) = params["datasets"][dataset], DATASETS[dataset].shape
    pixels = (sizes["train_size"] + sizes["val_size"] + sizes["test_size"]) * channels
    pixels *= (height // sizes["pool"]) * (width // sizes["pool"])
    return OVERHEAD_MB + math.ceil(BYTES_PER_PIXEL * pixels / 2**20)


def train_resources(params: dict, cal: Calibration | None) -> dict:
    """The train rule's resources: ``mem_mb`` always, ``runtime`` given a calibration."""
    resources = {"mem_mb": lambda wildcards: train_mem_mb(params, wildcards.run)}
    if cal is not None:
        resources["runtime"] = lambda wildcards, attempt: train_minutes(params, wildcards.run, cal, attempt)
    return resources


# ---- measured ----------------------------------------------------------------------------------


def read_benchmark(path: Path) -> dict[str, float] | None:
    """A Snakemake benchmark file's last row (s, max_rss in MB, cpu_time, ...); None if missing or unreadable."""
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        return {key: float(value) for key, value in rows[-1].items() if key != "h:m:s"}
    except (OSError, IndexError, ValueError, TypeError):
        return None


def _trained_epochs(row: dict) -> int:
    """The epochs a summary row's job trained: from the state it continued (its prior start) on."""
    arm = plan.ARMS.get(row["arm"])
    continued = arm is not None and arm.init_state is not None
    return int(row["epochs"]) - (int(row.get("prior_start_epoch") or 0) if continued else 0)


def per_arm(summary_rows: list[dict], root, train_sizes: dict[str, int]) -> list[dict]:
    """Per arm (in the arm table's order): jobs with a benchmark, their wall-clock and CPU seconds,
    the largest resident memory, and wall-clock seconds per training image-epoch."""
    out = {}
    for row in summary_rows:
        bench = read_benchmark(Path(root) / "train" / f"{row['run']}.tsv")
        if bench is None:  # not trained by Snakemake, or shares another run's network
            continue
        arm = out.setdefault(row["arm"], {"arm": row["arm"], "jobs": 0, "seconds": 0.0, "cpu_seconds": 0.0,
                                          "max_rss_mb": 0.0, "image_epochs": 0})
        arm["jobs"] += 1
        arm["seconds"] += bench["s"]
        arm["cpu_seconds"] += bench.get("cpu_time", 0.0)
        arm["max_rss_mb"] = max(arm["max_rss_mb"], bench.get("max_rss", 0.0))
        arm["image_epochs"] += _trained_epochs(row) * train_sizes.get(row["dataset"], 0)
    for arm in out.values():
        arm["seconds_per_image"] = arm["seconds"] / arm["image_epochs"] if arm["image_epochs"] else None
    order = list(plan.ARMS)
    return sorted(out.values(), key=lambda a: order.index(a["arm"]) if a["arm"] in order else len(order))
