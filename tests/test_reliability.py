"""Issue 20's probes: non-finite numbers, YAML 1.1 numbers, a prepared file that is not the run's,
an init_from that does not fit, and a full disk in every stage. Each ends in exit 2 naming the key
or the file, through the CLI (in-process: the same path as a pipeline job, faster)."""

import errno
import json
import math
import os
import re

import pytest
import torch
import yaml

from nonlinear_advantage import figures, fileio, measure, plan, trainer
from nonlinear_advantage.cli import main
from repo_copy import TINY
from synthetic_study import write_study

RUN = "digits/dense/s0"


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The tiny study's digits, downloaded (scikit-learn's copy) and prepared as the plan says, and its
    dense run trained for one epoch from the plan's own run config."""
    root = tmp_path_factory.mktemp("digits")
    params = plan.load_params(TINY)
    raw, prepared = root / "raw", root / "digits.pt"
    assert main(["download", "digits", "--out", str(raw)]) == 0
    split = plan.prepare_args(params, "digits").split()
    assert main(["prepare", "digits", "--raw", str(raw), "--out", str(prepared), *split]) == 0
    # one epoch: no state to keep before the last (the late runs of the plan are not trained here)
    config = dict(plan.run_config(params, RUN), data=str(prepared), epochs=1, save_states={})
    trainer.train(config, root / "run", progress=False)
    return dict(root=root, params=params, raw=raw, prepared=prepared, split=split, config=config, run=root / "run")


def write_config(path, config) -> str:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


def params_file(tmp_path, edit=None, text_edit=None):
    text = TINY.read_text()
    if edit:
        params = yaml.safe_load(text)
        edit(params)
        text = yaml.safe_dump(params, sort_keys=False)
    if text_edit:
        assert text_edit[0] in text
        text = text.replace(*text_edit)
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return str(path)


def refused(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err, err
    return err


# ---- item 2: every number finite -----------------------------------------------------------------


@pytest.mark.parametrize(("key", "value"), [("sweep.shifts[0]", math.nan), ("train.optimizer.lr", math.inf),
                                            ("posthoc.lr", -math.inf), ("model.slope_init", math.nan),
                                            ("late.starts[0]", math.nan), ("analysis.tolerance", math.inf)])
def test_non_finite_params_are_refused_naming_the_key(tmp_path, capsys, key, value):
    def edit(params):
        *parents, last = re.findall(r"\w+", key)
        node = params
        for part in parents:
            node = node.setdefault(part, {}) if not part.isdigit() else node[int(part)]
        node[int(last) if last.isdigit() else last] = value

    path = params_file(tmp_path, edit)
    assert (".nan" if math.isnan(value) else ".inf") in open(path).read()  # YAML's spelling, as a user writes it
    err = refused(capsys, ["validate-params", path])
    assert f"{path} is invalid:\n  {key}: {value} is not a finite number" in err, err


@pytest.mark.parametrize(("change", "line"), [({"lam": math.inf}, "lam: inf is not a finite number"),
                                              ({"fields": {"shift": math.nan}}, "fields.shift: nan is not a finite")])
def test_non_finite_run_config_is_refused_naming_the_key(digits, tmp_path, capsys, change, line):
    config = write_config(tmp_path / "run.yaml", {**digits["config"], **change})
    err = refused(capsys, ["train", "--config", config, "--out", str(tmp_path / "out")])
    assert f"{config} is invalid:\n  {line}" in err
    assert not (tmp_path / "out").exists()


def test_metrics_json_is_strict_json_and_a_non_finite_value_stops_the_run(digits, tmp_path):
    text = (digits["run"] / "metrics.json").read_text()
    json.loads(text, parse_constant=lambda name: pytest.fail(f"metrics.json holds {name}"))
    metrics = dict(json.loads(text), test_loss=math.nan, val_loss=math.inf)
    with pytest.raises(ValueError, match=r"metrics.json: not a finite number: test_loss = nan, val_loss = inf"):
        trainer.write_metrics(tmp_path, metrics)
    assert not (tmp_path / "metrics.json").exists()


# ---- item 5: YAML 1.1 numbers ----------------------------------------------------------------------


@pytest.mark.parametrize(("old", "new", "fix"), [("lr: 0.1", "lr: 1.0e6", "write 1.0e+6"),
                                                 ("weight_decay: 5.0e-4", "weight_decay: 5e-4", "write 5.0e-4")])
def test_a_number_yaml_reads_as_text_gets_its_fix(tmp_path, capsys, old, new, fix):
    path = params_file(tmp_path, text_edit=(old, new))
    err = refused(capsys, ["validate-params", path])
    text = new.split(": ")[1]
    assert f"'{text}' is a string, not a number: YAML 1.1" in err and fix in err, err


# ---- item 3: inputs are what the params say ---------------------------------------------------------


def test_the_plans_run_config_expects_its_prepared_file(digits):
    assert digits["config"]["data_check"] == {"dataset": "digits", "image_shape": [1, 8, 8], "train_size": 400,
                                              "val_size": 100, "test_size": 300, "pool": 1, "seed": 0}
    assert torch.load(digits["prepared"], weights_only=True)["pool"] == 1  # prepare records it
    assert (digits["run"] / "metrics.json").is_file()  # and the file it wrote passes the check


def _pooled(d):
    for split in ("train", "val", "test"):
        d[f"{split}_x"] = torch.nn.functional.avg_pool2d(d[f"{split}_x"].float(), 2).round().to(torch.uint8)


@pytest.mark.parametrize(("edit", "line"), [
    (lambda d: d.update(name="fashion_mnist"), "dataset: expected digits, found fashion_mnist"),
    (lambda d: d.update(seed=1), "seed: expected 0, found 1"),
    (lambda d: d.update(train_x=d["train_x"][:390], train_y=d["train_y"][:390]), "train_size: expected 400, found 390"),
    (lambda d: d.pop("pool"), "pool: expected 1, found none recorded"),
    (_pooled, "image_shape: expected [1, 8, 8], found [1, 4, 4]"),
], ids=["dataset", "seed", "split size", "pool", "image shape"])
def test_train_refuses_a_prepared_file_that_is_not_the_runs(digits, tmp_path, capsys, edit, line):
    d = torch.load(digits["prepared"], weights_only=True)
    edit(d)
    bad = tmp_path / "data" / "prepared" / "digits.pt"
    fileio.torch_save(d, bad)
    config = write_config(tmp_path / "run.yaml", {**digits["config"], "data": str(bad)})
    out = tmp_path / "runs" / "digits" / "dense" / "s0"
    err = refused(capsys, ["train", "--config", config, "--out", str(out)])
    assert err.startswith(f"error: {bad}: not the prepared data this run expects") and f"\n  {line}" in err, err
    assert not (tmp_path / "runs").exists()  # no empty run directory left behind


def test_prepare_refuses_a_pool_that_does_not_divide_the_images(digits, tmp_path, capsys):
    out = tmp_path / "p.pt"
    err = refused(capsys, ["prepare", "digits", "--raw", str(digits["raw"]), "--out", str(out), "--pool", "3"])
    assert "--pool 3 does not divide the 8×8 images" in err and "use one of 1, 2, 4, 8" in err, err
    assert not out.exists()


@pytest.mark.parametrize(("edit", "line"), [
    (lambda p: p["datasets"]["digits"].update(pool=3),
     "datasets.digits.pool: 3 does not divide the 8×8 images of digits"),
    (lambda p: p["datasets"]["digits"].update(train_size=1500),
     "datasets.digits: train_size 1500 + val_size 100 + test_size 300 = 1900 is more than the 1797 images digits has"),
    (lambda p: p["datasets"].update(fashion_mnist=dict(p["datasets"]["digits"], train_size=59000, val_size=5000)),
     "datasets.fashion_mnist: train_size 59000 + val_size 5000 = 64000 is more than the 60000 training images"),
    (lambda p: p["datasets"].update(fashion_mnist=dict(p["datasets"]["digits"], test_size=10001)),
     "datasets.fashion_mnist.test_size: 10001 is more than the 10000 test images fashion_mnist has"),
], ids=["pool", "one pool", "training set", "test set"])
def test_validate_params_refuses_what_the_dataset_table_rules_out(tmp_path, capsys, edit, line):
    path = params_file(tmp_path, edit)
    assert line in refused(capsys, ["validate-params", path])


@pytest.mark.parametrize(("model", "why"), [
    ({"width": 8}, r"\d+ tensors differ in shape, the first: \S+ is \[4, 1, 3, 3\] in the checkpoint, "
                   r"\[8, 1, 3, 3\] in the model"),
    ({"depth": 20}, r"\d+ keys not in the checkpoint: \S+, \S+, \S+ and \d+ more"),
], ids=["width", "depth"])
def test_an_init_from_that_does_not_fit_names_keys_and_shapes(digits, tmp_path, capsys, model, why):
    config = dict(digits["config"], init_from=str(digits["run"] / "checkpoint.pt"))
    config["model"] = {**config["model"], **model}
    out = tmp_path / "runs" / "posthoc"
    err = refused(capsys, ["train", "--config", write_config(tmp_path / "run.yaml", config), "--out", str(out)])
    assert f"init_from {digits['run'] / 'checkpoint.pt'} does not fit this model (resnet, depth" in err
    assert re.search(why, err), err
    assert not (tmp_path / "runs").exists()


# ---- item 4: a full disk in every stage ------------------------------------------------------------


@pytest.fixture(scope="module")
def study(tmp_path_factory, digits):
    """Inputs of the analysis stages: the synthetic study, one seed, with two of the figures."""
    root = tmp_path_factory.mktemp("study")
    summary = write_study(root, seeds=(0,))
    depth = root / "depth.json"
    measure.write_depth(depth, {RUN: measure.measure(digits["run"])})
    return dict(root=root, summary=summary, depth=depth)


def _stage(stage, digits, study, tmp_path) -> tuple[list[str], list]:
    """A stage's command line, and its outputs (files, or one directory)."""
    out = tmp_path / "out"
    runs, depth = ["--runs", str(study["root"] / "runs")], ["--depth", str(study["root"] / "results" / "depth.json")]
    if stage == "prepare":
        return ["prepare", "digits", "--raw", str(digits["raw"]), "--out", str(out), *digits["split"]], [out]
    if stage == "measure":
        return ["measure", "--run", str(digits["run"]), "--out", str(out)], [out]
    if stage == "aggregate":
        return (["aggregate", "--out", str(out / "summary.csv"), "--depth", str(study["depth"]),
                 "--curves", str(out / "curves.csv"), str(digits["run"])], [out / "summary.csv", out / "curves.csv"])
    if stage == "configure":
        return (["configure", "--params", str(TINY), "--out", str(out)],
                [out / "datasets" / "digits.json", out / "digits" / "dense" / "s0.yaml"])
    if stage == "generate":  # it reads the checkout's params.yaml (a grid's form shapes dvc.yaml)
        out.mkdir(parents=True, exist_ok=True)
        (out / "params.yaml").write_text(TINY.read_text())
        return ["generate", "--root", str(out)], [out / "dvc.yaml", out / "workflow" / "report" / "figures.rst"]
    if stage == "figures":
        return ["figures", "--summary", str(study["summary"]), *runs, *depth, "--out", str(out)], [out]
    figures_dir = tmp_path / "figures"  # the report's input, drawn here
    assert main(["figures", "--summary", str(study["summary"]), *runs, *depth, "--out", str(figures_dir)]) == 0
    return ["report", "--summary", str(study["summary"]), "--figures", str(figures_dir), "--out", str(out)], [out]


# Every stage that writes files, failing at its first file; those that write a set, at the second too.
CASES = [(stage, 1) for stage in ("prepare", "measure", "aggregate", "configure", "generate", "figures", "report")]
CASES += [(stage, 2) for stage in ("aggregate", "configure", "generate", "figures")]


@pytest.mark.parametrize(("stage", "fail_at"), CASES, ids=[f"{stage}-file {n}" for stage, n in CASES])
def test_a_full_disk_is_exit_2_naming_the_file_and_the_previous_output_stays(
        digits, study, tmp_path, monkeypatch, capsys, stage, fail_at):
    monkeypatch.setattr(figures, "FIGURES", figures.FIGURES[:2])  # two figures make a set; the report shows them
    argv, outputs = _stage(stage, digits, study, tmp_path)
    before = {}
    for path in outputs:  # the previous outputs, which must stay as they are
        target = path / "old.png" if stage == "figures" else path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"previous " + str(path).encode())
        before[target] = target.read_bytes()
    real, calls = fileio._fill, []

    def fill(path, data):
        calls.append(path)
        if len(calls) >= fail_at:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(path, data)

    monkeypatch.setattr(fileio, "_fill", fill)
    err = refused(capsys, argv)
    assert len(calls) == fail_at
    first = err.splitlines()[0]
    assert first.endswith(": cannot write: No space left on device"), err
    assert first.startswith(f"error: {tmp_path / 'out'}"), err  # the output (or the file of the set) it was writing
    assert {p: p.read_bytes() for p in before} == before
    out = tmp_path / "out"
    inputs = {out / "params.yaml"}  # generate's input, written there by _stage
    assert sorted(p for p in out.parent.rglob("*") if p.is_file() and p.is_relative_to(out) and p not in inputs) \
        == sorted(before)
    assert not [p for p in tmp_path.rglob(".*")], "a temporary file or directory is left"
