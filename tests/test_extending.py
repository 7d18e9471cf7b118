"""docs/extending.md, exercised: a toy dataset and a toy architecture added through the
registries alone travel plan -> train -> measure -> aggregate."""

import csv

import pytest
import torch
import yaml
from torch import nn

from nonlinear_advantage import aggregate, architectures, fileio, measure, plan, trainer
from nonlinear_advantage.datasets import DATASETS, Dataset
from nonlinear_advantage.models import Classifier, conv_bn, make_activation
from repo_copy import TINY


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


def test_toy_dataset_and_architecture_through_the_pipeline(registered, tmp_path, monkeypatch):
    params = yaml.safe_load(TINY.read_text())
    params["datasets"] = {"toy": {"train_size": 60, "val_size": 21, "test_size": 21, "pool": 1, "epochs": 2}}
    params["model"] = {"arch": "toy", "depth": 3, "width": 4, "slope_init": 0.25}
    params["baseline"] = {"depths": [2], "plain_depths": [2], "widths": ["own", "wide"]}
    params["sweep"]["shifts"] = [1.5]
    params["posthoc"].update(epochs=1, shifts=[1.5])
    params["late"] = {"starts": [0.5], "shifts": [1.5]}
    params = plan.validate(params, source="toy params")  # the schema's enums come from the registries

    monkeypatch.chdir(tmp_path)
    write_toy_data(tmp_path / "data" / "prepared" / "toy.pt")
    runs = plan.runs(params)
    assert [r.arm for r in runs] == ["baseline", "baseline", "shallow", "shallow", "dense", "sparse", "pretrain",
                                     "posthoc", "late"]
    for run in runs:  # in plan order: the dense start exists before the post-hoc run starts from it
        trainer.train(plan.run_config(params, run.id), tmp_path / plan.run_dir(run.id), progress=False)
    summary, depth = tmp_path / "summary.csv", tmp_path / "depth.json"
    measure.write_depth(depth, measure.measure_study(params, tmp_path / "runs"))
    aggregate.aggregate([tmp_path / plan.run_dir(r.id) for r in runs], summary, depth)

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
        assert int(row["budget_epochs"]) == (1 if run.arm == "pretrain" else 2), run.id
        assert int(row["test_size"]) == 21
    late = next(r for r in rows if r["arm"] == "late")
    sparse = next(r for r in rows if r["arm"] == "sparse")  # same shift, the prior on from epoch 0
    assert int(late["prior_start_epoch"]) == 1 and float(late["lam"]) > float(sparse["lam"])
    # the trainer's summed thresholds are the shift the plan computed λ for (λ has 4 digits)
    for row in (late, sparse, next(r for r in rows if r["arm"] == "posthoc")):
        assert float(row["max_prior_shift"]) == pytest.approx(1.5, rel=5e-4), row["run"]
    assert float(dense["max_prior_shift"]) == 0.0
