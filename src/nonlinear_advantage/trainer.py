"""One training run: resumable, with the data resident on the device.

Bit-for-bit deterministic on the CPU (tested). On CUDA, cuDNN's convolution backward is not,
so runs there agree only statistically.

``python -m nonlinear_advantage train --config RUN.yaml --out DIR`` (or ``--params
params.yaml --run RUN_ID``) writes into DIR:

* ``checkpoint.pt`` every epoch, atomically: model, optimiser, step, epoch, RNG states;
* ``history.csv``, one row per epoch; ``metrics.json``, the final figures;
* ``config.yaml``, the resolved run config;
* ``states/NAME.pt`` for each entry of ``save_states``: the full state after that epoch, which
  a run with ``init: state`` continues (the late-start runs continue the dense run after their
  prior's start, the post-hoc and finetune runs after its last epoch).

A hard link ``.resume.pt`` follows ``checkpoint.pt``: Snakemake deletes a failed job's
declared outputs, and the link keeps the last good epoch so the same command resumes
(``.resume-states/`` does the same for the states).

``checkpoint.pt`` holds no wall times, so the same weights give the same bytes (DVC then
reruns nothing after a retrain): timings live in history.csv and metrics.json, and, for a
resume, in the hidden ``.resume-times.json`` beside ``.resume.pt``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from . import cli, fileio, schemas
from .depth import depth_summary
from .errors import UserError
from .models import build_model, builder_path, load_builder, parameter_count
from .optim import SGD
from .prelu import (
    lazy_proximal_step_,
    nonlinearity_penalty,
    parameter_groups,
    prox_threshold,
    proximal_step_,
    sparse_prelus,
)
from .prepared import check_prepared, load_prepared
from .schedule import cycle_epochs, lr_at, steps_per_epoch

# The columns of history.csv and the keys of metrics.json: the contract aggregate, the figures
# and the tests' synthetic study keep to.
HISTORY_KEYS = ("epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc",
                "penalty", "nonlinear_channels", "total_channels", "apl_normalized", "apl_unnormalized",
                "wall_time_s")
METRICS_KEYS = ("name", "dataset", "arm", "lam", "seed", "test_acc", "test_loss", "val_acc", "val_loss",
                "train_acc", "train_loss", "penalty", "nonlinear_channels", "total_channels",
                "nonlinear_per_layer", "apl_normalized", "apl_unnormalized", "params", "epochs",
                "wall_time_s", "images_per_s", "budget_epochs", "prior_start_epoch", "max_prior_shift", "test_size",
                "threads")


def validate_config(given, source: str = "run config", check_files: bool = True) -> dict:
    """The full run config: the schema's defaults filled in, every key, type, range and file checked.

    ``source`` names the file in messages (``runs/x/config.yaml is invalid: optimizer.lr: ...``).
    """
    if not isinstance(given, dict):
        raise UserError(f"{source} must be a mapping, got {type(given).__name__}")
    cfg = schemas.check(given, schemas.RUN, source)
    model = cfg["model"]
    try:
        load_builder(model["builder"] or builder_path(model["arch"]))
    except ValueError as exc:
        raise UserError(f"{source} is invalid:\n  model.{'builder' if model['builder'] else 'arch'}: {exc}") from None
    if cfg["init"] == "state" and not cfg["init_from"]:
        raise UserError(f"{source} is invalid:\n  init: state needs init_from, the state to continue")
    for name, epoch in cfg["save_states"].items():
        if epoch > cfg["epochs"]:  # the last epoch's state may be kept: the post-hoc runs continue it
            raise UserError(f"{source} is invalid:\n  save_states.{name}: {epoch} is after the last epoch "
                            f"({cfg['epochs']})")
    if cfg["epochs"] > cycle_epochs(cfg) and cfg["schedule"].get("tail_lr") is None:
        raise UserError(f"{source} is invalid:\n  schedule.tail_lr: needed, the lr of the epochs after the cycle "
                        f"(schedule.epochs {cycle_epochs(cfg)} of epochs {cfg['epochs']})")
    if check_files:
        for key in ("data", "init_from"):
            if cfg[key] is not None and not Path(cfg[key]).is_file():
                raise UserError(f"{source}: {key}: file not found: {cfg[key]}")
    return cfg


def config_digest(cfg: dict, resolved: dict | None = None) -> str:
    """Identity of a run for resuming: everything that changes the result.

    The contents of the data and init_from files count, not only their paths (a re-prepared
    dataset or a retrained dense net must not resume old weights), and so do the settings
    that ``auto`` resolved to on this machine (a GPU run requeued on a CPU starts afresh).
    """
    keep = {k: v for k, v in cfg.items() if k not in ("name",)}
    keep["files"] = {key: cfg[key] and fileio.file_sha256(cfg[key]) for key in ("data", "init_from")}
    keep["resolved"] = resolved or {}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------- checkpoints

def load_checkpoint(path: str | os.PathLike, hint: str = "") -> dict:
    """Load a checkpoint safely (tensors and plain types only); a bad file is a UserError naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    ckpt = fileio.torch_load(path, "a checkpoint", hint)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise UserError(f"{path}: not a checkpoint: it holds no model" + (f"; {hint}" if hint else ""))
    return ckpt


def model_from_checkpoint(ckpt: dict) -> nn.Module:
    m = ckpt["config"]["model"]
    model = build_model(m["arch"], depth=m["depth"], width=m["width"], in_channels=ckpt["input_shape"][0],
                        num_classes=ckpt["num_classes"], activation=m["activation"], slope_init=m["slope_init"],
                        builder=m.get("builder"))
    model.load_state_dict(ckpt["model"])
    return model


STATES_DIR, KEPT_LINKS = "states", ".resume-states"  # states/NAME.pt, and their links for a resume


def _save_linked(path: Path, link: Path, state: dict) -> None:
    """``state`` to ``path`` and a hard link to it at the hidden ``link``, each atomically."""
    with _writing(path):
        fileio.torch_save(state, path)
    with _writing(link), fileio.atomic_path(link) as tmp:
        tmp.unlink()
        _link_or_copy(path, tmp)


def _writing(path: Path):
    """A full disk or a lost mount mid-run is a UserError naming the file (exit 2, no traceback)."""
    return fileio.writing(path, f"the last good epoch stays in {path.parent / '.resume.pt'} and the same "
                                "command resumes")


# Timings of a run in progress: a list of wall_time_s (one per epoch), beside .resume.pt
# and written before it, so it always covers the epochs .resume.pt holds. Resume restores the
# elapsed training time from it; checkpoint.pt, whose bytes must not depend on the clock, has none.
TIMES_FILE = ".resume-times.json"


def _save_times(s: Session) -> None:
    path = s.out / TIMES_FILE
    with _writing(path):
        fileio.write_json(path, {"config_digest": s.digest, "wall_time_s": [r["wall_time_s"] for r in s.history]})


def _load_times(s: Session, epochs: int) -> list:
    """The wall times of the first ``epochs`` epochs of this run; None where they are lost."""
    try:
        saved = json.loads((s.out / TIMES_FILE).read_text())
        times = saved["wall_time_s"] if saved["config_digest"] == s.digest else []
    except (OSError, ValueError, KeyError, TypeError):
        times = []
    times = list(times[:epochs])
    return times + [None] * (epochs - len(times))


def _interned(obj):
    """A copy of a checkpoint's containers with every string interned, so its bytes depend on its
    values only: pickle writes a string object once and refers back to it after that, and a
    resumed run's strings (the optimizer's "lr", unpickled from .resume.pt) are other objects
    than a fresh run's. Tensors are kept as they are; a dict subclass keeps its attributes
    (a state_dict's _metadata)."""
    if isinstance(obj, str):
        return sys.intern(obj)
    if isinstance(obj, dict):
        out = type(obj)((_interned(k), _interned(v)) for k, v in obj.items())
        if type(obj) is not dict:
            out.__dict__.update(_interned(vars(obj)))
        return out
    if type(obj) in (list, tuple):
        return type(obj)(_interned(v) for v in obj)
    return obj


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


def load_splits(path: str, device: torch.device, expect: dict | None = None) -> tuple[dict[str, Split], dict]:
    """The prepared file's splits on the device, once it is checked against what the run expects."""
    data = load_prepared(path)
    check_prepared(path, data, expect)
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
    fileio.write_text(out / "history.csv", fileio.csv_text(history, HISTORY_KEYS))


def write_metrics(out: Path, metrics: dict) -> None:
    if set(metrics) != set(METRICS_KEYS):
        raise ValueError(f"metrics keys {sorted(set(metrics) ^ set(METRICS_KEYS))} break the contract")
    fileio.write_json(out / "metrics.json", metrics)


def write_config(out: Path, cfg: dict) -> None:
    fileio.write_text(out / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))


@dataclass
class Session:
    """What one run carries from epoch to epoch."""

    cfg: dict
    out: Path
    device: torch.device
    settings: dict  # what "auto" resolved to here: bf16, channels_last, compile
    splits: dict[str, Split]
    info: dict
    model: nn.Module
    forward: Callable  # the model, compiled where that pays
    opt: SGD
    gen: torch.Generator
    digest: str
    batch_size: int
    steps_per_epoch: int
    n_slopes: int
    init_budget: int  # epochs since initialization before this run's first (init_from's: setup)
    start_epoch: int = 0
    step: int = 0
    history: list = field(default_factory=list)
    wall_before: float = 0.0  # training seconds of the epochs before a resume
    train_time: float = 0.0
    prior_shift: float = 0.0  # Σ of the proximal thresholds so far: the most a slope can have moved to 1
    shadows: list | None = None  # prox_form lazy: per PReLU, its slopes' steps summed since the prior came on

    @property
    def name(self) -> str:
        return self.cfg["name"]

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.settings["bf16"])

    def example(self) -> torch.Tensor:
        return self.splits["train"].x[:1]


def resolve_settings(cfg: dict, device: torch.device) -> dict:
    """bf16 and torch.compile on CUDA only; channels_last everywhere unless switched off.

    oneDNN convs on the CPU run ~2x faster in channels_last (benchmarks/bench_trainer.py
    --settings), at the same accuracy.
    """
    on_cuda = device.type == "cuda"
    return {"bf16": cfg["precision"] == "bf16" or (cfg["precision"] == "auto" and on_cuda),
            "channels_last": cfg["channels_last"] in (True, "auto"),
            "compile": cfg["compile"] is True or (cfg["compile"] == "auto" and on_cuda)}


def build(cfg: dict, info: dict) -> tuple[nn.Module, dict | None]:
    """The run's network, with the weights of ``init_from`` when it has one; and that checkpoint."""
    m = cfg["model"]
    torch.manual_seed(cfg["seed"])
    try:
        model = build_model(m["arch"], depth=m["depth"], width=m["width"], in_channels=info["input_shape"][0],
                            num_classes=info["num_classes"], activation=m["activation"],
                            slope_init=m["slope_init"], builder=m["builder"])
    except ValueError as exc:
        raise UserError(f"run {cfg['name']}: model: {exc}") from None
    if cfg["init_from"]:
        source = load_checkpoint(cfg["init_from"])
        misfit = _misfit(model.state_dict(), source["model"])
        try:
            if misfit:
                raise RuntimeError("; ".join(misfit))
            model.load_state_dict(source["model"])
        except (RuntimeError, KeyError) as exc:
            raise UserError(f"run {cfg['name']}: init_from {cfg['init_from']} does not fit this model "
                            f"({m['arch']}, depth {m['depth']}, width {m['width']}, {m['activation']}): "
                            f"{str(exc).splitlines()[0]}") from None
        return model, source
    return model, None


def _misfit(own: dict, theirs: dict, first: int = 3) -> list[str]:
    """How a checkpoint's state dict differs from a model's: the first keys whose shapes differ,
    that the checkpoint lacks, and that the model lacks."""
    def listed(keys: list[str]) -> str:
        return ", ".join(keys[:first]) + (f" and {len(keys) - first} more" if len(keys) > first else "")

    shapes = [f"{k} is {list(getattr(theirs[k], 'shape', []))} in the checkpoint, {list(v.shape)} in the model"
              for k, v in own.items() if k in theirs and tuple(getattr(theirs[k], "shape", ())) != tuple(v.shape)]
    out = [f"{len(shapes)} tensors differ in shape, the first: " + "; ".join(shapes[:first])] if shapes else []
    if missing := [k for k in own if k not in theirs]:
        out.append(f"{len(missing)} keys not in the checkpoint: {listed(missing)}")
    if extra := [k for k in theirs if k not in own]:
        out.append(f"{len(extra)} keys not in the model: {listed(extra)}")
    return out


def setup(cfg: dict, out: Path) -> Session:
    """Data on the device, the model, the optimiser; resumed from ``.resume.pt`` when it is this run's."""
    device = resolve_device(cfg["device"])
    settings = resolve_settings(cfg, device)
    splits, info = load_splits(cfg["data"], device, cfg["data_check"])
    n_train = len(splits["train"].y)
    batch_size = min(cfg["batch_size"], n_train)
    model, source = build(cfg, info)
    # Epochs since initialization before this run's first: a checkpoint's all; a continued state's
    # before its run's own first (it continues that run, whose epochs it counts as its own).
    init_budget = 0 if source is None else source.get("budget_epochs", source["epoch"])
    if source is not None and cfg["init"] == "state":
        init_budget -= source["epoch"]
    model.to(device)
    if settings["channels_last"]:
        model.to(memory_format=torch.channels_last)
    o = cfg["optimizer"]
    opt = SGD(parameter_groups(model, o["weight_decay"]), lr=o["lr"], momentum=o["momentum"], nesterov=o["nesterov"])
    session = Session(
        cfg=cfg, out=out, device=device, settings=settings, splits=splits, info=info, model=model,
        forward=torch.compile(model, mode="reduce-overhead") if settings["compile"] else model, opt=opt,
        gen=torch.Generator().manual_seed(cfg["seed"]), digest=config_digest(cfg, {"device": device.type, **settings}),
        batch_size=batch_size, steps_per_epoch=steps_per_epoch(n_train, batch_size),
        n_slopes=sum(a.slope.numel() for a in sparse_prelus(model)), init_budget=init_budget,
    )
    if source is not None and cfg["init"] == "state":
        _continue(session, source)
    _resume(session)
    return session


# What a run that continues another may set otherwise: its name and place, where it starts and what it
# keeps, its prior (compared where it is on: before the state's epoch), its length (its lr cycle's span
# is compared instead) and the runtime switches (they change the bits, not what is computed).
_NOT_PREFIX = ("name", "fields", "init_from", "init", "save_states", "lam", "prior_start_epoch", "prox_form", "epochs",
               "threads", "device", "precision", "channels_last", "compile")


def _prefix(cfg: dict, epoch: int) -> dict:
    """What decides a run's first ``epoch`` epochs: its config, with its lr cycle's span in place of its
    length and the lr after the cycle only where it falls before then, and its prior only where it is on
    before then. A post-hoc run (cycle B, then tail_lr) is so the dense run of B epochs up to B."""
    out = {key: value for key, value in cfg.items() if key not in _NOT_PREFIX}
    schedule = dict(cfg.get("schedule") or {})
    schedule["epochs"] = schedule.get("epochs") or cfg.get("epochs")
    if schedule["epochs"] is None or schedule["epochs"] >= epoch:
        schedule.pop("tail_lr", None)
        schedule.pop("tail", None)
    lam, start = cfg.get("lam", 0.0), cfg.get("prior_start_epoch", 0)
    prior = (lam, start, cfg.get("prox_form", "step")) if lam > 0 and start < epoch else None
    return out | {"schedule": schedule, "prior": prior}


def _continue(s: Session, ckpt: dict) -> None:
    """``init: state``: go on from the state another run kept, as a resume of that run would, after
    checking that this run's first epochs are that run's."""
    epoch, theirs, path = ckpt["epoch"], ckpt.get("config") or {}, s.cfg["init_from"]
    if epoch >= s.cfg["epochs"]:
        raise UserError(f"run {s.name}: init_from {path} holds epoch {epoch} of {s.cfg['epochs']}: nothing to train")
    mine, prefix = _prefix(s.cfg, epoch), _prefix(theirs, epoch)
    differ = sorted(key for key in mine.keys() | prefix.keys() if mine.get(key) != prefix.get(key))
    if differ:
        raise UserError(f"run {s.name}: init_from {path} is the state of run {theirs.get('name')} after epoch "
                        f"{epoch}, whose config differs from this run's in those epochs: {', '.join(differ)}")
    _load_state(s, ckpt, [None] * len(ckpt["history"]))  # its timings are the other run's
    print(f"[{s.name}] continuing run {theirs['name']} from {path} after epoch {epoch}", file=sys.stderr)


def _load_state(s: Session, ckpt: dict, times: list) -> None:
    """Model, optimiser, RNGs, step, epoch, history (with ``times``, None where lost) and prior shift."""
    s.model.load_state_dict(ckpt["model"])
    s.opt.load_state_dict(ckpt["optimizer"])
    s.gen.set_state(ckpt["generator"])
    torch.set_rng_state(ckpt["torch_rng"])
    s.start_epoch, s.step = ckpt["epoch"], ckpt["step"]
    s.history = [{**row, "wall_time_s": t} for row, t in zip(ckpt["history"], times, strict=True)]
    s.wall_before = times[-1] if times and times[-1] is not None else 0.0
    s.prior_shift = ckpt["prior_shift"]
    shadows = ckpt.get("slope_shadows")
    s.shadows = None if shadows is None else [z.to(s.device) for z in shadows]


def _resume(s: Session) -> None:
    resume = s.out / ".resume.pt"
    if not resume.exists():
        return
    ckpt = load_checkpoint(resume, hint=f"delete it to start run {s.name} afresh")
    if ckpt.get("config_digest") != s.digest:
        print(f"[{s.name}] ignoring {resume}: it belongs to a different config", file=sys.stderr)
        return
    if "momentum_buffers" not in ckpt.get("optimizer", {}):  # torch.optim's state: an older version wrote it
        print(f"[{s.name}] ignoring {resume}: written by an older version of the trainer", file=sys.stderr)
        return
    # The checkpoint's history has no timings: they come back from the times file (None if lost,
    # and then the run's wall_time_s counts the training time since this resume only).
    _load_state(s, ckpt, _load_times(s, len(ckpt["history"])))
    print(f"[{s.name}] resuming from {resume} after epoch {s.start_epoch}", file=sys.stderr)


def train_epoch(s: Session, epoch: int) -> dict:
    """One pass over the training split: SGD steps, each followed by the proximal step of the prior
    once the prior is on (from ``prior_start_epoch``)."""
    cfg, train_set = s.cfg, s.splits["train"]
    prior = cfg["lam"] > 0 and epoch >= cfg["prior_start_epoch"]
    s.model.train()
    n, batch = len(train_set.y), s.batch_size
    order = torch.randperm(n, generator=s.gen).to(s.device)
    draws = draw_augmentation(n, cfg["augment"]["flip"], cfg["augment"]["crop"], s.gen, s.device)
    lazy = cfg["prox_form"] == "lazy"
    slopes = [m.slope for m in sparse_prelus(s.model)]
    loss_sum = torch.zeros((), dtype=torch.float64, device=s.device)
    correct = torch.zeros((), dtype=torch.int64, device=s.device)
    for i in range(s.steps_per_epoch):
        idx = order[i * batch:(i + 1) * batch]
        x, y = train_set.x[idx], train_set.y[idx]
        if draws:
            x = augment(x, {k: v[i * batch:(i + 1) * batch] for k, v in draws.items()}, cfg["augment"]["crop"])
        if s.settings["channels_last"]:
            x = x.contiguous(memory_format=torch.channels_last)
        lr = lr_at(cfg, s.step, s.steps_per_epoch)
        slope_lr = lr * cfg["optimizer"]["slope_lr_scale"]
        for group in s.opt.param_groups:
            group["lr"] = slope_lr if group["name"] == "slopes" else lr
        with s.autocast():
            logits = s.forward(x).float()
        loss = F.cross_entropy(logits, y)
        objective = loss
        if prior and not cfg["proximal"]:
            objective = loss + cfg["lam"] * nonlinearity_penalty(s.model)
        s.opt.zero_grad(set_to_none=True)
        objective.backward()
        prox = prior and cfg["proximal"] and s.n_slopes
        if prox and lazy:
            before = [slope.detach().clone() for slope in slopes]
            if s.shadows is None:  # the prior's first step: the shadows start at the slopes
                s.shadows = [b.clone() for b in before]
        s.opt.step()
        if prox:
            # The prox of λ·mean|1-a| under momentum: its fixed point is the stated objective's.
            threshold = prox_threshold(slope_lr, cfg["lam"], s.n_slopes, cfg["optimizer"]["momentum"])
            s.prior_shift += threshold
            if lazy:
                lazy_proximal_step_(slopes, s.shadows, before, s.prior_shift)
            else:
                proximal_step_(s.model, threshold)
        loss_sum += loss.detach().double() * len(y)
        correct += (logits.detach().argmax(1) == y).sum()
        s.step += 1
    seen = s.steps_per_epoch * batch
    return {"lr": lr, "train_loss": float(loss_sum) / seen, "train_acc": float(correct) / seen}


def evaluate_epoch(s: Session, epoch: int, stats: dict) -> tuple[dict, dict]:
    """The history row of an epoch (validation, test, penalty, depth) and the depth summary."""
    if not math.isfinite(stats["train_loss"]):
        raise Diverged(f"run {s.name} diverged in epoch {epoch + 1}: training loss is {stats['train_loss']}; "
                       f"the last good checkpoint (epoch {epoch}) is kept in {s.out}")
    val_loss, val_acc = evaluate(s.model, s.splits["val"], s.batch_size, s.autocast)
    test_loss, test_acc = evaluate(s.model, s.splits["test"], s.batch_size, s.autocast)
    depth = depth_summary(s.model, s.example(), eps=s.cfg["eps"])
    row = {
        "epoch": epoch + 1, **stats, "val_loss": val_loss, "val_acc": val_acc, "test_loss": test_loss,
        "test_acc": test_acc, "penalty": float(nonlinearity_penalty(s.model).detach()),
        "nonlinear_channels": depth["nonlinear_channels"], "total_channels": depth["total_channels"],
        "apl_normalized": depth["apl_normalized"], "apl_unnormalized": depth["apl_unnormalized"],
        "wall_time_s": s.wall_before + s.train_time,
    }
    return {k: row[k] for k in HISTORY_KEYS}, depth


def save_checkpoint(s: Session) -> None:
    """After an epoch: the states to keep after it, checkpoint.pt (and the .resume.pt link), then
    history.csv, each atomically. The states come first: a run killed before its checkpoint
    trains the epoch again, and writes them again."""
    last = s.history[-1]
    state = {
        "config": s.cfg, "config_digest": s.digest, "epoch": last["epoch"], "step": s.step,
        "model": s.model.state_dict(), "optimizer": s.opt.state_dict(),
        "generator": s.gen.get_state(), "torch_rng": torch.get_rng_state(),
        "history": [{k: v for k, v in row.items() if k != "wall_time_s"} for row in s.history],
        "prior_shift": s.prior_shift, "slope_shadows": s.shadows, "budget_epochs": s.init_budget + last["epoch"],
        "input_shape": s.info["input_shape"], "num_classes": s.info["num_classes"], "dataset": s.info["dataset"],
    }
    _save_times(s)  # first: the times file covers every epoch that .resume.pt holds
    for name in [name for name, epoch in s.cfg["save_states"].items() if epoch == last["epoch"]]:
        # Without the names of the other states kept: one more late start leaves this file's bytes.
        kept = {k: v for k, v in state.items() if k != "config_digest"}
        kept["config"] = {k: v for k, v in s.cfg.items() if k != "save_states"}
        _save_linked(s.out / STATES_DIR / f"{name}.pt", s.out / KEPT_LINKS / f"{name}.pt", _interned(kept))
    _save_linked(s.out / "checkpoint.pt", s.out / ".resume.pt", _interned(state))
    with _writing(s.out / "history.csv"):
        _write_history(s.out, s.history)


def finish(s: Session, depth: dict | None) -> dict:
    """metrics.json from the last epoch; outputs restored when resumed after the last epoch."""
    resume = s.out / ".resume.pt"
    if depth is None:
        # Resumed after the last epoch (killed before metrics.json): no epoch ran, and Snakemake
        # may have deleted the job's outputs. Restore them from the resume link.
        if not (s.out / "checkpoint.pt").exists():
            _link_or_copy(resume, s.out / "checkpoint.pt")
        _write_history(s.out, s.history)
        depth = depth_summary(s.model, s.example(), eps=s.cfg["eps"])
    _restore_states(s)
    s.model.eval()
    train_loss, train_acc = evaluate(s.model, s.splits["train"], s.batch_size, s.autocast)
    last, cfg = s.history[-1], s.cfg
    metrics = {
        "name": s.name, "dataset": s.info["dataset"], "arm": cfg["fields"].get("arm"),
        "lam": cfg["lam"], "seed": cfg["seed"],
        "test_acc": last["test_acc"], "test_loss": last["test_loss"],
        "val_acc": last["val_acc"], "val_loss": last["val_loss"],
        "train_acc": train_acc, "train_loss": train_loss,
        "penalty": last["penalty"],
        "nonlinear_channels": depth["nonlinear_channels"], "total_channels": depth["total_channels"],
        "nonlinear_per_layer": [row["nonlinear"] for row in depth["layers"]],
        "apl_normalized": depth["apl_normalized"], "apl_unnormalized": depth["apl_unnormalized"],
        "params": parameter_count(s.model), "epochs": cfg["epochs"],
        "wall_time_s": last["wall_time_s"],
        "images_per_s": (cfg["epochs"] - s.start_epoch) * s.steps_per_epoch * s.batch_size
        / max(s.train_time, 1e-9),
        "budget_epochs": s.init_budget + cfg["epochs"], "prior_start_epoch": cfg["prior_start_epoch"],
        "max_prior_shift": s.prior_shift, "test_size": len(s.splits["test"].y),
        "threads": cfg["threads"],
    }
    write_metrics(s.out, metrics)
    resume.unlink(missing_ok=True)  # the run is complete: nothing to resume
    (s.out / TIMES_FILE).unlink(missing_ok=True)
    shutil.rmtree(s.out / KEPT_LINKS, ignore_errors=True)
    return metrics


def _restore_states(s: Session) -> None:
    """The kept states a resumed run did not write again (Snakemake deleted them with the failed
    job's outputs, DVC before rerunning the stage), from their links."""
    for name, epoch in s.cfg["save_states"].items():
        path, link = s.out / STATES_DIR / f"{name}.pt", s.out / KEPT_LINKS / f"{name}.pt"
        if not path.exists():
            if not link.exists():
                raise UserError(f"run {s.name}: the state after epoch {epoch} ({path}) is lost; delete "
                                f"{s.out / '.resume.pt'} to train the run afresh")
            with _writing(path):
                path.parent.mkdir(exist_ok=True)
                _link_or_copy(link, path)


def set_threads(n: int) -> None:
    """torch's threads, from the run config: the thread count changes the order of float sums and
    so the bytes of the result, so every tool and machine must train with the same count."""
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)  # no effect on results; settable once, before any parallel work
    except RuntimeError:
        pass


def train(config: dict, out_dir: str | os.PathLike, *, progress: bool = True, source: str = "run config") -> dict:
    """Run (or resume) one training run; returns the final metrics."""
    cfg = validate_config(config, source)
    out = Path(out_dir)
    made = [path for path in (out, *out.parents) if not path.exists()]  # deepest first
    fileio.check_writable(out)  # before any work, not after the first epoch
    set_threads(cfg["threads"])
    try:
        s = setup(cfg, out)
    except UserError:  # bad data or init_from: leave no empty run directory behind
        for path in made:
            try:
                path.rmdir()
            except OSError:  # not empty: something else is in it
                break
        raise
    write_config(out, cfg)
    bar = _Progress(s.name, cfg["epochs"], s.start_epoch) if progress else None
    depth = None
    for epoch in range(s.start_epoch, cfg["epochs"]):
        t0 = time.perf_counter()
        stats = train_epoch(s, epoch)
        s.train_time += time.perf_counter() - t0
        row, depth = evaluate_epoch(s, epoch, stats)
        s.history.append(row)
        save_checkpoint(s)
        if bar:
            bar.epoch(row)
    if bar:
        bar.close()
    return finish(s, depth)


# ---------------------------------------------------------------------------- CLI

def load_run_config(args) -> tuple[dict, str]:
    """The run config and the name of where it came from, for messages."""
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise UserError(f"run config not found: {path}")
        try:
            return yaml.safe_load(path.read_text()) or {}, str(path)
        except yaml.YAMLError as exc:
            raise UserError(f"run config {path} is not valid YAML: {exc}") from None
    if not args.run:
        raise UserError("--params needs --run RUN_ID (e.g. digits/sparse/shift0.9-s0)")
    # The plan resolves the run on the CLI's side: it is not the trainer's code (cli.py).
    return cli.run_config(args.params, args.run), f"run {args.run} of {args.params}"


def _cli(args) -> int:
    config, source = load_run_config(args)
    if args.device:
        config["device"] = args.device
    metrics = train(config, args.out, source=source)
    print(json.dumps({k: metrics[k] for k in ("name", "test_acc", "nonlinear_channels", "apl_normalized")}))
    return 0


def add_cli(sub) -> None:
    p = sub.add_parser("train", help="train one run (baseline, dense, sparse or post-hoc)",
                       description="Train one run; resumes from DIR's checkpoint when killed.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="run config YAML (keys: see docs/interfaces.md)")
    src.add_argument("--params", help="params.yaml of the study; use with --run")
    p.add_argument("--run", help="run id within --params, e.g. digits/sparse/shift0.9-s0")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="override the config's device")
    p.set_defaults(func=_cli)
