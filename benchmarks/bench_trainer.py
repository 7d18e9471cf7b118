"""Trainer throughput against a bare training loop, measured in one run.

The bare loop is forward, backward and step on a batch already in memory: the ceiling
for this model and batch. The trainer adds batch indexing, the lr schedule, the proximal
step and the loss bookkeeping. Target on the CPU: ratio >= 0.9 (issue 3).

    python benchmarks/bench_trainer.py --data data/prepared/fashion_mnist.pt
    python benchmarks/bench_trainer.py --data ... --settings   # fp32 vs bf16 / channels_last / compile
    python benchmarks/bench_trainer.py --data ... --device cuda --batch 512 --epochs 2 --dataloader
        # the GPU target (issue 3): trainer >= 3.5x a plain DataLoader loop, same GPU, same run
    python benchmarks/bench_trainer.py --data ... --settings nchw,eager   # only these variants

Without --data a random 28x28 dataset is generated. Speed depends on OMP_NUM_THREADS.
With --epochs 2 or more the trainer's figure is its last epoch's (the first one pays for
torch.compile and CUDA-graph capture); the run's average is printed beside it.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from nonlinear_advantage.models import build_model
from nonlinear_advantage.optim import SGD
from nonlinear_advantage.prelu import parameter_groups
from nonlinear_advantage.trainer import train


def random_dataset(path: Path, n: int) -> Path:
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=gen)
    y = torch.randint(0, 10, (n,), generator=gen)
    small = slice(0, 64)
    torch.save(dict(name="random", train_x=x, train_y=y, val_x=x[small], val_y=y[small], test_x=x[small],
                    test_y=y[small], classes=[str(i) for i in range(10)], mean=[0.5], std=[0.29], source="bench",
                    seed=0), path)
    return path


def bare_loop(model_cfg: dict, batch: int, steps: int, in_channels: int, size: int, channels_last: bool) -> float:
    """The same number of steps as one trainer epoch, first step included, like the trainer's figure."""
    torch.manual_seed(0)
    model = build_model(**model_cfg, in_channels=in_channels, num_classes=10).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    opt = SGD(parameter_groups(model, 5e-4), lr=0.05, momentum=0.9, nesterov=True)  # the trainer's optimiser
    x = torch.randn(batch, in_channels, size, size).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,))
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - t0)


def dataloader_loop(data: Path, model_cfg: dict, batch: int, device: str, workers: int) -> float:
    """The plain baseline: a DataLoader (workers, pinned memory) feeding an fp32 NCHW model,
    one host-to-device copy per batch; one epoch, timed after the first batch."""
    from torch.utils.data import DataLoader, TensorDataset

    d = torch.load(data, weights_only=True)
    mean = torch.tensor(d["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(d["std"]).view(1, -1, 1, 1)
    x = (d["train_x"].float() / 255 - mean) / std
    loader = DataLoader(TensorDataset(x, d["train_y"]), batch_size=batch, shuffle=True, drop_last=True,
                        num_workers=workers, pin_memory=device == "cuda", persistent_workers=workers > 0)
    torch.manual_seed(0)
    model = build_model(**model_cfg, in_channels=x.shape[1], num_classes=len(d["classes"])).to(device).train()
    opt = SGD(parameter_groups(model, 5e-4), lr=0.05, momentum=0.9, nesterov=True)  # the trainer's optimiser
    seen, t0 = 0, None
    for i, (xb, yb) in enumerate(loader):
        if i == 1:
            if device == "cuda":
                torch.cuda.synchronize()
            t0, seen = time.perf_counter(), 0
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += len(yb)
    if device == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - t0)


# --settings variants: label and the run-config keys they change. The default set compares
# against each device's `auto` (CPU: fp32, channels_last, eager; CUDA: bf16, channels_last, compiled).
VARIANTS = {
    "nchw": ("NCHW", dict(channels_last=False)),
    "bf16": ("bf16 autocast", dict(precision="bf16")),
    "fp32": ("fp32", dict(precision="fp32")),
    "compile": ("torch.compile", dict(compile=True)),
    "eager": ("no compile", dict(compile=False)),
}
DEFAULT_VARIANTS = {"cpu": "nchw,bf16,compile", "cuda": "nchw,fp32,eager"}


def fresh_compile() -> None:
    """Forget earlier torch.compile graphs of this process, so that each run compiles as on its own
    (dynamo would otherwise recompile the same forward with a dynamic batch size, or hit its
    recompile limit). The on-disk kernel caches stay: that is what a second run of the study sees."""
    if "torch._dynamo" in sys.modules:
        sys.modules["torch._dynamo"].reset()


def trainer_run(data: Path, model_cfg: dict, batch: int, epochs: int, out: Path, device="cpu", **extra) -> dict:
    """The trainer's metrics, with ``steady_images_per_s``: the last epoch's rate when there are
    two or more (history.csv's wall_time_s is cumulative training time), else the run's."""
    cfg = dict(name="bench", data=str(data), model=model_cfg, epochs=epochs, batch_size=batch, lam=10.0,
               device=device, **extra)
    fresh_compile()
    metrics = train(cfg, out, progress=False)
    metrics["steady_images_per_s"] = metrics["images_per_s"]
    with open(out / "history.csv", newline="") as f:
        walls = [float(row["wall_time_s"]) for row in csv.DictReader(f)]
    if len(walls) >= 2 and walls[-1] > walls[-2]:
        n_train = len(torch.load(data, weights_only=True)["train_y"])
        per_epoch = n_train // min(batch, n_train) * min(batch, n_train)
        metrics["steady_images_per_s"] = per_epoch / (walls[-1] - walls[-2])
    return metrics


def rate(m: dict) -> str:
    text = f"{m['steady_images_per_s']:9.0f} images/s"
    if m["steady_images_per_s"] != m["images_per_s"]:
        text += f" (last epoch; {m['images_per_s']:.0f} over the run)"
    return text


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="a prepared dataset (default: random 28x28)")
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2, help="alternate bare/trainer this often; best of each")
    parser.add_argument("--settings", nargs="?", const="default", metavar="LIST",
                        help="also compare variants of the device's defaults; LIST: comma-separated of "
                             f"{', '.join(VARIANTS)} (default: {DEFAULT_VARIANTS})")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--dataloader", action="store_true",
                        help="also time a plain DataLoader loop (the GPU target's baseline)")
    parser.add_argument("--workers", type=int, default=4, help="DataLoader workers (default %(default)s)")
    args = parser.parse_args()
    model_cfg = dict(arch="resnet", depth=args.depth, width=args.width)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = args.data or random_dataset(tmp / "random.pt", 1024)
        sample = torch.load(data, weights_only=True)
        n_train, shape = len(sample["train_y"]), tuple(sample["train_x"].shape[1:])
        print(f"ResNet-{args.depth} width {args.width}, batch {args.batch}, {n_train} images of {shape}, "
              f"{args.epochs} epoch(s), {torch.get_num_threads()} threads, torch {torch.__version__}, "
              f"{torch.cuda.get_device_name() if args.device == 'cuda' else 'cpu'}")
        steps = n_train // args.batch * args.epochs
        bare, ours = 0.0, None
        for i in range(args.repeats):  # alternate, so a load change hits both alike
            if args.device == "cpu":
                bare = max(bare, bare_loop(model_cfg, args.batch, steps, shape[0], shape[1], channels_last=True))
            run = trainer_run(data, model_cfg, args.batch, args.epochs, tmp / f"default{i}", device=args.device)
            ours = run if ours is None or run["steady_images_per_s"] > ours["steady_images_per_s"] else ours
        speed = ours["steady_images_per_s"]
        if bare:
            print(f"bare loop      {bare:9.0f} images/s   (channels_last, like the trainer's CPU default)")
            print(f"trainer        {rate(ours)}   ratio {speed / bare:.3f} "
                  f"(CPU target >= 0.9)   test acc {ours['test_acc']:.4f}")
        else:
            print(f"trainer        {rate(ours)}   test acc {ours['test_acc']:.4f}")
        if args.dataloader:
            try:
                plain = dataloader_loop(data, model_cfg, args.batch, args.device, args.workers)
            except Exception as exc:  # e.g. workers without enough shared memory in a container
                print(f"DataLoader with {args.workers} workers failed ({type(exc).__name__}: "
                      f"{str(exc).splitlines()[0][:100]}); again with 0 workers")
                plain = dataloader_loop(data, model_cfg, args.batch, args.device, 0)
            print(f"DataLoader     {plain:9.0f} images/s   trainer x{speed / plain:.2f} "
                  f"(GPU target >= 3.5 at batch 512)", flush=True)
        if args.settings:
            names = DEFAULT_VARIANTS[args.device] if args.settings == "default" else args.settings
            for key in names.split(","):
                if key not in VARIANTS:
                    parser.error(f"--settings: unknown variant {key!r} (known: {', '.join(VARIANTS)})")
                label, extra = VARIANTS[key]
                try:
                    m = trainer_run(data, model_cfg, args.batch, args.epochs, tmp / key, device=args.device, **extra)
                except Exception as exc:  # a backend that does not work here is a finding, not a crash
                    print(f"{label:14s} failed: {type(exc).__name__}: {str(exc).splitlines()[0][:100]}")
                    continue
                delta = 100 * (m["test_acc"] - ours["test_acc"])
                print(f"{label:14s} {rate(m)}   x{m['steady_images_per_s'] / speed:.2f} vs default   "
                      f"test acc {m['test_acc']:.4f} ({delta:+.2f} pts)", flush=True)


if __name__ == "__main__":
    main()
