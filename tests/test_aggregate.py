"""aggregate: one row per run in a fixed order, the stacked curves, clear errors."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nonlinear_advantage import aggregate, measure, plan
from nonlinear_advantage.errors import UserError

TINY = yaml.safe_load((Path(__file__).parent / "fixtures" / "tiny_params.yaml").read_text())


DEPTH = {"nonlinear_channels": 3, "total_channels": 8, "apl_normalized": 2.5, "apl_unnormalized": 4.0, "eps": 0.0,
         "depth_eps": 0.1, "apl_normalized_eps": 2.0, "apl_unnormalized_eps": 3.5, "nonlinear_channels_eps": 2,
         "slope_q10": 0.0, "slope_q50": 0.25, "slope_q90": 0.75, "layers": []}


def write_depths(path, names) -> Path:
    """The study's depth file for these runs, by measure's own writer."""
    measure.write_depth(path, {name: {"run": name, **DEPTH} for name in names})
    return path


def make_run(root, name, lam=0.0, width=4, activation="prelu", params=None):
    """A finished run's files; its config is the plan's own (fields and all)."""
    run = root / name
    run.mkdir(parents=True)
    if params is None:
        params = {**TINY, "sweep": {"shifts": [0.2, 1.5, 0.7]}}
    config = plan.run_config(params, name)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    metrics = {k: 1.0 for k in aggregate.FROM_METRICS} | {"params": 1000, "epochs": 1, "test_acc": 0.5 + lam}
    metrics |= {"budget_epochs": 9 if "finetune" in name else 8, "test_size": 300,
                "prior_start_epoch": 9 if "late" in name else 0}
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "history.csv").write_text("epoch,lr,test_acc\n1,0.1,0.4\n2,0.05,0.5\n")
    return run


def test_rows_in_fixed_order_whatever_the_argument_order(tmp_path):
    names = ["digits/sparse/shift1.5-s0", "digits/late/at0.5-shift1.5-s0", "digits/dense/s0",
             "digits/sparse/shift0.2-s0",
             "digits/shallow/d3-wide-s0", "digits/baseline/d8-wide-s0", "digits/finetune/s0",
             "digits/baseline/d8-own-s0", "digits/posthoc/shift1.5-s0", "digits/shallow/d3-own-s0"]
    dirs = [make_run(tmp_path / "runs", n, activation="relu" if "baseline" in n else "prelu") for n in names]
    out, curves = tmp_path / "results" / "summary.csv", tmp_path / "results" / "curves.csv"
    depth = write_depths(tmp_path / "depth.json", names)
    aggregate.aggregate(dirs, out, depth, curves)
    first = out.read_bytes()
    aggregate.aggregate(dirs[::-1], out, depth, curves)
    assert out.read_bytes() == first
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == list(aggregate.SUMMARY_COLUMNS)
    assert [r["run"] for r in rows] == [  # the arm table's order
        "digits/baseline/d8-own-s0", "digits/baseline/d8-wide-s0", "digits/shallow/d3-own-s0",
        "digits/shallow/d3-wide-s0", "digits/dense/s0", "digits/sparse/shift0.2-s0", "digits/sparse/shift1.5-s0",
        "digits/finetune/s0", "digits/posthoc/shift1.5-s0", "digits/late/at0.5-shift1.5-s0"]
    assert [r["widened"] for r in rows[:4]] == ["False", "True", "False", "True"]
    assert [r["arch"] for r in rows[:4]] == ["resnet", "resnet", "plain", "plain"]
    assert rows[6]["apl_normalized"] == "2.5"
    assert float(rows[6]["lam"]) == plan.run_config(TINY, "digits/sparse/shift1.5-s0")["lam"]  # the config's λ
    # budget and prior columns come from each run's metrics.json
    assert [r["budget_epochs"] for r in rows[6:8]] == ["8", "9"] and rows[9]["prior_start_epoch"] == "9"
    assert {r["test_size"] for r in rows} == {"300"}
    history = list(csv.DictReader(curves.open()))
    assert len(history) == 2 * len(names)
    assert list(history[0]) == ["run", "dataset", "arm", "lam", "seed", "epoch", "lr", "test_acc"]


def test_a_missing_file_names_the_run(tmp_path):
    run = make_run(tmp_path, "digits/dense/s0")
    with pytest.raises(UserError, match="depth.json is missing: measure the study first"):
        aggregate.aggregate([run], tmp_path / "summary.csv", tmp_path / "depth.json")
    with pytest.raises(UserError, match="run digits/dense/s0: not in the depth file"):
        aggregate.aggregate([run], tmp_path / "summary.csv", write_depths(tmp_path / "depth.json", ["other"]))
    (run / "metrics.json").unlink()
    with pytest.raises(UserError, match="digits/dense/s0: metrics.json is missing"):
        aggregate.aggregate([run], tmp_path / "summary.csv", write_depths(tmp_path / "depth.json", ["digits/dense/s0"]))
    assert not (tmp_path / "summary.csv").exists()


def test_cli_with_params_reads_the_planned_runs(tmp_path):
    params = yaml.safe_load(open("tests/fixtures/tiny_params.yaml"))
    params["sweep"]["shifts"] = [1.5]
    params["baseline"] = {"depths": [8], "plain_depths": [3], "widths": ["own"]}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    planned = ["digits/baseline/d8-own-s0", "digits/shallow/d3-own-s0", "digits/dense/s0", "digits/sparse/shift1.5-s0",
               "digits/finetune/s0", "digits/posthoc/shift1.5-s0", "digits/late/at0.5-shift1.5-s0"]
    stale = ["digits/sparse/shift0.7-s0", "digits/baseline/d8-wide-s0"]
    for name in planned + stale:
        make_run(tmp_path / "runs", name)
    write_depths(tmp_path / "results" / "depth.json", planned + stale)
    cmd = [sys.executable, "-m", "nonlinear_advantage", "aggregate", "--params", "params.yaml",
           "--out", "results/summary.csv", "--depth", "results/depth.json", "--curves", "results/curves.csv", "runs"]
    subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True)
    rows = list(csv.DictReader((tmp_path / "results" / "summary.csv").open()))
    assert [r["run"] for r in rows] == planned


def test_a_run_trained_as_another_has_its_own_row(tmp_path):
    """plan.runs: the widened ResNet-14 has the own-width one's config; one run, two rows."""
    params = yaml.safe_load(open("tests/fixtures/tiny_params.yaml"))
    params["baseline"]["depths"] = [8, 14]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    trained = plan.run_ids(plan.validate(params))
    assert "digits/baseline/d14-wide-s0" not in trained
    for name in trained:
        make_run(tmp_path / "runs", name, params=params)
    write_depths(tmp_path / "results" / "depth.json", trained)
    cmd = [sys.executable, "-m", "nonlinear_advantage", "aggregate", "--params", "params.yaml",
           "--out", "results/summary.csv", "--depth", "results/depth.json", "runs"]
    subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True)
    rows = {r["run"]: r for r in csv.DictReader((tmp_path / "results" / "summary.csv").open())}
    assert len(rows) == len(trained) + 1
    own, twin = rows["digits/baseline/d14-own-s0"], rows["digits/baseline/d14-wide-s0"]
    assert (own["widened"], twin["widened"]) == ("False", "True")
    assert {k: v for k, v in twin.items() if k not in ("run", "widened")} == {
        k: v for k, v in own.items() if k not in ("run", "widened")}


def test_plot_files_hold_a_series_per_arm(tmp_path):
    """--plots: per dataset, accuracy against APL (a row per run) and the arms' mean curves, a column per arm."""
    names = ["digits/dense/s0", "digits/sparse/shift0.2-s0", "digits/sparse/shift1.5-s0", "digits/finetune/s0",
             "digits/posthoc/shift1.5-s0"]
    dirs = [make_run(tmp_path / "runs", n) for n in names]
    (dirs[2] / "history.csv").write_text("epoch,lr,test_acc\n1,0.1,0.2\n2,0.05,0.3\n")
    for run in dirs[3:]:  # synthetic: a run of its whole budget of 1, and a run that continues 1 epoch to 2
        (run / "history.csv").write_text("epoch,lr,test_acc\n1,0.1,0.6\n")
    for run, (epochs, budget) in zip(dirs, [(2, 2), (2, 2), (2, 2), (1, 1), (1, 2)], strict=True):
        metrics = json.loads((run / "metrics.json").read_text())
        (run / "metrics.json").write_text(json.dumps(metrics | {"epochs": epochs, "budget_epochs": budget}))
    plots = tmp_path / "plots"
    aggregate.aggregate(dirs, tmp_path / "summary.csv", write_depths(tmp_path / "depth.json", names), plots=plots)
    assert sorted(p.relative_to(plots).as_posix() for p in plots.rglob("*.csv")) == [
        "accuracy/digits.csv", "curves/digits.csv"]
    label = {arm: plan.ARMS[arm].label for arm in plan.ARMS}
    accuracy = list(csv.DictReader((plots / "accuracy" / "digits.csv").open()))
    assert list(accuracy[0])[:1 + len(plan.ARMS)] == ["apl_normalized", *aggregate.plot_series()]
    assert {r["run"]: next(v for k, v in r.items() if k in aggregate.plot_series() and v) for r in accuracy} == {
        "digits/dense/s0": "0.5", "digits/sparse/shift0.2-s0": "0.5", "digits/sparse/shift1.5-s0": "0.5",
        "digits/finetune/s0": "0.5", "digits/posthoc/shift1.5-s0": "0.5"}
    assert all(sum(1 for k in aggregate.plot_series() if r[k]) == 1 for r in accuracy)  # one arm's value a row
    curves = {(r["epoch"], arm): (float(r[label[arm]]), int(r["runs"]))
              for r in csv.DictReader((plots / "curves" / "digits.csv").open()) for arm in plan.ARMS if r[label[arm]]}
    assert curves[("1", "sparse")] == (pytest.approx(0.3), 2)  # the mean of the arm's runs
    assert curves[("2", "sparse")] == (pytest.approx(0.4), 2)
    # epochs since initialization: the post-hoc run's one epoch is the budget's second
    assert curves[("1", "finetune")] == (pytest.approx(0.6), 1) and curves[("2", "posthoc")] == (pytest.approx(0.6), 1)
    assert ("1", "posthoc") not in curves and curves[("2", "dense")] == (pytest.approx(0.5), 1)


def test_depth_beyond_zeros_slopes_and_nonlinear_change(tmp_path):
    """The *_eps and slope columns come from the depth file (empty for a ReLU net), the change of
    the nonlinear count from the history's last two epochs (empty for a one-epoch history)."""
    names = ["digits/dense/s0", "digits/sparse/shift0.2-s0", "digits/sparse/shift1.5-s0", "digits/baseline/d8-own-s0"]
    dirs = [make_run(tmp_path / "runs", n) for n in names]
    (dirs[0] / "history.csv").write_text("epoch,nonlinear_channels\n1,8\n2,8\n3,8\n")
    (dirs[1] / "history.csv").write_text("epoch,nonlinear_channels\n1,8\n2,6\n3,5\n")
    (dirs[2] / "history.csv").write_text("epoch,nonlinear_channels\n1,4\n")
    depth = tmp_path / "depth.json"
    measure.write_depth(depth, {n: {"run": n, **DEPTH} for n in names[:3]} | {
        names[3]: {"run": names[3], **DEPTH, "slope_q10": None, "slope_q50": None, "slope_q90": None}})
    out = tmp_path / "summary.csv"
    aggregate.aggregate(dirs, out, depth)
    rows = {r["run"]: r for r in csv.DictReader(out.open())}
    assert [rows[n]["nonlinear_change"] for n in names] == ["0", "-1", "", ""]  # the baseline's history has no count
    sparse, relu = rows[names[1]], rows[names[3]]
    assert (sparse["depth_eps"], sparse["apl_normalized_eps"], sparse["nonlinear_channels_eps"]) == ("0.1", "2.0", "2")
    assert [sparse[f"slope_q{q}"] for q in (10, 50, 90)] == ["0.0", "0.25", "0.75"]
    assert [relu[f"slope_q{q}"] for q in (10, 50, 90)] == ["", "", ""]
    first = out.read_bytes()
    aggregate.aggregate(dirs[::-1], out, depth)
    assert out.read_bytes() == first


def test_an_old_depth_file_asks_to_measure_again(tmp_path):
    run = make_run(tmp_path, "digits/dense/s0")
    old = {k: v for k, v in DEPTH.items() if not k.endswith("_eps") and not k.startswith("slope_")}
    measure.write_depth(tmp_path / "depth.json", {"digits/dense/s0": {"run": "digits/dense/s0", **old}})
    with pytest.raises(UserError, match="missing keys depth_eps, apl_normalized_eps"):
        aggregate.aggregate([run], tmp_path / "summary.csv", tmp_path / "depth.json")
