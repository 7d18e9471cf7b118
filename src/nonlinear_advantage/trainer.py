"""One training run: resumable, with the data resident on the device.

Bit-for-bit deterministic on the CPU (tested). On CUDA, cuDNN's convolution backward is not,
so runs there agree only statistically.

``python -m nonlinear_advantage train --config RUN.yaml --out DIR`` (or ``--params
params.yaml --run RUN_ID``) writes into DIR:

* ``checkpoint.pt`` every epoch, atomically: model, optimiser, step, epoch, RNG states;
* ``history.csv``, one row per epoch; ``metrics.json``, the final figures;
* ``config.yaml``, the resolved run config.

A hard link ``.resume.pt`` follows ``checkpoint.pt``: Snakemake deletes a failed job's
declared outputs, and the link keeps the last good epoch so the same command resumes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from . import io
from .depth import depth_summary
from .errors import UserError
from .models import build_model, parameter_count
from .prelu import nonlinearity_penalty, parameter_groups, proximal_step_, sparse_prelus

# Every key a run config may hold, with its default. Types are checked against these.
DEFAULTS: dict = {
    "name": "run",
    "data": None,
    "model": {"arch": "resnet", "depth": 20, "width": 16, "activation": "prelu", "slope_init": 0.25},
    "epochs": 10,
    "batch_size": 128,
    "optimizer": {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5.0e-4},
    "schedule": {"kind": "onecycle", "warmup_epochs": 1.0},
    "lam": 0.0,
    "proximal": True,
    "eps": 0.0,
    "augment": {"flip": False, "crop": 0},
    "seed": 0,
    "device": "auto",
    "precision": "auto",
    "channels_last": "auto",
    "compile": "auto",
    "init_from": None,
}
CHOICES = {
    "model.arch": ("resnet", "plain"),
    "model.activation": ("prelu", "relu"),
    "schedule.kind": ("onecycle", "cosine"),
    "device": ("auto", "cpu", "cuda"),
    "precision": ("auto", "fp32", "bf16"),
    "channels_last": ("auto", True, False),
    "compile": ("auto", True, False),
}
NON_NEGATIVE = ("lam", "eps", "optimizer.lr", "optimizer.momentum", "optimizer.weight_decay",
                "schedule.warmup_epochs", "augment.crop", "seed")
POSITIVE = ("epochs", "batch_size", "model.depth", "model.width")
HISTORY_KEYS = ("epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc",
                "penalty", "nonlinear_channels", "apl_normalized", "apl_unnormalized", "wall_time_s")


def _merge_checked(defaults: dict, given: dict, prefix: str = "") -> dict:
    out = copy.deepcopy(defaults)
    for key, value in given.items():
        path = f"{prefix}{key}"
        if key not in defaults:
            raise UserError(f"run config: unknown key {path!r} (allowed: {', '.join(defaults)})")
        default = defaults[key]
        if isinstance(default, dict):
            if not isinstance(value, dict):
                raise UserError(f"run config: {path!r} must be a mapping, got {value!r}")
            out[key] = _merge_checked(default, value, f"{path}.")
        elif path in CHOICES:
            if value not in CHOICES[path]:
                raise UserError(f"run config: {path!r} must be one of {CHOICES[path]}, got {value!r}")
            out[key] = value
        elif default is None or value is None:
            if value is not None and not isinstance(value, str):
                raise UserError(f"run config: {path!r} must be a path, got {value!r}")
            out[key] = value
        else:
            kind = float if isinstance(default, float) else type(default)
            ok = isinstance(value, kind) or (kind is float and isinstance(value, int))
            if not ok or (kind is not bool and isinstance(value, bool)):
                raise UserError(f"run config: {path!r} must be {kind.__name__}, got {value!r}")
            out[key] = float(value) if kind is float else value
    return out


def _get(cfg: dict, dotted: str):
    for part in dotted.split("."):
        cfg = cfg[part]
    return cfg


def validate_config(given: dict, check_files: bool = True) -> dict:
    """The full run config: defaults filled in, every key, type, range and file checked."""
    if not isinstance(given, dict):
        raise UserError(f"run config must be a mapping, got {type(given).__name__}")
    cfg = _merge_checked(DEFAULTS, given)
    for key in NON_NEGATIVE:
        if _get(cfg, key) < 0:
            raise UserError(f"run config: {key!r} must be >= 0, got {_get(cfg, key)}")
    for key in POSITIVE:
        if _get(cfg, key) <= 0:
            raise UserError(f"run config: {key!r} must be > 0, got {_get(cfg, key)}")
    if cfg["data"] is None:
        raise UserError("run config: 'data' (the prepared dataset file) is required")
    if check_files:
        for key in ("data", "init_from"):
            if cfg[key] is not None and not Path(cfg[key]).is_file():
                raise UserError(f"run config: {key!r}: file not found: {cfg[key]}")
    return cfg


def config_digest(cfg: dict, resolved: dict | None = None) -> str:
    """Identity of a run for resuming: everything that changes the result.

    The contents of the data and init_from files count, not only their paths (a re-prepared
    dataset or a retrained dense net must not resume old weights), and so do the settings
    that ``auto`` resolved to on this machine (a GPU run requeued on a CPU starts afresh).
    """
    keep = {k: v for k, v in cfg.items() if k not in ("name",)}
    keep["files"] = {key: cfg[key] and io.file_sha256(cfg[key]) for key in ("data", "init_from")}
    keep["resolved"] = resolved or {}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------- checkpoints

def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint safely (tensors and plain types only); a bad file is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, garbage, unsafe pickle: all mean "not a checkpoint"
        raise UserError(f"checkpoint {path} is corrupt or not a checkpoint ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:200]})") from None


def model_from_checkpoint(ckpt: dict) -> nn.Module:
    m = ckpt["config"]["model"]
    model = build_model(m["arch"], depth=m["depth"], width=m["width"], in_channels=ckpt["input_shape"][0],
                        num_classes=ckpt["num_classes"], activation=m["activation"], slope_init=m["slope_init"])
    model.load_state_dict(ckpt["model"])
    return model


def _save_checkpoint(out: Path, state: dict) -> None:
    ckpt, resume = out / "checkpoint.pt", out / ".resume.pt"
    io.torch_save(state, ckpt)
    with io.atomic_path(resume) as tmp:
        tmp.unlink()
        _link_or_copy(ckpt, tmp)


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # no hard links here: pay for a copy
        target.write_bytes(source.read_bytes())


# ---------------------------------------------------------------------------- data on device

@dataclass
class Split:
    x: torch.Tensor  # float, normalized, on the device
    y: torch.Tensor


def load_splits(path: str, device: torch.device) -> tuple[dict[str, Split], dict]:
    from .data import load_prepared  # the data stage owns the file format

    data = load_prepared(path)
    mean = torch.tensor(data["mean"], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(data["std"], dtype=torch.float32).view(1, -1, 1, 1)

    def split(name):
        x = (data[f"{name}_x"].float() / 255 - mean) / std
        return Split(x.to(device), data[f"{name}_y"].to(device))

    splits = {name: split(name) for name in ("train", "val", "test")}
    info = {"input_shape": list(data["train_x"].shape[1:]), "num_classes": len(data["classes"]),
            "dataset": data["name"]}
    return splits, info


def draw_augmentation(n: int, flip: bool, crop: int, gen: torch.Generator, device) -> dict:
    """One epoch's random flips and crop offsets, drawn on the CPU (deterministic) and moved once."""
    draws = {}
    if flip:
        draws["flip"] = (torch.rand(n, generator=gen) < 0.5).to(device)
    if crop:
        draws["shift"] = torch.randint(0, 2 * crop + 1, (n, 2), generator=gen).to(device)
    return draws


def augment(x: torch.Tensor, draws: dict, crop: int) -> torch.Tensor:
    """Flip and padded crop per sample, batched on x's device; ``draws`` is indexed like x."""
    if "flip" in draws:
        x = torch.where(draws["flip"].view(-1, 1, 1, 1), x.flip(3), x)
    if "shift" in draws:
        n, c, h, w = x.shape
        padded = F.pad(x, (crop,) * 4)
        rows = (draws["shift"][:, :1] + torch.arange(h, device=x.device)).view(n, 1, h, 1)
        cols = (draws["shift"][:, 1:] + torch.arange(w, device=x.device)).view(n, 1, 1, w)
        batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
        x = padded[batch, torch.arange(c, device=x.device).view(1, c, 1, 1), rows, cols]
    return x


# ---------------------------------------------------------------------------- training

def lr_at(cfg: dict, step: int, total: int, steps_per_epoch: int) -> float:
    """Learning rate at a step: linear warm-up, then one-cycle (linear) or cosine decay.

    The warm-up takes at most half the run, so a short run (a post-hoc fine-tune) still decays.
    """
    peak = cfg["optimizer"]["lr"]
    warm = min(total // 2, round(cfg["schedule"]["warmup_epochs"] * steps_per_epoch))
    if step < warm:
        return peak * (step + 1) / (warm + 1)
    frac = (step - warm) / max(1, total - warm)
    if cfg["schedule"]["kind"] == "cosine":
        return peak * 0.5 * (1 + math.cos(math.pi * frac))
    return peak * (1 - frac)


def resolve_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError("run config: 'device' is cuda but no CUDA device is available")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, batch_size: int, autocast) -> tuple[float, float]:
    """Mean loss and accuracy over a split, in eval mode."""
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=split.x.device)
    correct = torch.zeros((), dtype=torch.int64, device=split.x.device)
    chunk = max(batch_size, 512)  # no gradients: bigger batches are free
    for i in range(0, len(split.y), chunk):
        x, y = split.x[i:i + chunk], split.y[i:i + chunk]
        with autocast():
            logits = model(x).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        correct += (logits.argmax(1) == y).sum()
    n = max(1, len(split.y))
    return float(loss_sum) / n, float(correct) / n


class Diverged(UserError):
    pass


class _Progress:
    """A tqdm bar on a terminal, plain log lines otherwise (Snakemake/SLURM logs)."""

    def __init__(self, name: str, epochs: int, start: int):
        self.name, self.bar = name, None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=epochs, initial=start, desc=name, unit="epoch", file=sys.stderr)

    def epoch(self, row: dict) -> None:
        text = (f"loss {row['train_loss']:.4f} train {row['train_acc']:.3f} val {row['val_acc']:.3f} "
                f"test {row['test_acc']:.3f} nonlinear {row['nonlinear_channels']} "
                f"APL {row['apl_normalized']:.2f}")
        if self.bar is not None:
            self.bar.set_postfix_str(text)
            self.bar.update(1)
        else:
            print(f"[{self.name}] epoch {row['epoch']}: {text}", file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _write_history(out: Path, history: list[dict]) -> None:
    io.write_text(out / "history.csv", io.csv_text(history, HISTORY_KEYS))


def train(config: dict, out_dir: str | os.PathLike, *, progress: bool = True) -> dict:
    """Run (or resume) one training run; returns the final metrics."""
    cfg = validate_config(config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = cfg["name"]
    device = resolve_device(cfg["device"])
    on_cuda = device.type == "cuda"
    use_bf16 = cfg["precision"] == "bf16" or (cfg["precision"] == "auto" and on_cuda)
    # channels_last is on by default everywhere: oneDNN convs on the CPU run ~2x faster in it
    # (benchmarks/bench_trainer.py --settings), at the same accuracy.
    channels_last = cfg["channels_last"] in (True, "auto")
    use_compile = cfg["compile"] is True or (cfg["compile"] == "auto" and on_cuda)

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)

    splits, info = load_splits(cfg["data"], device)
    train_set = splits["train"]
    n_train = len(train_set.y)
    batch_size = min(cfg["batch_size"], n_train)
    steps_per_epoch = n_train // batch_size  # drop the ragged tail: BatchNorm needs >1 sample
    total_steps = steps_per_epoch * cfg["epochs"]

    torch.manual_seed(cfg["seed"])
    m = cfg["model"]
    try:
        model = build_model(m["arch"], depth=m["depth"], width=m["width"], in_channels=info["input_shape"][0],
                            num_classes=info["num_classes"], activation=m["activation"],
                            slope_init=m["slope_init"])
    except ValueError as exc:
        raise UserError(f"run config: 'model': {exc}") from None
    if cfg["init_from"]:
        source = load_checkpoint(cfg["init_from"])
        try:
            model.load_state_dict(source["model"])
        except (RuntimeError, KeyError) as exc:
            raise UserError(f"run {name}: init_from {cfg['init_from']} does not fit this model: "
                            f"{str(exc).splitlines()[0]}") from None
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(parameter_groups(model, cfg["optimizer"]["weight_decay"]), lr=cfg["optimizer"]["lr"],
                          momentum=cfg["optimizer"]["momentum"], nesterov=cfg["optimizer"]["nesterov"])
    gen = torch.Generator().manual_seed(cfg["seed"])
    digest = config_digest(cfg, {"device": device.type, "bf16": use_bf16, "channels_last": channels_last,
                                 "compile": use_compile})
    start_epoch, step, history, wall_before = 0, 0, [], 0.0

    resume = out / ".resume.pt"
    if resume.exists():
        ckpt = load_checkpoint(resume)
        if ckpt.get("config_digest") == digest:
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            gen.set_state(ckpt["generator"])
            torch.set_rng_state(ckpt["torch_rng"])
            start_epoch, step, history = ckpt["epoch"], ckpt["step"], ckpt["history"]
            wall_before = ckpt["wall_time_s"]
            print(f"[{name}] resuming from {resume} after epoch {start_epoch}", file=sys.stderr)
        else:
            print(f"[{name}] ignoring {resume}: it belongs to a different config", file=sys.stderr)

    io.write_text(out / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))
    n_slopes = sum(p.numel() for p in (a.slope for a in sparse_prelus(model)))
    example = train_set.x[:1]
    forward = torch.compile(model, mode="reduce-overhead") if use_compile else model
    bar = _Progress(name, cfg["epochs"], start_epoch) if progress else None
    train_time, depth = 0.0, None

    for epoch in range(start_epoch, cfg["epochs"]):
        t0 = time.perf_counter()
        model.train()
        order = torch.randperm(n_train, generator=gen).to(device)
        draws = draw_augmentation(n_train, cfg["augment"]["flip"], cfg["augment"]["crop"], gen, device)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        for i in range(steps_per_epoch):
            idx = order[i * batch_size:(i + 1) * batch_size]
            x, y = train_set.x[idx], train_set.y[idx]
            if draws:
                x = augment(x, {k: v[i * batch_size:(i + 1) * batch_size] for k, v in draws.items()},
                            cfg["augment"]["crop"])
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            lr = lr_at(cfg, step, total_steps, steps_per_epoch)
            for group in opt.param_groups:
                group["lr"] = lr
            with autocast():
                logits = forward(x).float()
            loss = F.cross_entropy(logits, y)
            objective = loss
            if cfg["lam"] > 0 and not cfg["proximal"]:
                objective = loss + cfg["lam"] * nonlinearity_penalty(model)
            opt.zero_grad(set_to_none=True)
            objective.backward()
            opt.step()
            if cfg["lam"] > 0 and cfg["proximal"] and n_slopes:
                # The prox of lr * lam * mean|1-a| shrinks each a_c - 1 by lr * lam / n_slopes.
                proximal_step_(model, lr * cfg["lam"] / n_slopes)
            loss_sum += loss.detach().double() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            step += 1
        seen = steps_per_epoch * batch_size
        train_loss = float(loss_sum) / seen
        train_time += time.perf_counter() - t0
        if not math.isfinite(train_loss):
            raise Diverged(f"run {name} diverged in epoch {epoch + 1}: training loss is {train_loss}; "
                           f"the last good checkpoint (epoch {epoch}) is kept in {out}")
        val_loss, val_acc = evaluate(model, splits["val"], batch_size, autocast)
        test_loss, test_acc = evaluate(model, splits["test"], batch_size, autocast)
        depth = depth_summary(model, example, eps=cfg["eps"])
        row = {
            "epoch": epoch + 1, "lr": lr, "train_loss": train_loss, "train_acc": float(correct) / seen,
            "val_loss": val_loss, "val_acc": val_acc, "test_loss": test_loss, "test_acc": test_acc,
            "penalty": float(nonlinearity_penalty(model).detach()), "nonlinear_channels": depth["nonlinear_channels"],
            "apl_normalized": depth["apl_normalized"], "apl_unnormalized": depth["apl_unnormalized"],
            "wall_time_s": wall_before + train_time,
        }
        history.append(row)
        state = {
            "config": cfg, "config_digest": digest, "epoch": epoch + 1, "step": step,
            "model": model.state_dict(), "optimizer": opt.state_dict(),
            "generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
            "history": history, "wall_time_s": wall_before + train_time,
            "input_shape": info["input_shape"], "num_classes": info["num_classes"], "dataset": info["dataset"],
        }
        _save_checkpoint(out, state)
        _write_history(out, history)
        if bar:
            bar.epoch(row)
    if bar:
        bar.close()
    if depth is None:
        # Resumed after the last epoch (killed before metrics.json): the loop did not run, and
        # Snakemake may have deleted the job's outputs. Restore them from the resume link.
        if not (out / "checkpoint.pt").exists():
            _link_or_copy(resume, out / "checkpoint.pt")
        _write_history(out, history)
        depth = depth_summary(model, example, eps=cfg["eps"])

    model.eval()
    train_loss, train_acc = evaluate(model, train_set, batch_size, autocast)
    last = history[-1]
    metrics = {
        "name": name, "dataset": info["dataset"], "arm": name.split("/")[1] if name.count("/") == 2 else None,
        "lam": cfg["lam"], "seed": cfg["seed"],
        "test_acc": last["test_acc"], "test_loss": last["test_loss"],
        "val_acc": last["val_acc"], "val_loss": last["val_loss"],
        "train_acc": train_acc, "train_loss": train_loss,
        "penalty": last["penalty"],
        "nonlinear_channels": depth["nonlinear_channels"], "total_channels": depth["total_channels"],
        "nonlinear_per_layer": [row["nonlinear"] for row in depth["layers"]],
        "apl_normalized": depth["apl_normalized"], "apl_unnormalized": depth["apl_unnormalized"],
        "params": parameter_count(model), "epochs": cfg["epochs"],
        "wall_time_s": last["wall_time_s"],
        "images_per_s": (cfg["epochs"] - start_epoch) * steps_per_epoch * batch_size / max(train_time, 1e-9),
    }
    io.write_json(out / "metrics.json", metrics)
    resume.unlink(missing_ok=True)  # the run is complete: nothing to resume
    return metrics


# ---------------------------------------------------------------------------- CLI

def load_run_config(args) -> dict:
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise UserError(f"run config not found: {path}")
        try:
            return yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise UserError(f"run config {path} is not valid YAML: {exc}") from None
    if not args.run:
        raise UserError("--params needs --run RUN_ID (e.g. digits/sparse/lam0.01-s0)")
    from .plan import load_params, run_config

    return run_config(load_params(args.params), args.run)


def _cli(args) -> int:
    config = load_run_config(args)
    if args.device:
        config["device"] = args.device
    metrics = train(config, args.out)
    print(json.dumps({k: metrics[k] for k in ("name", "test_acc", "nonlinear_channels", "apl_normalized")}))
    return 0


def add_cli(sub) -> None:
    p = sub.add_parser("train", help="train one run (baseline, dense, sparse or post-hoc)",
                       description="Train one run; resumes from DIR's checkpoint when killed.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="run config YAML (keys: see docs/interfaces.md)")
    src.add_argument("--params", help="params.yaml of the study; use with --run")
    p.add_argument("--run", help="run id within --params, e.g. digits/sparse/lam0.01-s0")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="override the config's device")
    p.set_defaults(func=_cli)
