"""A bad input file ends a command with exit 2 and a message naming it: no traceback, no unsafe advice.

Through the real CLI (``python -m nonlinear_advantage``), as a user or a pipeline job meets it.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
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
    proc = cli("figures", "--summary", summary, "--runs", tmp_path / "runs", "--out", tmp_path / "figs", cwd=tmp_path)
    assert_clean_refusal(proc, summary, "not a readable summary CSV")
    assert not (tmp_path / "figs").exists() or not any((tmp_path / "figs").iterdir())


@pytest.mark.parametrize("body", [np.random.default_rng(0).bytes(3000), b'run,dataset\n"digits/'],
                         ids=["random bytes", "cut off"])
def test_other_bad_summaries(tmp_path, capsys, body):  # in-process: the same path as above, faster
    summary = tmp_path / "summary.csv"
    summary.write_bytes(body)
    assert main(["figures", "--summary", str(summary), "--runs", str(tmp_path), "--out", str(tmp_path / "f")]) == 2
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
