"""Size a study from one measured epoch: time a model's epoch, then estimate a params file's wall time.

    python benchmarks/gpu_sizing.py --out DIR --device cuda            # ResNet-56 w16, 45k 32x32x3, batch 128 and 512
    python benchmarks/gpu_sizing.py --out DIR --device cpu --n 512 --depth 8 --width 4 --batches 64 256  # smoke

1. Writes a random prepared dataset (N images of 32x32x3 + val and test sets, the prepared-file
   format of docs/interfaces.md) and trains on it with ``trainer.train`` for 2 epochs at each batch
   size, with the device's ``auto`` settings (bf16, channels_last, torch.compile on CUDA) and the
   prior on (λ > 0: the proximal step runs after every step, as in the sparse and post-hoc runs,
   which are most of the study; the dense runs and baselines are counted at that rate too). The
   epoch time is the second epoch's (history.csv's wall_time_s is cumulative training time; the
   first epoch pays for compilation and CUDA-graph capture).
2. Lists the runs of the params file (config/paper.yaml) with the study's own plan
   (plan.runs and plan.run_config: every arm, its model and epochs). Each run's cost is its
   epochs x training images x the FLOPs of one image's forward pass of its model (its
   convolutions and linear layers), relative to the timed model, plus an evaluation pass over
   val + test per epoch (a forward costs ~1/3 of a training step). Small baselines run below
   the big model's efficiency on a GPU, so their share is a lower bound.

Writes DIR/sizing.json and prints the epoch times and the estimate.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import sys
import time
from pathlib import Path

import torch
import yaml

from nonlinear_advantage import plan
from nonlinear_advantage.datasets import DATASETS
from nonlinear_advantage.models import build_model
from nonlinear_advantage.trainer import train

EVAL_COST = 1 / 3  # a forward pass, relative to a training step (forward + backward)


def random_dataset(path: Path, n: int, n_val: int, n_test: int, size: int = 32, channels: int = 3) -> Path:
    gen = torch.Generator().manual_seed(0)
    total = n + n_val + n_test
    x = torch.randint(0, 256, (total, channels, size, size), dtype=torch.uint8, generator=gen)
    y = torch.randint(0, 10, (total,), generator=gen)
    torch.save(dict(name="random", train_x=x[:n], train_y=y[:n], val_x=x[n:n + n_val], val_y=y[n:n + n_val],
                    test_x=x[n + n_val:], test_y=y[n + n_val:], classes=[str(i) for i in range(10)],
                    mean=[0.5] * channels, std=[0.29] * channels, source="gpu_sizing", seed=0), path)
    return path


def time_epoch(data: Path, model: dict, batch: int, device: str, out: Path, lam: float = 1.0) -> dict:
    """Seconds of the second training epoch, and of the first (compilation included)."""
    cfg = dict(name=f"sizing/b{batch}", data=str(data), model=model, epochs=2, batch_size=batch, lam=lam,
               device=device, augment={"flip": True, "crop": 4}, schedule={"kind": "cosine", "warmup_epochs": 1})
    if "torch._dynamo" in sys.modules:  # compile afresh: not a dynamic-batch recompile of the last run
        sys.modules["torch._dynamo"].reset()
    t0 = time.perf_counter()
    metrics = train(cfg, out, progress=False)
    call = time.perf_counter() - t0
    with open(out / "history.csv", newline="") as f:
        walls = [float(row["wall_time_s"]) for row in csv.DictReader(f)]
    (out / "checkpoint.pt").unlink()  # not needed, and not worth bringing back from the GPU machine
    return {"batch": batch, "epoch_s": walls[1] - walls[0], "first_epoch_s": walls[0], "call_s": call,
            "images_per_s": metrics["images_per_s"]}


@functools.cache
def forward_flops(arch: str, depth: int, width: int, dataset: str, activation: str = "prelu") -> int:
    """Multiply-adds x 2 of one image's forward pass through the convolutions and linear layers
    (shapes only: the model runs on the meta device)."""
    ds = DATASETS[dataset]
    c, side, classes = ds.shape[0], ds.shape[1], ds.num_classes
    with torch.device("meta"):
        model = build_model(arch, depth=depth, width=width, in_channels=c, num_classes=classes,
                            activation=activation).eval()
    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            k = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        else:
            k = module.in_features
        total += 2 * output.numel() * k

    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            m.register_forward_hook(count)
    with torch.no_grad():
        model(torch.zeros(1, c, side, side, device="meta"))
    return total


def study_runs(params: dict) -> list[dict]:
    """Every run of a params file, from the study's own plan: dataset, arm, model and epochs."""
    params = plan.validate(params)
    runs = []
    for run in plan.runs(params):
        cfg, sizes = plan.run_config(params, run.id), params["datasets"][run.fields["dataset"]]
        model = {k: cfg["model"][k] for k in ("arch", "depth", "width", "activation")}
        runs.append(dict(run.fields, arm=run.arm, **model, epochs=cfg["epochs"], n_train=sizes["train_size"],
                         n_eval=sizes["val_size"] + sizes["test_size"]))
    return runs


def estimate(params: dict, timed: dict, epoch_s: float, runs: list[dict] | None = None) -> dict:
    """Seconds of the whole study on one device, from ``epoch_s`` of the timed model and data
    (``runs``: ``study_runs(params)``, if already at hand)."""
    ref = forward_flops(timed["arch"], timed["depth"], timed["width"], timed["dataset"]) * timed["n_train"]
    total, per_dataset = 0.0, {}
    runs = study_runs(params) if runs is None else runs
    for run in runs:
        flops = forward_flops(run["arch"], run["depth"], run["width"], run["dataset"], run["activation"])
        work = run["epochs"] * flops * (run["n_train"] + EVAL_COST * run["n_eval"])
        seconds = epoch_s * work / ref
        total += seconds
        per_dataset[run["dataset"]] = per_dataset.get(run["dataset"], 0.0) + seconds
    return {"runs": len(runs), "epochs": sum(r["epochs"] for r in runs), "seconds": total,
            "per_dataset_s": per_dataset}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda", choices=("cpu", "cuda"))
    parser.add_argument("--params", type=Path, default=Path(__file__).resolve().parents[1] / "config" / "paper.yaml")
    parser.add_argument("--n", type=int, default=45000, help="training images (default %(default)s)")
    parser.add_argument("--val", type=int, default=5000)
    parser.add_argument("--test", type=int, default=10000)
    parser.add_argument("--depth", type=int, default=56)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batches", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--lam", type=float, default=1.0, help="λ of the timed runs (0: no proximal step)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data = random_dataset(args.out / "random.pt", args.n, args.val, args.test)
    model = dict(arch="resnet", depth=args.depth, width=args.width)
    device = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"ResNet-{args.depth} width {args.width} on {args.n} random 32x32x3 images, {device}, "
          f"torch {torch.__version__}", flush=True)
    timings = []
    for batch in args.batches:
        t = time_epoch(data, model, batch, args.device, args.out / f"b{batch}", args.lam)
        timings.append(t)
        print(f"epoch at batch {batch}: {t['epoch_s']:.2f} s ({args.n / t['epoch_s']:.0f} images/s; "
              f"first epoch {t['first_epoch_s']:.1f} s, compilation and warm-up included)", flush=True)
    data.unlink()

    params = yaml.safe_load(args.params.read_text())
    timed = dict(arch="resnet", depth=args.depth, width=args.width, dataset="cifar10", n_train=args.n)
    paper_batch = params.get("train", {}).get("batch_size")
    result = {"device": device, "torch": torch.__version__, "timings": timings, "params": str(args.params),
              "params_batch_size": paper_batch, "estimates": {}}
    runs = study_runs(params)
    for t in timings:
        est = estimate(params, timed, t["epoch_s"], runs)
        result["estimates"][t["batch"]] = est
        note = " (the params' batch size)" if t["batch"] == paper_batch else ""
        print(f"estimate for {args.params.name} at batch {t['batch']}{note}: {est['runs']} runs, "
              f"{est['epochs']} epochs, {est['seconds'] / 3600:.1f} GPU-hours on one {device} "
              f"({', '.join(f'{k} {v / 3600:.1f} h' for k, v in est['per_dataset_s'].items())})")
    (args.out / "sizing.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
