"""The CUDA path where it can be checked without a GPU, and benchmarks/gpu_check.sh's smoke run.

The trainer is used only through ``trainer.train(config, out_dir)`` and
``trainer.resolve_device(choice)``, and through the files a run writes.
"""

import csv
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from nonlinear_advantage import plan, trainer
from nonlinear_advantage.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "fixtures" / "tiny_params.yaml"
FMNIST_RAW = [ROOT / ".gpu_carry" / "fashion-mnist", Path("/usr/share/datasets/fashion-mnist")]


def _benchmark(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tiny_data(path: Path) -> Path:
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (96, 1, 8, 8), dtype=torch.uint8, generator=gen)
    y = torch.randint(0, 3, (96,), generator=gen)
    torch.save(dict(name="tiny", train_x=x[:64], train_y=y[:64], val_x=x[64:80], val_y=y[64:80], test_x=x[80:],
                    test_y=y[80:], classes=["a", "b", "c"], mean=[0.5], std=[0.3], source="test", seed=0), path)
    return path


def _config(data: Path, **extra) -> dict:
    return dict(name="gpu/check", data=str(data), model=dict(arch="resnet", depth=8, width=2), epochs=2,
                batch_size=16, lam=1.0, augment=dict(flip=True, crop=1), **extra)


# ---- device selection -------------------------------------------------------------------------


def test_resolve_device_follows_cuda_availability(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert trainer.resolve_device("auto") == torch.device("cpu")
    assert trainer.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(UserError, match="cuda"):
        trainer.resolve_device("cuda")
    # Selection only: asking for the device must not touch CUDA itself.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert trainer.resolve_device("auto") == torch.device("cuda")
    assert trainer.resolve_device("cuda") == torch.device("cuda")
    assert trainer.resolve_device("cpu") == torch.device("cpu")


def _forbid_cuda(monkeypatch):
    """As on a machine without a GPU, but loud: any CUDA initialisation, sync or compile raises."""
    def forbidden(name):
        def call(*args, **kwargs):
            raise AssertionError(f"{name} was called on the CPU path")

        return call  # one object per name: torch._dynamo, if imported, maps torch functions one to one

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    # Every real CUDA use (tensor.to("cuda"), streams, graphs, synchronize) initialises through _lazy_init.
    for name in ("_lazy_init", "init", "synchronize", "current_device", "set_device", "get_device_name",
                 "get_device_properties", "empty_cache", "CUDAGraph", "graph", "Stream", "Event"):
        monkeypatch.setattr(torch.cuda, name, forbidden(f"torch.cuda.{name}"))
    monkeypatch.setattr(torch.Tensor, "cuda", forbidden("Tensor.cuda"))
    monkeypatch.setattr(torch, "compile", forbidden("torch.compile"))


def test_auto_on_the_cpu_makes_no_cuda_call(tmp_path, monkeypatch):
    _forbid_cuda(monkeypatch)
    data = _tiny_data(tmp_path / "tiny.pt")
    metrics = trainer.train(_config(data, device="auto", precision="auto", channels_last="auto", compile="auto"),
                            tmp_path / "run", progress=False)
    assert metrics["epochs"] == 2 and 0 <= metrics["test_acc"] <= 1
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert all(t.device.type == "cpu" for t in ckpt["model"].values())


def _weights(run: Path) -> dict:
    return torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]


def _history(run: Path) -> list[dict]:
    """history.csv without its timings."""
    with open(run / "history.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "wall_time_s"} for row in csv.DictReader(f)]


def test_auto_on_the_cpu_is_fp32_channels_last_eager(tmp_path, monkeypatch):
    """`auto` on the CPU trains bit for bit like the explicit fp32 / channels_last / no-compile run,
    and unlike bf16 (so the comparison can tell the settings apart)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    data = _tiny_data(tmp_path / "tiny.pt")
    auto = dict(device="auto", precision="auto", channels_last="auto", compile="auto")
    explicit = dict(device="cpu", precision="fp32", channels_last=True, compile=False)
    runs = {}
    for label, settings in (("auto", auto), ("explicit", explicit), ("bf16", dict(explicit, precision="bf16"))):
        runs[label] = trainer.train(_config(data, **settings), tmp_path / label, progress=False)
    a, b = _weights(tmp_path / "auto"), _weights(tmp_path / "explicit")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _history(tmp_path / "auto") == _history(tmp_path / "explicit")
    assert runs["auto"]["test_loss"] == runs["explicit"]["test_loss"]
    c = _weights(tmp_path / "bf16")
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())
    # channels_last: the checkpoint keeps the 4-d weights in the layout they were trained in.
    convs = [t for t in a.values() if t.dim() == 4 and t.shape[1] > 1 and t.shape[2] > 1]
    assert convs and all(t.is_contiguous(memory_format=torch.channels_last) for t in convs)


# ---- the paper study's run count ------------------------------------------------------------------


def test_sizing_counts_the_plans_runs_and_epochs():
    sizing = _benchmark("gpu_sizing")
    params = yaml.safe_load(TINY.read_text())
    runs = sizing.study_runs(params)
    assert [r["arm"] for r in runs] == [r.arm for r in plan.runs(plan.validate(params))]
    assert sum(r["epochs"] for r in runs) == sum(plan.run_config(params, r.id)["epochs"] for r in plan.runs(params))
    params = dict(params, datasets={"cifar10": dict(train_size=100, val_size=10, test_size=20, pool=1, epochs=7)})
    # The estimate is linear in the measured epoch, and the timed model's own epoch costs epoch_s.
    timed = dict(arch="resnet", depth=20, width=4, dataset="cifar10", n_train=100)
    one = sizing.estimate(params, timed, 1.0)
    assert sizing.estimate(params, timed, 2.0)["seconds"] == pytest.approx(2 * one["seconds"])
    dense = [dict(r, epochs=7) for r in sizing.study_runs(params) if r["arm"] == "dense"]
    dense[0].update(arch="resnet", depth=20, width=4)
    eval_share = 1 + sizing.EVAL_COST * 30 / 100
    assert sizing.estimate(params, timed, 1.0, dense)["seconds"] == pytest.approx(7 * eval_share)


# ---- gpu_check.sh --smoke -------------------------------------------------------------------------


def _line(text: str, pattern: str) -> re.Match:
    match = re.search(pattern, text, re.MULTILINE)
    assert match, f"no line matching {pattern!r} in:\n{text}"
    return match


@pytest.mark.slow
def test_gpu_check_smoke(tmp_path):
    if not any(p.is_dir() for p in FMNIST_RAW):
        pytest.skip("no raw Fashion-MNIST (make system-deps installs Debian's dataset-fashion-mnist)")
    out = tmp_path / "check"
    env = {**os.environ, "PYTHON": sys.executable, "DVC_NO_ANALYTICS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(out), "--smoke"],
                          env=env, capture_output=True, text=True, timeout=600)
    summary = (out / "summary.txt").read_text() if (out / "summary.txt").exists() else ""
    assert proc.returncode == 0, f"{summary}\n{proc.stderr[-3000:]}"
    for step in ("prepare", "bench", "train", "sizing", "pipeline", "settings"):
        assert (out / f"{step}.log").is_file()
        _line(summary, rf"^{step}: OK in [0-9.]+s$")
    assert "mode: smoke" in summary and "torch" in summary
    # 1. the Fashion-MNIST subset
    _line(summary, r"prepared fashion_mnist: 512 train, 128 val, 256 test images of \(1, 28, 28\)")
    # 2. the trainer against the DataLoader loop
    assert float(_line(summary, r"^  DataLoader +[0-9]+ images/s +trainer x([0-9.]+)").group(1)) > 0
    assert float(_line(summary, r"^  trainer +([0-9]+) images/s").group(1)) > 0
    # 6. the settings' comparison
    _line(summary, r"^  NCHW +[0-9]+ images/s .* vs default")
    # 3. the training run: accuracy and wall time
    acc = _line(summary, r"epochs: test accuracy ([0-9.]+), training wall time ([0-9.]+) s")
    assert 0 <= float(acc.group(1)) <= 1 and float(acc.group(2)) > 0
    run = yaml.safe_load((out / "train.yaml").read_text())
    assert run["augment"] == {"flip": True, "crop": 2} and run["device"] == "cpu"
    # 4. epoch times at two batch sizes, and the estimate for config/paper.yaml
    times = re.findall(r"^  epoch at batch (\d+): ([0-9.]+) s", summary, re.MULTILINE)
    assert len(times) == 2 and all(float(t) > 0 for _, t in times)
    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    n_runs = len(_benchmark("gpu_sizing").study_runs(paper))
    estimate = rf"^  estimate for paper.yaml at batch \d+.*: {n_runs} runs, \d+ epochs, ([0-9.]+) GPU-hours"
    estimates = re.findall(estimate, summary, re.MULTILINE)
    assert len(estimates) == 2 and all(float(h) > 0 for h in estimates)
    assert (out / "sizing" / "sizing.json").is_file()
    # 5. the tiny study through Snakemake
    _line(summary, r"tiny study on cpu: [1-9]\d* runs in results/summary.csv, [1-9]\d* figures, report.pdf written")
    assert (out / "pipeline" / "reports" / "report.pdf").stat().st_size > 0
    assert _line(summary, r"^done: (\d+) step\(s\) failed").group(1) == "0"
