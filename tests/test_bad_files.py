"""A bad input file ends a command with exit 2 and a message naming it: no traceback, no unsafe advice.

Through the real CLI (``python -m nonlinear_advantage``), as a user or a pipeline job meets it.
"""

import errno
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from nonlinear_advantage.cli import main

SRC = Path(__file__).resolve().parents[1] / "src"


def cli(*argv, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "nonlinear_advantage", *map(str, argv)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def assert_clean_refusal(proc, path: Path, *why: str) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out and "weights_only" not in out, out
    assert f"error: {path}:" in proc.stderr, out
    for text in why:
        assert text in proc.stderr, out


def test_figures_refuses_empty_summary(tmp_path):
    summary = tmp_path / "summary.csv"
    summary.write_bytes(b"")
    proc = cli("figures", "--summary", summary, "--runs", tmp_path / "runs", "--depth", tmp_path / "depth.json",
              "--out", tmp_path / "figs", cwd=tmp_path)
    assert_clean_refusal(proc, summary, "not a readable summary CSV")
    assert not (tmp_path / "figs").exists() or not any((tmp_path / "figs").iterdir())


@pytest.mark.parametrize("body", [np.random.default_rng(0).bytes(3000), b'run,dataset\n"digits/'],
                         ids=["random bytes", "cut off"])
def test_other_bad_summaries(tmp_path, capsys, body):  # in-process: the same path as above, faster
    summary = tmp_path / "summary.csv"
    summary.write_bytes(body)
    assert main(["figures", "--summary", str(summary), "--runs", str(tmp_path), "--depth", str(tmp_path / "d.json"),
                 "--out", str(tmp_path / "f")]) == 2
    assert capsys.readouterr().err.startswith(f"error: {summary}: not a readable summary CSV")


def test_report_refuses_empty_summary(tmp_path):
    summary = tmp_path / "summary.csv"
    summary.write_bytes(b"")
    proc = cli("report", "--summary", summary, "--figures", tmp_path / "figs", "--out", tmp_path / "r.pdf",
               cwd=tmp_path)
    assert_clean_refusal(proc, summary, "not a readable summary CSV")
    assert not (tmp_path / "r.pdf").exists()


@pytest.mark.parametrize("kind", ["empty", "random bytes"])
def test_train_refuses_bad_data_file(tmp_path, kind):
    data = tmp_path / "data.pt"
    data.write_bytes(b"" if kind == "empty" else np.random.default_rng(1).bytes(4096))
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(dict(name="toy/sparse/test", data=str(data), epochs=1, batch_size=8, lam=0.0,
                                          seed=0, device="cpu", model=dict(arch="resnet", depth=8, width=4))))
    proc = cli("train", "--config", config, "--out", tmp_path / "run", cwd=tmp_path)
    assert_clean_refusal(proc, data, "not a prepared dataset", "the file is empty" if kind == "empty" else "zip")


# ---- the trainer's files: checkpoints, resume state, the output directory ---------------------


@pytest.fixture
def toy_run(tmp_path):
    """A valid run config on a toy dataset, and the run directory it trains into."""
    from test_trainer import make_dataset

    data = make_dataset(tmp_path / "toy.pt")
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(dict(name="toy/dense/s0", data=str(data), epochs=1, batch_size=32, seed=0,
                                          device="cpu", model=dict(arch="resnet", depth=8, width=4))))
    return config, tmp_path / "run"


def _bad_checkpoint(kind: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "cut off":  # the first 500 bytes of a torch.save zip
        buffer = io.BytesIO()
        torch.save({"model": {"w": torch.zeros(1000)}, "epoch": 1}, buffer)
        path.write_bytes(buffer.getvalue()[:500])
    else:
        path.write_bytes(b"" if kind == "empty" else np.random.default_rng(2).bytes(4096))


@pytest.mark.parametrize("kind", ["empty", "random bytes", "cut off"])
def test_measure_refuses_a_bad_checkpoint(tmp_path, kind):
    run = tmp_path / "run"
    _bad_checkpoint(kind, run / "checkpoint.pt")
    proc = cli("measure", "--run", run, "--out", run / "depth.json", cwd=tmp_path)
    assert_clean_refusal(proc, run / "checkpoint.pt", "not a checkpoint",
                         "the file is empty" if kind == "empty" else "zip")
    assert not (run / "depth.json").exists()


@pytest.mark.parametrize("kind", ["empty", "random bytes"])
def test_train_refuses_bad_resume_state(tmp_path, toy_run, kind):
    """.resume.pt is what a killed run resumes from; a damaged one is named, with what to do."""
    config, run = toy_run
    _bad_checkpoint(kind, run / ".resume.pt")
    proc = cli("train", "--config", config, "--out", run, cwd=tmp_path)
    assert_clean_refusal(proc, run / ".resume.pt", "not a checkpoint", "delete it to start run toy/dense/s0 afresh")


def test_train_refuses_an_empty_init_from(tmp_path, toy_run):
    config, run = toy_run
    ckpt = tmp_path / "dense" / "checkpoint.pt"
    _bad_checkpoint("empty", ckpt)
    config.write_text(yaml.safe_dump({**yaml.safe_load(config.read_text()), "init_from": str(ckpt)}))
    assert_clean_refusal(cli("train", "--config", config, "--out", run, cwd=tmp_path), ckpt, "the file is empty")


def test_train_refuses_an_output_directory_it_cannot_write(tmp_path, toy_run):
    """Checked before training (not after the first epoch). The tests run as root, whom no mode
    bit stops: a directory under a regular file cannot be made by anyone."""
    config, _ = toy_run
    (tmp_path / "a_file").write_text("")
    out = tmp_path / "a_file" / "run"
    proc = cli("train", "--config", config, "--out", out, cwd=tmp_path)
    assert_clean_refusal(proc, out, "cannot write here", "Not a directory")


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_train_refuses_a_full_disk_before_training(tmp_path, toy_run, monkeypatch, capsys):
    """A full disk fails the probe write: in-process, with the write faked (ENOSPC)."""
    from nonlinear_advantage import fileio, trainer

    config, run = toy_run
    monkeypatch.setattr(fileio, "write_bytes", _no_space)
    monkeypatch.setattr(trainer, "setup", lambda *a: pytest.fail("trained on a full disk"))
    assert main(["train", "--config", str(config), "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {run}: cannot write here: No space left on device"), err


def test_a_disk_that_fills_during_training_is_named(tmp_path, toy_run, monkeypatch, capsys):
    """The probe passed, then the first checkpoint found the disk full: exit 2 naming the file."""
    from nonlinear_advantage import fileio

    config, run = toy_run
    monkeypatch.setattr(fileio, "torch_save", _no_space)
    assert main(["train", "--config", str(config), "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {run / 'checkpoint.pt'}: cannot write: No space left on device"), err
    assert "Traceback" not in err
