"""docs/extending.md, exercised: a toy dataset and a toy architecture added through the
registries alone travel plan -> train -> measure -> aggregate; a toy arm added as one entry of
the arm table, its params section and its logic travels on to the figures and the PDF report."""

import ast
import copy
import csv
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from nonlinear_advantage import (
    aggregate,
    analysis,
    architectures,
    figures,
    fileio,
    measure,
    plan,
    report,
    schemas,
    trainer,
)
from nonlinear_advantage.datasets import DATASETS, Dataset
from nonlinear_advantage.models import Classifier, conv_bn, make_activation
from repo_copy import TINY
from report_pdf import assert_every_run_in_tables, needs_poppler


def toy_net(depth, width, in_channels, num_classes, act, slope_init) -> nn.Module:
    """depth − 1 conv-bn-activation layers of one width, then the classifier."""
    layers, cin = [], in_channels
    for _ in range(depth - 1):
        layers += [conv_bn(cin, width), make_activation(act, width, slope_init)]
        cin = width
    return Classifier(nn.Sequential(*layers), cin, num_classes)


def toy_parameters(depth, width, in_channels, num_classes, activation) -> int:
    act = 1 if activation == "prelu" else 0
    total, cin = 0, in_channels
    for _ in range(depth - 1):
        total += cin * width * 9 + 2 * width + act * width
        cin = width
    return total + cin * num_classes + num_classes


@pytest.fixture
def registered(monkeypatch):
    """The two registry entries a user would add (datasets.py, architectures.py)."""
    monkeypatch.setitem(DATASETS, "toy", Dataset(shape=(1, 6, 6), reader="none", files={}, classes=("a", "b", "c"),
                                                 num_classes=3, images=(81, 21)))
    monkeypatch.setitem(architectures.ARCHITECTURES, "toy", architectures.Architecture(
        "test_extending:toy_net", toy_parameters, lambda d: d >= 2, ">= 2"))
    plan.params_schema.cache_clear()
    yield
    plan.params_schema.cache_clear()


def write_toy_data(path, seed=0) -> None:
    """A prepared file in the format data.load_prepared checks."""
    gen = torch.Generator().manual_seed(seed)

    def split(n):
        y = torch.arange(n) % 3
        x = (torch.rand(n, 1, 6, 6, generator=gen) * 80 + y.view(-1, 1, 1, 1) * 60).to(torch.uint8)
        return x, y

    (tx, ty), (vx, vy), (sx, sy) = split(60), split(21), split(21)
    fileio.torch_save(dict(name="toy", train_x=tx, train_y=ty, val_x=vx, val_y=vy, test_x=sx, test_y=sy,
                           classes=["a", "b", "c"], mean=[0.3], std=[0.2], seed=seed, pool=1), path)


def toy_params() -> dict:
    """The tiny study on the toy dataset and architecture: one seed, one shift per arm."""
    params = yaml.safe_load(TINY.read_text())
    params["datasets"] = {"toy": {"train_size": 60, "val_size": 21, "test_size": 21, "pool": 1, "epochs": 2}}
    params["model"] = {"arch": "toy", "depth": 3, "width": 4, "slope_init": 0.25}
    params["baseline"] = {"depths": [2], "plain_depths": [2], "widths": ["own", "wide"]}
    params["sweep"]["shifts"] = [1.5]
    params["posthoc"].update(epochs=1, shifts=[1.5])
    params["late"] = {"starts": [0.5], "shifts": [1.5]}
    return params


def train_all(params: dict, root: Path) -> list[plan.Run]:
    """The pipeline on ``root``: `configure` (root/configs), each run trained from its config file as
    `train --config` does, the study measured (root/depth.json) and aggregated (root/summary.csv)."""
    write_toy_data(root / "data" / "prepared" / "toy.pt")
    runs = plan.runs(params)
    plan.write_configs(params, root / plan.CONFIG_DIR)
    for run_id in plan.run_ids(params):  # in plan order: the dense state exists before the post-hoc run continues it
        config = yaml.safe_load(Path(plan.config_path(run_id, root=str(root / plan.CONFIG_DIR))).read_text())
        trainer.train(config, root / plan.run_dir(run_id), progress=False)
    measure.write_depth(root / "depth.json", measure.measure_study(params, root / "runs"))
    aggregate.aggregate([root / plan.run_dir(r.dir) for r in runs], root / "summary.csv", root / "depth.json",
                        entries=runs)
    return runs


def test_toy_dataset_and_architecture_through_the_pipeline(registered, tmp_path, monkeypatch):
    params = plan.validate(toy_params(), source="toy params")  # the schema's enums come from the registries

    monkeypatch.chdir(tmp_path)
    assert [r.arm for r in plan.runs(params)] == ["baseline", "baseline", "shallow", "shallow", "dense", "sparse",
                                                  "finetune", "posthoc", "late"]
    assert plan.run_ids(params) == [r.id for r in plan.runs(params)]  # every network differs: each trains
    runs = train_all(params, tmp_path)
    summary = tmp_path / "summary.csv"

    rows = list(csv.DictReader(summary.open()))
    assert [r["run"] for r in rows] == [r.id for r in runs]
    assert {r["dataset"] for r in rows} == {"toy"}
    assert {r["arm"]: r["arch"] for r in rows} == {**dict.fromkeys(plan.ARMS, "toy"), "shallow": "plain"}
    dense = next(r for r in rows if r["arm"] == "dense")
    assert int(dense["params"]) == toy_parameters(3, 4, 1, 3, "prelu")  # the closed form is the built net's
    wide = next(r for r in rows if r["widened"] == "True" and r["arm"] == "baseline")
    # the nearest parameter count to the full network's, built by the toy closed form
    off = {w: abs(toy_parameters(2, w, 1, 3, "relu") - int(dense["params"])) for w in range(1, 40)}
    assert int(wide["width"]) > 4 and off[int(wide["width"])] == min(off.values())
    assert int(wide["params"]) == toy_parameters(2, int(wide["width"]), 1, 3, "relu")
    assert float(dense["apl_normalized"]) == 2.0  # two activation layers, all nonlinear
    # equal budgets: the trainer's count (through the checkpoint) is the plan's
    for row, run in zip(rows, runs, strict=True):
        assert int(row["budget_epochs"]) == plan.budget_epochs(params, run), run.id
        assert int(row["budget_epochs"]) == (3 if run.arm in (plan.FINETUNE, plan.POSTHOC) else 2), run.id
        assert int(row["test_size"]) == 21
    late = next(r for r in rows if r["arm"] == "late")
    sparse = next(r for r in rows if r["arm"] == "sparse")  # same shift, the prior on from epoch 0
    assert int(late["prior_start_epoch"]) == 1 and float(late["lam"]) > float(sparse["lam"])
    # the trainer's summed thresholds are the shift the plan computed λ for (λ has 4 digits)
    for row in (late, sparse, next(r for r in rows if r["arm"] == "posthoc")):
        assert float(row["max_prior_shift"]) == pytest.approx(1.5, rel=5e-4), row["run"]
    assert float(dense["max_prior_shift"]) == 0.0


# ---- a toy arm: what a user adds for one (docs/extending.md, (c)) ----------------------------
THIN = "thin"  # plan.py: the arm's name, spelt once


def _thin(params: dict, fields: dict, config: dict) -> None:
    """plan.py: the arm's logic. The dense network at another width."""
    config["model"]["width"] = fields["width"]


# params.schema.json: the arm's section, optional and with defaults, so existing params files stay valid
THIN_SCHEMA = {
    "description": "Toy arm: the dense network at other widths.", "type": "object", "additionalProperties": False,
    "default": {}, "properties": {"widths": {"type": "array", "minItems": 1, "uniqueItems": True,
                                            "items": {"type": "integer", "minimum": 1}, "default": [2]}},
}


def add_toy_arm(monkeypatch) -> None:
    """The arm table's entry and the schema's section (as edits to plan.py and params.schema.json would)."""
    schema = copy.deepcopy(schemas.load(schemas.PARAMS))
    schema["properties"][THIN] = THIN_SCHEMA
    load = schemas.load
    monkeypatch.setattr(schemas, "load", lambda name: schema if name == schemas.PARAMS else load(name))
    monkeypatch.setitem(plan.ARMS, THIN, plan.Arm("dense, other width", "w{width}-s{seed}",
                                                  axes={"width": "thin.widths"}, configure=_thin))
    plan.params_schema.cache_clear()
    plan._plan.cache_clear()  # the plan of these params, as the arm table stood before


@pytest.fixture
def clear_plan_caches():
    yield
    plan.params_schema.cache_clear()
    plan._plan.cache_clear()


@needs_poppler
def test_toy_arm_through_the_pipeline(registered, clear_plan_caches, tmp_path, monkeypatch):
    before = plan.validate(toy_params(), source="toy params")
    ids = plan.run_ids(before)
    configs_before = plan.write_configs(before, tmp_path / "before")
    add_toy_arm(monkeypatch)
    params = plan.validate(toy_params(), source="toy params")  # no `thin:` in the file: the schema's default
    assert params[THIN] == {"widths": [2]}
    assert [r.id for r in plan.runs(params) if r.arm == THIN] == ["toy/thin/w2-s0"]
    assert plan.run_ids(params) == [*ids, "toy/thin/w2-s0"]

    monkeypatch.chdir(tmp_path)
    train_all(params, tmp_path)
    # what the existing runs' training jobs depend on, their configs (and the dataset rows), is unchanged
    for path in map(Path, configs_before):
        assert (tmp_path / plan.CONFIG_DIR / path.relative_to(tmp_path / "before")).read_bytes() == path.read_bytes()
    assert (tmp_path / plan.config_path("toy/thin/w2-s0")).is_file()
    th = analysis.Thresholds.from_params(params)
    written = figures.make_figures(tmp_path / "summary.csv", tmp_path / "runs", tmp_path / "depth.json",
                                   tmp_path / "figures", th)
    assert len(written) == len(figures.FIGURES)
    pdf = report.build_report(tmp_path / "summary.csv", tmp_path / "figures", tmp_path / "report.pdf", th=th)

    summary = analysis.load_summary(tmp_path / "summary.csv")
    thin = summary[summary.arm == THIN]
    assert list(thin.run) == ["toy/thin/w2-s0"] and list(thin.width) == [2] and list(thin.activation) == ["prelu"]
    tables = assert_every_run_in_tables(summary, pdf, {name: arm.label for name, arm in plan.ARMS.items()})
    row = next(r for r in tables if r["arm"] == "dense, other width")
    assert (row["width"], row["seeds"], row["test acc % ± sd"]) == ("2", "1", f"{100 * thin.test_acc.iloc[0]:.2f}")
    assert [r["arm"] for r in tables][-1] == "dense, other width"  # the arm table's order: last added, last


def test_optional_params_sections_have_defaults():
    """A params section that a file may leave out (a new arm's) has a default: older files stay valid."""
    schema = schemas.load(schemas.PARAMS)
    optional = set(schema["properties"]) - set(schema["required"])
    assert optional and all("default" in schema["properties"][key] for key in optional)


def test_arms_are_named_only_in_the_arm_table():
    """No module but plan.py spells an arm's name: they import plan's constants."""
    for path in sorted(plan.PACKAGE.glob("*.py")):
        if path.name == "plan.py":
            continue
        literals = {node.value for node in ast.walk(ast.parse(path.read_text()))
                    if isinstance(node, ast.Constant) and isinstance(node.value, str)}
        assert not literals & set(plan.ARMS), f"{path.name} spells {sorted(literals & set(plan.ARMS))}"
