"""One training run: determinism, resume after a real kill, safe loading, divergence, post-hoc."""

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from nonlinear_advantage import cli, schedule
from nonlinear_advantage.errors import UserError
from nonlinear_advantage.models import build_model
from nonlinear_advantage.optim import SGD
from nonlinear_advantage.prelu import parameter_groups
from nonlinear_advantage.schedule import lr_at
from nonlinear_advantage.trainer import augment, draw_augmentation, load_checkpoint, train, validate_config

REPO = Path(__file__).resolve().parents[1]


def make_dataset(path: Path, n_train=192, n_eval=48, size=8, classes=3, seed=0) -> Path:
    """A learnable toy problem in the prepared-dataset format: one bright quadrant per class."""
    gen = torch.Generator().manual_seed(seed)

    def split(n):
        y = torch.randint(0, classes, (n,), generator=gen)
        x = torch.rand(n, 1, size, size, generator=gen) * 100
        for c in range(classes):
            r, q = divmod(c, 2)
            x[y == c, :, r * size // 2:(r + 1) * size // 2, q * size // 2:(q + 1) * size // 2] += 40
        return x.to(torch.uint8), y

    (tx, ty), (vx, vy), (sx, sy) = split(n_train), split(n_eval), split(n_eval)
    torch.save(dict(name="toy", train_x=tx, train_y=ty, val_x=vx, val_y=vy, test_x=sx, test_y=sy,
                    classes=[f"c{i}" for i in range(classes)], mean=[0.4], std=[0.25], source="test", seed=seed),
               path)
    return path


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data") / "toy.pt")


def config(data, **overrides):
    cfg = dict(name="toy/sparse/test", data=str(data), model=dict(arch="resnet", depth=8, width=4),
               epochs=3, batch_size=32, lam=0.0, seed=0, device="cpu")
    cfg.update(overrides)
    return cfg


def test_writes_checkpoint_metrics_history_and_config(toy_data, tmp_path):
    metrics = train(config(toy_data), tmp_path, progress=False)
    assert {p.name for p in tmp_path.iterdir()} == {"checkpoint.pt", "metrics.json", "history.csv", "config.yaml"}
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    for key in ("test_acc", "train_acc", "test_loss", "train_loss", "penalty", "nonlinear_channels",
                "nonlinear_per_layer", "apl_normalized", "apl_unnormalized", "params", "wall_time_s", "images_per_s"):
        assert key in metrics
    assert metrics["test_acc"] > 0.6  # the toy problem is learnable in 3 epochs
    assert metrics["nonlinear_channels"] == sum(metrics["nonlinear_per_layer"]) == metrics["total_channels"]
    assert len((tmp_path / "history.csv").read_text().splitlines()) == 1 + 3
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["model"]["depth"] == 8
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["epoch"] == 3 and set(ckpt) >= {"model", "optimizer", "generator", "torch_rng", "step"}


def test_same_config_and_seed_give_bit_identical_weights(toy_data, tmp_path):
    cfg = config(toy_data, lam=20.0, augment=dict(flip=True, crop=1))
    a, b = train(cfg, tmp_path / "a", progress=False), train(cfg, tmp_path / "b", progress=False)
    wa = load_checkpoint(tmp_path / "a" / "checkpoint.pt")["model"]
    wb = load_checkpoint(tmp_path / "b" / "checkpoint.pt")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    timing = ("wall_time_s", "images_per_s")
    assert {k: v for k, v in a.items() if k not in timing} == {k: v for k, v in b.items() if k not in timing}
    c = train(dict(cfg, seed=1), tmp_path / "c", progress=False)
    assert c["train_loss"] != a["train_loss"]


def test_the_same_run_gives_the_same_checkpoint_bytes(toy_data, tmp_path):
    """No wall times in checkpoint.pt: a retrain to the same weights changes no byte of it, so DVC
    reruns nothing after it. The timings stay in history.csv and metrics.json."""
    cfg = config(toy_data, epochs=2, lam=20.0)
    a, b = train(cfg, tmp_path / "a", progress=False), train(cfg, tmp_path / "b", progress=False)
    assert (tmp_path / "a" / "checkpoint.pt").read_bytes() == (tmp_path / "b" / "checkpoint.pt").read_bytes()
    ckpt = load_checkpoint(tmp_path / "a" / "checkpoint.pt")
    assert "wall_time_s" not in ckpt and not any("wall_time_s" in row for row in ckpt["history"])
    assert a["wall_time_s"] > 0 and b["wall_time_s"] > 0
    assert "wall_time_s" in (tmp_path / "a" / "history.csv").read_text().splitlines()[0]
    assert {p.name for p in (tmp_path / "a").iterdir()} == {"checkpoint.pt", "metrics.json", "history.csv",
                                                           "config.yaml"}  # no resume state left


def test_threads_come_from_the_run_config(toy_data, tmp_path):
    """The thread count changes the bytes: it is set from the config and recorded with the run."""
    before = torch.get_num_threads()
    try:
        metrics = train(config(toy_data, epochs=1, threads=2), tmp_path, progress=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert metrics["threads"] == 2
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["threads"] == 2
    assert validate_config(config(toy_data))["threads"] == 1  # the schema's default


def _train_command(cfg_path, out):
    return [sys.executable, "-m", "nonlinear_advantage", "train", "--config", str(cfg_path), "--out", str(out)]


def test_resume_after_a_kill_is_bit_identical(tmp_path):
    data = make_dataset(tmp_path / "bigger.pt", n_train=1024, size=12)
    # The lazy prox: its shadows (the slopes' summed steps) must come back with the resume.
    cfg = config(data, epochs=6, lam=0.5, prox_form="lazy", augment=dict(flip=True, crop=1))
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, OMP_NUM_THREADS="1")

    reference = tmp_path / "reference"
    subprocess.run(_train_command(cfg_path, reference), check=True, env=env, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_train_command(cfg_path, killed), env=env, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline:  # kill once two epochs are checkpointed
        history = killed / "history.csv"
        if history.exists() and len(history.read_text().splitlines()) >= 3:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "metrics.json").exists()
    interrupted_at = load_checkpoint(killed / "checkpoint.pt")["epoch"]
    assert 2 <= interrupted_at < 6

    # Snakemake deletes a failed job's outputs; the hidden hard link must still resume it.
    (killed / "checkpoint.pt").unlink()
    done = subprocess.run(_train_command(cfg_path, killed), env=env, capture_output=True, text=True, check=True)
    assert f"resuming from {killed / '.resume.pt'} after epoch {interrupted_at}" in done.stderr
    assert not (killed / ".resume.pt").exists()
    ref, res = (load_checkpoint(d / "checkpoint.pt") for d in (reference, killed))
    assert all(torch.equal(ref["model"][k], res["model"][k]) for k in ref["model"])
    assert 0 < json.loads((reference / "metrics.json").read_text())["nonlinear_channels"] < sum(
        z.numel() for z in ref["slope_shadows"])  # some channels linear, some not: the shadows matter
    assert (reference / "checkpoint.pt").read_bytes() == (killed / "checkpoint.pt").read_bytes()
    # The elapsed time survives the kill (from .resume-times.json), though checkpoint.pt holds none.
    times = [float(line.split(",")[-1]) for line in (killed / "history.csv").read_text().splitlines()[1:]]
    assert times == sorted(times) and times[0] > 0
    assert json.loads((killed / "metrics.json").read_text())["wall_time_s"] == times[-1]
    assert not (killed / ".resume-times.json").exists()
    assert (reference / "history.csv").read_text().split("wall")[0] == (killed / "history.csv").read_text().split(
        "wall")[0]
    m_ref, m_res = (json.loads((d / "metrics.json").read_text()) for d in (reference, killed))
    assert m_ref["test_acc"] == m_res["test_acc"] and m_ref["train_loss"] == m_res["train_loss"]


def test_resume_state_of_another_config_is_ignored(toy_data, tmp_path):
    train(config(toy_data, epochs=1), tmp_path, progress=False)
    (tmp_path / "checkpoint.pt").rename(tmp_path / ".resume.pt")
    metrics = train(config(toy_data, epochs=2), tmp_path, progress=False)
    assert metrics["epochs"] == 2 and load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 2


@pytest.mark.parametrize("damage", ["truncate", "garbage", "unsafe_pickle"])
def test_corrupt_checkpoint_gives_a_clear_error(toy_data, tmp_path, damage, capsys):
    train(config(toy_data, epochs=1), tmp_path, progress=False)
    ckpt = tmp_path / "checkpoint.pt"
    if damage == "truncate":
        ckpt.write_bytes(ckpt.read_bytes()[:500])
    elif damage == "garbage":
        ckpt.write_bytes(b"not a checkpoint at all")
    else:
        torch.save({"model": {}, "evil": Path("/")}, ckpt)  # arbitrary objects are refused
    with pytest.raises(UserError, match="checkpoint.pt: not a checkpoint"):
        load_checkpoint(ckpt)
    assert cli.main(["measure", "--run", str(tmp_path), "--out", str(tmp_path / "depth.json")]) == 2
    err = capsys.readouterr().err
    assert "not a checkpoint" in err and "Traceback" not in err and "weights_only" not in err


def test_divergence_names_run_and_epoch_and_keeps_last_good_checkpoint(toy_data, tmp_path, monkeypatch):
    real = torch.nn.functional.cross_entropy
    calls = {"train": 0}

    def poisoned(logits, y, **kw):
        if logits.requires_grad:
            calls["train"] += 1
            if calls["train"] > 6:  # epoch 1 has 192 // 32 = 6 steps; epoch 2 blows up
                return real(logits, y, **kw) * float("nan")
        return real(logits, y, **kw)

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", poisoned)
    with pytest.raises(UserError, match=r"run toy/sparse/test diverged in epoch 2: training loss is nan"):
        train(config(toy_data), tmp_path, progress=False)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1
    assert not (tmp_path / "metrics.json").exists()


def test_posthoc_from_a_dense_checkpoint_lowers_nonlinear_channels(toy_data, tmp_path):
    dense = train(config(toy_data, epochs=3, name="toy/dense"), tmp_path / "dense", progress=False)
    post = train(config(toy_data, epochs=2, lam=60.0, name="toy/posthoc",
                        init_from=str(tmp_path / "dense" / "checkpoint.pt")), tmp_path / "post", progress=False)
    train(config(toy_data, epochs=2, lam=60.0, name="toy/scratch"), tmp_path / "scratch", progress=False)
    assert post["nonlinear_channels"] < dense["nonlinear_channels"]
    assert post["apl_normalized"] < dense["apl_normalized"]
    first_epoch = lambda d: float((d / "history.csv").read_text().splitlines()[1].split(",")[3])  # noqa: E731
    assert first_epoch(tmp_path / "post") > first_epoch(tmp_path / "scratch")  # it starts from trained weights


# ---- late starts: a run whose prior starts at epoch s continues the dense run's state after s

LATE = dict(epochs=4, augment=dict(flip=True, crop=1))  # the prior on from epoch 2 of 4
TIMINGS = ("wall_time_s", "images_per_s")


def dense_and_late(data) -> tuple[dict, dict]:
    return (config(data, name="toy/dense", save_states={"at0.5": 2, "end": 4}, **LATE),
            config(data, name="toy/late", lam=20.0, prior_start_epoch=2, **LATE))


def posthoc_config(data, **schedule) -> dict:
    """A post-hoc run: the dense run's cycle of 4 epochs, then 2 more at a constant lr, the prior on."""
    return config(data, name="toy/posthoc", lam=20.0, prior_start_epoch=4, **(LATE | {"epochs": 6}),
                  schedule={"epochs": 4, "tail_lr": 0.01, **schedule})


@pytest.fixture(scope="module")
def dense_run(toy_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("dense")
    train(dense_and_late(toy_data)[0], out, progress=False)
    return out


def training_state(path) -> dict:
    """A checkpoint less its config and the config's digest, which name the run and where it started."""
    return {k: v for k, v in load_checkpoint(path).items() if k not in ("config", "config_digest")}


def same(a, b) -> bool:
    """Equal, tensors bit for bit (and of the same dtype), through dicts, lists and tuples."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    return a == b


def without_timings(run: Path) -> tuple[list[str], dict]:
    """history.csv's rows less their wall time (the last column), and metrics.json less its timings."""
    rows = [line.rsplit(",", 1)[0] for line in (run / "history.csv").read_text().splitlines()]
    metrics = json.loads((run / "metrics.json").read_text())
    return rows, {k: v for k, v in metrics.items() if k not in TIMINGS}


@pytest.mark.parametrize("prox_form", ["step", "lazy"])  # lazy: its shadows start at the state's slopes
def test_a_late_run_continued_from_the_dense_state_is_the_run_from_scratch(toy_data, dense_run, tmp_path, capsys,
                                                                          prox_form):
    """The dense run keeps its full state after epoch s (save_states); the late run continued from it
    (init: state) is bit for bit the late run trained from scratch with the prior off until s."""
    assert {p.name for p in dense_run.iterdir()} == {"checkpoint.pt", "metrics.json", "history.csv", "config.yaml",
                                                     "states"}  # no links for a resume left
    state = dense_run / "states" / "at0.5.pt"
    kept = load_checkpoint(state)
    assert kept["epoch"] == 2 and kept["step"] == 2 * 6 and kept["budget_epochs"] == 2
    assert kept["optimizer"]["momentum_buffers"] and "save_states" not in kept["config"]
    late = dense_and_late(toy_data)[1] | {"prox_form": prox_form}
    train(late, tmp_path / "scratch", progress=False)
    metrics = train(dict(late, init_from=str(state), init="state"), tmp_path / "continued", progress=False)
    assert "[toy/late] continuing run toy/dense from" in capsys.readouterr().err
    # model, optimiser with its momentum, step, epoch, RNGs, history, prior shift, budget: all the same
    scratch, continued = (training_state(tmp_path / d / "checkpoint.pt") for d in ("scratch", "continued"))
    assert scratch.keys() == continued.keys() and same(scratch, continued)
    assert without_timings(tmp_path / "scratch") == without_timings(tmp_path / "continued")
    assert metrics["budget_epochs"] == 4 and metrics["prior_start_epoch"] == 2 and metrics["max_prior_shift"] > 0
    # It trained epochs 3 and 4 only: the first two rows' wall times are the dense run's, not its own.
    times = [line.rsplit(",", 1)[1] for line in (tmp_path / "continued" / "history.csv").read_text().splitlines()]
    assert times[1:3] == ["", ""] and all(float(t) > 0 for t in times[3:])


@pytest.mark.parametrize("prox_form", ["step", "lazy"])
def test_a_posthoc_run_continued_from_the_dense_final_state_is_the_run_from_scratch(toy_data, dense_run, tmp_path,
                                                                                   prox_form):
    """The dense run keeps its state after its last epoch (end); a post-hoc run continues it for 2 more
    epochs at its tail lr, bit for bit the run of 6 epochs from scratch with the same cycle of 4."""
    kept = load_checkpoint(dense_run / "states" / "end.pt")
    assert kept["epoch"] == 4 and kept["config"]["name"] == "toy/dense" and "save_states" not in kept["config"]
    assert same(kept["model"], load_checkpoint(dense_run / "checkpoint.pt")["model"])
    posthoc = posthoc_config(toy_data) | {"prox_form": prox_form}
    train(posthoc, tmp_path / "scratch", progress=False)
    metrics = train(dict(posthoc, init_from=str(dense_run / "states" / "end.pt"), init="state"),
                    tmp_path / "continued", progress=False)
    scratch, continued = (training_state(tmp_path / d / "checkpoint.pt") for d in ("scratch", "continued"))
    assert scratch.keys() == continued.keys() and same(scratch, continued)
    assert without_timings(tmp_path / "scratch") == without_timings(tmp_path / "continued")
    assert metrics["budget_epochs"] == 6 and metrics["prior_start_epoch"] == 4
    assert kept["prior_shift"] == 0 < metrics["max_prior_shift"]
    lrs = [float(line.split(",")[1]) for line in (tmp_path / "continued" / "history.csv").read_text().splitlines()[1:]]
    assert lrs[4:] == [0.01, 0.01] and lrs[3] < 0.01  # the cycle ends at 0; then the tail's constant lr


@pytest.mark.parametrize("schedule", [{"epochs": 5}, {"epochs": 3}])
def test_a_posthoc_run_of_another_cycle_is_refused(toy_data, dense_run, tmp_path, schedule):
    posthoc = posthoc_config(toy_data, **schedule) | {"init_from": str(dense_run / "states" / "end.pt"),
                                                      "init": "state"}
    with pytest.raises(UserError, match=r"toy/posthoc: init_from .*end\.pt is the state of run toy/dense after "
                                        r"epoch 4, whose config differs from this run's in those epochs: schedule$"):
        train(posthoc, tmp_path / "posthoc", progress=False)


@pytest.mark.parametrize("change, differs", [
    ({"optimizer": {"lr": 0.05}}, "optimizer"),
    ({"prior_start_epoch": 1}, "prior"),  # its prior on before the state's epoch: not the dense run there
    ({"prior_start_epoch": 1, "lam": 0.0, "prox_form": "lazy"}, None),  # no prior: the prox form is moot
    ({"augment": {"flip": False, "crop": 1}}, "augment"),
])
def test_a_state_whose_run_differs_before_it_is_refused(toy_data, dense_run, tmp_path, change, differs):
    late = dense_and_late(toy_data)[1] | change | {"init_from": str(dense_run / "states" / "at0.5.pt"), "init": "state"}
    if differs is None:
        assert train(late, tmp_path / "late", progress=False)["budget_epochs"] == 4
        return
    with pytest.raises(UserError, match=rf"toy/late: init_from .*at0\.5\.pt is the state of run toy/dense after "
                                        rf"epoch 2, whose config differs from this run's in those epochs: {differs}$"):
        train(late, tmp_path / "late", progress=False)
    assert not (tmp_path / "late").exists()
    threads = dense_and_late(toy_data)[1] | {"init_from": late["init_from"], "init": "state", "threads": 2}
    before = torch.get_num_threads()
    try:  # a runtime switch is not part of what is computed: allowed
        assert train(threads, tmp_path / "threads", progress=False)["budget_epochs"] == 4
    finally:
        torch.set_num_threads(before)


class Killed(Exception):
    pass


def die_after(monkeypatch, steps: int) -> None:
    """Training dies in its step ``steps + 1``, between two checkpoints, as under a kill."""
    real, calls = torch.nn.functional.cross_entropy, [0]

    def dying(logits, y, **kw):
        if logits.requires_grad:
            calls[0] += 1
            if calls[0] > steps:
                raise Killed
        return real(logits, y, **kw)

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", dying)


def test_killed_dense_and_late_runs_resume_to_the_same_bytes(toy_data, dense_run, tmp_path, monkeypatch, capsys):
    """The tools delete a failed job's declared outputs, the kept states too: the dense run resumes
    and brings its state back from the hidden link; the late run resumes its own epochs."""
    dense, late = dense_and_late(toy_data)
    run = tmp_path / "dense"
    with monkeypatch.context() as m, pytest.raises(Killed):
        die_after(m, steps=3 * 6)  # in epoch 4: the state after epoch 2 is kept, the checkpoint is epoch 3's
        train(dense, run, progress=False)
    for name in ("checkpoint.pt", "history.csv", "config.yaml", "states/at0.5.pt"):
        (run / name).unlink()
    train(dense, run, progress=False)
    for name in ("checkpoint.pt", "states/at0.5.pt"):
        assert (run / name).read_bytes() == (dense_run / name).read_bytes(), name
    assert not (run / ".resume-states").exists() and not (run / ".resume.pt").exists()

    continued = late | {"init_from": str(run / "states" / "at0.5.pt"), "init": "state"}
    train(continued, tmp_path / "reference", progress=False)
    out = tmp_path / "late"
    with monkeypatch.context() as m, pytest.raises(Killed):
        die_after(m, steps=6)  # its own epoch 3, then the kill in epoch 4
        train(continued, out, progress=False)
    (out / "checkpoint.pt").unlink()
    capsys.readouterr()
    train(continued, out, progress=False)
    assert f"resuming from {out / '.resume.pt'} after epoch 3" in capsys.readouterr().err
    assert (out / "checkpoint.pt").read_bytes() == (tmp_path / "reference" / "checkpoint.pt").read_bytes()
    assert without_timings(out) == without_timings(tmp_path / "reference")


@pytest.mark.parametrize("change,fragment", [
    ({"learning_rate": 0.1}, "(top level): Additional properties are not allowed ('learning_rate' was unexpected)"),
    ({"model": {"depht": 8}}, "model: Additional properties are not allowed ('depht' was unexpected)"),
    ({"epochs": "ten"}, "epochs: 'ten' is not of type 'integer'"),
    ({"proximal": "yes"}, "proximal: 'yes' is not of type 'boolean'"),
    ({"lam": -0.5}, "lam: -0.5 is less than the minimum of 0"),
    ({"model": {"arch": "vgg"}}, "model.arch: no network builder 'nonlinear_advantage.models:vgg'"),
    ({"model": {"builder": "nonlinear_advantage.models:nope"}},
     "model.builder: no network builder 'nonlinear_advantage.models:nope'"),
    ({"data": "/nonexistent/data.pt"}, "data: file not found: /nonexistent/data.pt"),
    ({"init_from": "/nonexistent/ckpt.pt"}, "init_from: file not found: /nonexistent/ckpt.pt"),
    ({"threads": 0}, "threads: 0 is less than the minimum of 1"),
    ({"init": "state"}, "init: state needs init_from, the state to continue"),
    ({"save_states": {"x": 4}}, "save_states.x: 4 is after the last epoch (3)"),
    ({"epochs": 4, "schedule": {"epochs": 3}}, "schedule.tail_lr: needed, the lr of the epochs after the cycle"),
    ({"save_states": {"../x": 1}}, "save_states: '../x' does not match"),
])
def test_bad_config_exits_nonzero_naming_the_key_and_the_file(toy_data, tmp_path, change, fragment, capsys):
    cfg = config(toy_data)
    for key, value in change.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) and key in cfg else value
    with pytest.raises(UserError, match=re.escape(fragment)):
        validate_config(cfg)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert cli.main(["train", "--config", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert fragment in err and str(path) in err


def test_missing_config_file_is_named(tmp_path, capsys):
    assert cli.main(["train", "--config", str(tmp_path / "nope.yaml"), "--out", str(tmp_path)]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_augment_flips_and_crops_per_sample():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    gen = torch.Generator().manual_seed(0)
    out = augment(x, draw_augmentation(2, flip=True, crop=1, gen=gen, device="cpu"), crop=1)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    for i in range(2):  # every output is a 4x4 window of the padded (possibly flipped) input
        windows = [p[:, r:r + 4, c:c + 4] for p in (padded[i], padded[i].flip(2)) for r in range(3) for c in range(3)]
        assert any(torch.equal(out[i], w) for w in windows)
    assert torch.equal(augment(x, draw_augmentation(2, flip=False, crop=0, gen=gen, device="cpu"), crop=0), x)


def test_lr_schedule_warms_up_then_decays():
    cfg = validate_config({"data": "x", "optimizer": {"lr": 1.0}, "schedule": {"kind": "cosine",
                                                                                "warmup_epochs": 1}},
                          check_files=False)
    lrs = [lr_at(cfg, s, 10) for s in range(100)]
    assert lrs[0] < lrs[5] < lrs[9] <= 1.0 and max(lrs) == pytest.approx(1.0, abs=0.1)
    assert lrs[-1] < 0.01 and all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))


def test_gpu_settings_run_on_the_cpu_too(toy_data, tmp_path):
    """bf16 autocast and NCHW, the CUDA path's switches, exercised where CI can run them."""
    metrics = train(config(toy_data, epochs=1, precision="bf16", channels_last=False), tmp_path, progress=False)
    assert 0.0 <= metrics["test_acc"] <= 1.0 and metrics["train_loss"] == metrics["train_loss"]
    assert load_checkpoint(tmp_path / "checkpoint.pt")["model"]["fc.weight"].dtype == torch.float32


def test_killed_after_the_last_checkpoint_restores_every_output(toy_data, tmp_path):
    """The window between the last epoch's checkpoint and metrics.json: outputs deleted by
    Snakemake, only .resume.pt left. The rerun must not lose the trained weights."""
    cfg = config(toy_data, epochs=2)
    done = train(cfg, tmp_path / "done", progress=False)
    run = tmp_path / "killed"
    run.mkdir()
    shutil.copy(tmp_path / "done" / "checkpoint.pt", run / ".resume.pt")  # as the link holds it
    metrics = train(cfg, run, progress=False)
    assert {p.name for p in run.iterdir()} == {"checkpoint.pt", "metrics.json", "history.csv", "config.yaml"}
    assert metrics["test_acc"] == done["test_acc"] and metrics["train_loss"] == done["train_loss"]
    assert len((run / "history.csv").read_text().splitlines()) == 3


def test_resume_state_of_other_data_is_ignored(tmp_path):
    data = make_dataset(tmp_path / "d.pt")
    train(config(data, epochs=1), tmp_path / "run", progress=False)
    (tmp_path / "run" / "checkpoint.pt").rename(tmp_path / "run" / ".resume.pt")
    make_dataset(data, seed=1)  # the same path, re-prepared with other contents
    train(config(data, epochs=1), tmp_path / "run", progress=False)
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert len(history) == 2  # trained afresh: one epoch, not resumed past the end


def test_bad_model_depth_in_a_run_config_is_a_user_error(toy_data, tmp_path, capsys):
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config(toy_data, model=dict(arch="resnet", depth=9))))
    assert cli.main(["train", "--config", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    # the builder checks the depth (the trainer knows no registry): the message names the run
    assert "run toy/sparse/test: model: resnet depth must be 6n+2" in err and "Traceback" not in err


def test_after_the_cycle_the_lr_is_the_constant_tail():
    cfg = validate_config({"data": "x", "epochs": 5, "optimizer": {"lr": 1.0},
                           "schedule": {"kind": "onecycle", "warmup_epochs": 0, "epochs": 3, "tail_lr": 0.01}},
                          check_files=False)
    lrs = [lr_at(cfg, s, 10) for s in range(50)]
    whole = validate_config({"data": "x", "epochs": 3, "optimizer": {"lr": 1.0},
                             "schedule": {"kind": "onecycle", "warmup_epochs": 0}}, check_files=False)
    assert lrs[:30] == [lr_at(whole, s, 10) for s in range(30)]  # the cycle of a 3-epoch run
    assert lrs[30:] == [0.01] * 20


def test_a_linear_tail_falls_from_tail_lr_towards_zero():
    """``tail: linear``: a post-hoc fine-tune ends as still as the one-cycle before it; λ follows its Σ lr."""
    cfg = validate_config({"data": "x", "epochs": 5, "optimizer": {"lr": 1.0},
                           "schedule": {"kind": "onecycle", "warmup_epochs": 0, "epochs": 3, "tail_lr": 0.01,
                                        "tail": "linear"}}, check_files=False)
    lrs = [lr_at(cfg, s, 10) for s in range(50)]
    assert lrs[30:] == pytest.approx([0.01 * (1 - k / 20) for k in range(20)])
    cfg |= {"prior_start_epoch": 3, "batch_size": 10}
    assert schedule.prior_lr_sum(cfg, 100) == pytest.approx(0.01 * (20 - 19 * 20 / 2 / 20))  # 0.01·Σ(1 − k/20)


def test_the_lazy_prox_trains_as_the_step_prox_while_no_slope_reaches_one(toy_data, tmp_path):
    """A prior too weak to take any slope to 1 in the run: both forms are the same soft-threshold, so
    the same weights up to rounding (the lazy form sums the thresholds, the step form applies them)."""
    runs = {form: train(config(toy_data, epochs=2, lam=0.05, prox_form=form), tmp_path / form, progress=False)
            for form in ("step", "lazy")}
    assert runs["lazy"]["nonlinear_channels"] == runs["lazy"]["total_channels"]
    assert 0 < runs["lazy"]["max_prior_shift"] == pytest.approx(runs["step"]["max_prior_shift"])
    step, lazy = (load_checkpoint(tmp_path / form / "checkpoint.pt") for form in ("step", "lazy"))
    assert lazy["slope_shadows"] is not None and step["slope_shadows"] is None
    assert all(torch.allclose(step["model"][k].float(), lazy["model"][k].float(), atol=1e-5) for k in step["model"])
    slopes = [k for k in step["model"] if k.endswith("slope")]
    assert any(not torch.equal(step["model"][k], torch.full_like(step["model"][k], 0.25)) for k in slopes)


def test_a_cosine_tail_falls_from_tail_lr_towards_zero_as_a_half_cosine():
    """``tail: cosine``: the tail's last epoch holds less of the prior's reach than a linear tail's."""
    cfg = validate_config({"data": "x", "epochs": 5, "optimizer": {"lr": 1.0}, "batch_size": 10,
                           "schedule": {"kind": "onecycle", "warmup_epochs": 0, "epochs": 3, "tail_lr": 0.01,
                                        "tail": "cosine"}}, check_files=False)
    lrs = [lr_at(cfg, s, 10) for s in range(50)]
    assert lrs[30:] == pytest.approx([0.01 * 0.5 * (1 + math.cos(math.pi * k / 20)) for k in range(20)])
    assert schedule.prior_lr_sum(cfg | {"prior_start_epoch": 3}, 100) == pytest.approx(sum(lrs[30:]))
    linear = [lr_at(cfg | {"schedule": cfg["schedule"] | {"tail": "linear"}}, s, 10) for s in range(50)]
    assert sum(lrs[40:]) / sum(lrs[30:]) < 0.8 * sum(linear[40:]) / sum(linear[30:])  # 0.20 against 0.26


def test_a_warmup_longer_than_the_run_still_decays(toy_data):
    cfg = validate_config(config(toy_data, epochs=2, schedule=dict(kind="onecycle", warmup_epochs=5)))
    lrs = [lr_at(cfg, s, 10) for s in range(20)]
    assert max(lrs) == pytest.approx(0.1, rel=0.15) and lrs[-1] < 0.01


def test_bf16_keeps_a_slope_near_one_nonlinear():
    from nonlinear_advantage.prelu import SparsePReLU

    act = SparsePReLU(1)
    act.slope.data.fill_(0.998)  # rounds to 1.0 in bf16
    x = -torch.ones(1, 1, dtype=torch.bfloat16) * 256
    assert act(x).item() != x.item()


@pytest.mark.parametrize("nesterov", [True, False])
def test_sgd_is_torch_sgd_bit_for_bit_and_resumes(nesterov):
    """optim.SGD skips torch.optim's start-up cost; its steps must be torch.optim.SGD's exactly."""
    def model():
        torch.manual_seed(0)
        return build_model("resnet", depth=8, width=4, in_channels=1, num_classes=10)

    ours_model, ref_model = model(), model()
    groups = lambda m: parameter_groups(m, 5e-4)  # noqa: E731  decayed weights, undecayed slopes and norms
    ours = SGD(groups(ours_model), lr=0.1, momentum=0.9, nesterov=nesterov)
    ref = torch.optim.SGD(groups(ref_model), lr=0.1, momentum=0.9, nesterov=nesterov)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    for step in range(4):
        for m, opt in ((ours_model, ours), (ref_model, ref)):
            for g in opt.param_groups:
                g["lr"] = 0.1 / (step + 1)
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(m(x), y).backward()
            opt.step()
        if step == 1:  # a resume: a fresh optimiser from the saved state goes on identically
            state = ours.state_dict()
            ours = SGD(groups(ours_model), lr=0.1, momentum=0.9, nesterov=nesterov)
            ours.load_state_dict(state)
    for (name, a), b in zip(ours_model.state_dict().items(), ref_model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="do not fit"):
        SGD(groups(model())[:1], lr=0.1, momentum=0.9, nesterov=nesterov).load_state_dict(state)


def test_slopes_step_at_slope_lr_scale_and_the_prior_reaches_as_far_as_planned(toy_data, tmp_path):
    """optimizer.slope_lr_scale: the slopes (only) step that many times faster, and the prior's
    threshold with them, so the shift the plan computes (schedule.prior_lr_sum) is the one trained."""
    lam, shifts, moves = 5.0, {}, {}
    for scale in (1, 10):
        cfg = validate_config(config(toy_data, epochs=1, lam=lam, optimizer={"slope_lr_scale": scale},
                                     name=f"toy/sparse/scale{scale}"))
        metrics = train(cfg, tmp_path / str(scale), progress=False)
        planned = lam * schedule.prior_lr_sum(cfg, 192) / (metrics["total_channels"] * 0.1)
        assert metrics["max_prior_shift"] == pytest.approx(planned, rel=1e-6)
        shifts[scale] = metrics["max_prior_shift"]
        slopes = torch.cat([v for k, v in load_checkpoint(tmp_path / str(scale) / "checkpoint.pt")["model"].items()
                            if k.endswith("slope")])
        moves[scale] = float((slopes - 0.25).abs().mean())
    assert shifts[10] == pytest.approx(10 * shifts[1], rel=1e-9)
    assert moves[10] > 2 * moves[1], moves  # the slopes moved further; weights at the same lr
