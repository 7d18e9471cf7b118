"""figures + report on the synthetic study: reproducible bytes, readable text, pages with ink."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from nonlinear_advantage import analysis, cli, figures, plan, report
from nonlinear_advantage.errors import UserError
from nonlinear_advantage.fileio import file_sha256
from report_pdf import assert_every_run_in_tables, needs_poppler
from report_pdf import pdftotext as _text
from synthetic_study import write_study


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
            # a "no depth" note is text: the heat map must be there (its panel: the dataset's title, left)
            if spec.stem == "core_networks" and ax.get_title(loc="left"):
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
    assert "Prox form step Slope init" in " ".join(text.split())  # its row: the runs' configs, the schema's default
    for _, sub in df.groupby("dataset"):
        assert f"{100 * sub[sub.arm == 'dense'].test_acc.mean():.2f}" in text
        for r in analysis.arm_curve(sub, "sparse").itertuples():  # mean ± sd over seeds
            assert f"{100 * r.acc:.2f} ± {100 * r.acc_std:.2f}" in text, r
            assert f"{r.apl:.2f}" in text
        onset = analysis.collapse_onset(sub, analysis.effective_tolerance(sub, th))
        assert f"at APL {onset.apl:.2f}" in text


@needs_poppler
def test_tables_hold_every_run(built):
    df = analysis.load_summary(built["summary"])
    assert set(df.arm) == set(plan.ARMS) - {plan.BASELINE}  # the synthetic study's arms
    assert_every_run_in_tables(df, built["pdfs"][0], {name: arm.label for name, arm in plan.ARMS.items()})


def test_tables_keep_an_arm_the_arm_table_does_not_know(built):
    """A summary from an older plan: its unknown arm is listed last, by its name."""
    df = analysis.load_summary(built["summary"])
    df = df[df.dataset == "digits"].replace({"arm": {plan.SPARSE: "retired"}})
    table = report.dataset_table(df)
    assert table.seeds.sum() == len(df) and list(table.arm.unique())[-1] == "retired"
    assert "<b>retired</b>" in report._architectures(df).split("<br/>")[-1]


RENAMED = """
import sys
from pathlib import Path

import nonlinear_advantage
from nonlinear_advantage import analysis, figures, report
from synthetic_study import write_study

root, params = Path(sys.argv[1]), Path(sys.argv[2])
print(nonlinear_advantage.__file__)
summary = write_study(root)
figures.make_figures(summary, root / "runs", root / "results" / "depth.json", root / "figures",
                     analysis.Thresholds.from_params())
report.build_report(summary, root / "figures", root / "report.pdf", params)
"""


@needs_poppler
def test_renaming_an_arm_is_one_edit(built, tmp_path):
    """Rename the from-scratch arm where the arm table spells it (plan.py, in a copy of the package):
    the study's rows carry the new name, and the figures, verdicts and tables are what they were."""
    package = tmp_path / "src" / "nonlinear_advantage"
    shutil.copytree(Path(plan.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    source = (package / "plan.py").read_text()
    assert source.count(f'"{plan.SPARSE}"') == 1  # spelt once: the arm table's constant
    (package / "plan.py").write_text(source.replace(f'"{plan.SPARSE}"', '"scratch"'))
    study = tmp_path / "study"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "src"), str(Path(__file__).parent)])}
    out = subprocess.run([sys.executable, "-c", RENAMED, str(study), str(built["params"])], env=env, check=True,
                         cwd=Path(__file__).parents[1], capture_output=True, text=True).stdout
    assert out.splitlines()[0] == str(package / "__init__.py")  # the copy, not the checkout's package

    before, after = (pd.read_csv(path) for path in (built["summary"], study / "results" / "summary.csv"))
    assert set(after.arm) == set(before.arm) - {plan.SPARSE} | {"scratch"}
    renamed = before.replace({"arm": {plan.SPARSE: "scratch"}})
    renamed["run"] = renamed.run.str.replace(f"/{plan.SPARSE}/", "/scratch/")
    pd.testing.assert_frame_equal(after, renamed)
    for png in (f"{spec.stem}.png" for spec in figures.FIGURES):
        assert (study / "figures" / png).read_bytes() == (built["figures"] / png).read_bytes(), png
    labels = {name: arm.label for name, arm in plan.ARMS.items()} | {"scratch": plan.ARMS[plan.SPARSE].label}
    assert_every_run_in_tables(analysis.load_summary(study / "results" / "summary.csv"), study / "report.pdf", labels)
    # past the title page (digests, and the dates a checkout's history gives), the same text
    findings = f"1. {report.SECTIONS[0]}"
    assert _text(study / "report.pdf").split(findings)[1] == _text(built["pdfs"][0]).split(findings)[1]


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


@needs_poppler
def test_appendix_gives_compute_per_arm_from_the_benchmarks(built, tmp_path):
    df = analysis.load_summary(built["summary"])
    for run in df[df.arm.isin([plan.DENSE, plan.SPARSE])].run:  # the train rule's benchmark files
        bench = tmp_path / "bench" / "train" / f"{run}.tsv"
        bench.parent.mkdir(parents=True, exist_ok=True)
        bench.write_text("s\th:m:s\tmax_rss\tcpu_time\n90.0\t0:01:30\t1234.5\t80.0\n")
    pdf = report.build_report(built["summary"], built["figures"], tmp_path / "r.pdf", built["params"],
                              benchmarks=tmp_path / "bench")
    text = " ".join(_text(pdf).split())
    assert "Appendix: compute" in text and "1,234" in text
    jobs = df[df.arm == plan.SPARSE].run.nunique()
    total = f"{jobs * 90 // 3600}:{jobs * 90 % 3600 // 60:02d}:{jobs * 90 % 60:02d}"
    assert f"{plan.ARMS[plan.SPARSE].label} {jobs} {total} 0:01:30" in text  # arm, jobs, wall-clock, per job
    assert "No benchmark files given" in " ".join(_text(built["pdfs"][0]).split())


@needs_poppler
def test_checks_page_lists_every_check_and_names_a_failed_control(built, tmp_path):
    text = " ".join(_text(built["pdfs"][0]).split())
    n = len(analysis.checks(analysis.load_summary(built["summary"]), analysis.Thresholds.from_params()))
    assert f"0 of {n} checks failed" in text
    for name in ("grid span", "control", "dense vs baseline", "points below onset", "settled"):
        assert name in text
    assert "Controls" in text and "Checks relied on:" in text
    df = analysis.load_summary(built["summary"])
    df.loc[(df.dataset == "fashion_mnist") & (df.arm == plan.FINETUNE), "test_acc"] -= 0.05
    summary = tmp_path / "summary.csv"
    df.to_csv(summary, index=False)
    pdf = report.build_report(summary, built["figures"], tmp_path / "failed.pdf", built["params"])
    text = " ".join(_text(pdf).split())
    assert "Observation 3: Nonlinear advantage — inconclusive" in text
    assert "inconclusive: control failed: fashion_mnist post-hoc control (λ = 0) − dense" in text
    assert "FAILED: control (fashion_mnist, post-hoc control (λ = 0))" in text
    assert "Failed: fashion_mnist post-hoc control (λ = 0) − dense" in text and "FAIL" in text
