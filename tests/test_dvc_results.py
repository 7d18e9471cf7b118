"""What a DVC user sees of a study: plots with a series per arm, the report's figures as image
plots, and one study metrics file that `dvc exp show` compares across experiments.

The tiny study (tests/fixtures/tiny_params.yaml) runs once under `dvc repro` in a temporary
copy of the repository (about 30 s on 2 cores); one experiment changes a verdict threshold
(about 10 s: no training, measuring or aggregating reruns).
"""

import json
import re

import pytest

from nonlinear_advantage import analysis, generate, metrics, plan
from nonlinear_advantage.aggregate import plot_series
from nonlinear_advantage.figures import FIGURES
from repo_copy import copy_repo, sh

pytestmark = pytest.mark.slow


def _commit(repo, message: str) -> None:
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", message)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = copy_repo(tmp_path_factory.mktemp("dvc"))
    sh(repo, "git", "init", "-q")
    _commit(repo, "the repository")
    sh(repo, "dvc", "repro", "--quiet")
    _commit(repo, "the tiny study")
    return repo


def test_plots_show_a_series_per_arm_and_every_figure(repo):
    out = json.loads(sh(repo, "dvc", "plots", "show", "--json").stdout)
    assert not out.get("errors"), out.get("errors")
    plots = out["data"]
    for spec in FIGURES:  # the report's figures, as image plots
        [image] = plots[f"reports/figures/{spec.stem}.png"]
        assert image["type"] == "image" and image["revisions"] == ["workspace"]
    datasets = plan.load_params(repo / "params.yaml")["datasets"]
    for kind in ("accuracy", "curves"):  # a plot per dataset, a series per arm
        for dataset in datasets:
            [plot] = plots[f"{generate.PLOTS_DIR}/{kind}/{dataset}.csv"]
            assert plot["type"] == "vega"
            values = plot["content"]["data"]["values"]
            series = {v["field"] for v in values if v["dvc_inferred_y_value"] != ""}
            assert series == set(plot_series())  # the tiny study has every arm
            assert plot["content"]["encoding"]["color"]["field"] == "field"  # coloured by arm, not by revision
    accuracy = [v for v in plots[f"{generate.PLOTS_DIR}/accuracy/digits.csv"][0]["content"]["data"]["values"]
                if v["dvc_inferred_y_value"] != ""]
    assert sorted(v["run"] for v in accuracy) == sorted(run.id for run in plan.runs(plan.load_params(
        repo / "params.yaml")))  # a point per run of the plan


def test_metrics_show_the_study_metrics_only(repo):
    shown = json.loads(sh(repo, "dvc", "metrics", "show", "--json").stdout)
    files = {name for rev in shown.values() for name in rev["data"]}
    assert files == {generate.METRICS_FILE}  # no per-run metrics.json
    study = json.loads((repo / generate.METRICS_FILE).read_text())
    df = analysis.load_summary(repo / "results" / "summary.csv")
    th = analysis.Thresholds.from_file(repo / "params.yaml")
    assert study == json.loads(json.dumps(metrics.study_metrics(df, th)))
    assert study["dense_acc"]["digits"] == pytest.approx(analysis.dense_accuracy(df), abs=1e-6)
    assert {key: f["verdict"] for key, f in study["findings"].items()} == {
        metrics.finding_key(f.title): f.verdict for f in analysis.findings(df, th)}
    assert study["collapse_onset"]["digits"]["tolerance"] == pytest.approx(analysis.effective_tolerance(df, th),
                                                                            rel=1e-5)


def _exp_metrics(entries) -> dict[str, dict]:
    """`dvc exp show --json`: experiment name (or the baseline's branch) -> its study metrics."""
    out = {}
    for entry in entries:
        data = entry.get("data") or {}
        found = (data.get("metrics") or {}).get(generate.METRICS_FILE, {}).get("data")
        if found is not None and entry.get("rev") != "workspace":
            out[entry.get("name") or entry["rev"]] = found
        for exp in entry.get("experiments") or []:
            out |= _exp_metrics(exp.get("revs") or [])
    return out


def test_exp_show_compares_the_study_metrics_of_two_experiments(repo):
    out = sh(repo, "dvc", "exp", "run", "-S", "+analysis.tolerance=0.3", "-n", "tolerance30").stdout
    ran = set(re.findall(r"Running stage '([^']+)'", out))
    # a threshold: the verdicts again (configure, which reads every param, writes the same configs)
    assert {"metrics", "figures", "report"} <= ran <= {"configure", "metrics", "figures", "report"}, out
    shown = _exp_metrics(json.loads(sh(repo, "dvc", "exp", "show", "--json").stdout))
    assert len(shown) == 2 and "tolerance30" in shown, shown  # the baseline (its branch) and the experiment
    exp = shown.pop("tolerance30")
    [base] = shown.values()
    for study in (base, exp):
        assert set(study["findings"]) == {metrics.finding_key(f.title) for f in analysis.findings(
            analysis.load_summary(repo / "results" / "summary.csv"), analysis.Thresholds.from_params())}
        assert all(f["verdict"] in (analysis.SUPPORTED, analysis.CONTRADICTED, analysis.INCONCLUSIVE)
                   for f in study["findings"].values())
    assert base["collapse_onset"]["digits"]["tolerance"] < 0.3 == exp["collapse_onset"]["digits"]["tolerance"]
    table = sh(repo, "dvc", "exp", "show", "--csv", "--drop", ".*", "--keep", "Experiment|.*verdict").stdout
    header, *rows = table.splitlines()
    assert header.count(".verdict") == 4 and any(row.startswith("tolerance30,") for row in rows), table
