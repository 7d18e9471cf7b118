"""figures + report on the synthetic study: reproducible bytes, readable text, pages with ink."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from nonlinear_advantage import analysis, cli, figures, report
from nonlinear_advantage.errors import UserError
from nonlinear_advantage.fileio import file_sha256
from synthetic_study import write_study

needs_poppler = pytest.mark.skipif(shutil.which("pdftotext") is None or shutil.which("pdftoppm") is None,
                                   reason="poppler-utils (pdftotext, pdftoppm) is not installed")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    summary = write_study(root)
    fig_dir = root / "reports" / "figures"
    assert cli.main(["figures", "--summary", str(summary), "--runs", str(root / "runs"),
                     "--depth", str(root / "results" / "depth.json"), "--out", str(fig_dir)]) == 0
    params = root / "params.yaml"
    shutil.copy(Path(__file__).parent / "fixtures" / "tiny_params.yaml", params)
    pdfs = []
    for name in ("a.pdf", "b.pdf"):
        start = time.perf_counter()
        pdfs.append(report.build_report(summary, fig_dir, root / name, params))
        build_s = time.perf_counter() - start
    return dict(root=root, summary=summary, figures=fig_dir, pdfs=pdfs, params=params, build_s=build_s)


def test_figures_written(built):
    for spec in figures.FIGURES:
        assert (built["figures"] / f"{spec.stem}.png").stat().st_size > 10_000


def test_every_panel_of_every_figure_has_data(built):
    """An empty panel passes a file-size check: look inside each drawn figure instead."""
    df = analysis.load_summary(built["summary"])
    study = figures.Study(built["root"] / "runs", json.loads((built["root"] / "results" / "depth.json").read_text()))
    for spec in figures.FIGURES:
        fig = spec.draw(df, study, analysis.Thresholds.from_params())
        for ax in fig.axes:
            if ax.get_label() == "<colorbar>":
                continue
            drawn = len(ax.lines) + len(ax.collections) + len(ax.patches) + len(ax.images) + len(ax.texts)
            assert drawn, f"{spec.stem}: panel {ax.get_title()!r} / {ax.get_ylabel()!r} is empty"
            if spec.stem == "core_networks":  # a "no depth" note is text: the heat map must be there
                assert ax.images, f"core_networks: panel {ax.get_title()!r} has no heat map"


def test_figures_are_deterministic(built, tmp_path):
    again = tmp_path / "figures"
    figures.make_figures(built["summary"], built["root"] / "runs", built["root"] / "results" / "depth.json", again,
                         analysis.Thresholds.from_params(),
                         formats=("png", "pdf"))
    for spec in figures.FIGURES:
        assert (again / f"{spec.stem}.png").read_bytes() == (built["figures"] / f"{spec.stem}.png").read_bytes()


def test_pdf_is_byte_identical(built):
    a, b = built["pdfs"]
    assert a.read_bytes() == b.read_bytes()
    assert built["build_s"] < 10


def _text(pdf) -> str:
    return subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout


@needs_poppler
def test_pdf_text_matches_summary(built):
    text = _text(built["pdfs"][0])
    for section in report.SECTIONS:
        assert section in text
    th = analysis.Thresholds.from_params()
    df = analysis.load_summary(built["summary"])
    for f in analysis.findings(df, th):
        assert f"Observation {f.number}: {f.title} — {f.verdict}" in " ".join(text.split())
    assert file_sha256(built["params"]) in text
    for _, sub in df.groupby("dataset"):
        assert f"{100 * sub[sub.arm == 'dense'].test_acc.mean():.2f}" in text
        for r in analysis.arm_curve(sub, "sparse").itertuples():  # mean ± sd over seeds
            assert f"{100 * r.acc:.2f} ± {100 * r.acc_std:.2f}" in text, r
            assert f"{r.apl:.2f}" in text
        onset = analysis.collapse_onset(sub, analysis.effective_tolerance(sub, th))
        assert f"at APL {onset.apl:.2f}" in text


@needs_poppler
def test_pages_are_not_blank(built, tmp_path):
    subprocess.run(["pdftoppm", "-r", "30", "-gray", "-png", str(built["pdfs"][0]), str(tmp_path / "page")],
                   check=True)
    pages = sorted(tmp_path.glob("page*.png"))
    assert len(pages) >= 6
    for page in pages:
        pixels = np.asarray(Image.open(page), dtype=float)
        assert pixels.std() > 5, f"{page.name} looks blank"


def test_missing_summary_is_a_user_error(built, tmp_path, capsys):
    missing = tmp_path / "nope" / "summary.csv"
    with pytest.raises(UserError, match=str(missing)):
        report.build_report(missing, built["figures"], tmp_path / "r.pdf")
    assert cli.main(["report", "--summary", str(missing), "--figures", str(built["figures"]),
                     "--out", str(tmp_path / "r.pdf")]) == 2
    assert str(missing) in capsys.readouterr().err
    assert not (tmp_path / "r.pdf").exists()


def test_missing_figure_is_a_user_error(built, tmp_path):
    with pytest.raises(UserError, match="accuracy_vs_apl.png"):
        report.build_report(built["summary"], tmp_path, tmp_path / "r.pdf")


@needs_poppler
def test_thresholds_come_from_the_params_file(built, tmp_path):
    params = yaml.safe_load(built["params"].read_text()) | {"analysis": {"tolerance": 0.05}}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    pdf = report.build_report(built["summary"], built["figures"], tmp_path / "r.pdf", path)
    assert "collapse tolerance 5 pt" in _text(pdf) and "collapse tolerance 1 pt" in _text(built["pdfs"][0])
