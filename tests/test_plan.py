"""params.yaml: the schema's errors name the key, run ids, run configs, widened widths."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nonlinear_advantage import models, plan
from nonlinear_advantage.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "fixtures" / "tiny_params.yaml"


@pytest.fixture
def params():
    return yaml.safe_load(TINY.read_text())


@pytest.mark.parametrize("path", ["params.yaml", "config/paper.yaml", "tests/fixtures/tiny_params.yaml"])
def test_shipped_params_are_valid(path):
    assert plan.run_ids(plan.load_params(ROOT / path))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda p: p["sweep"]["lambdas"].append(-0.1), "sweep.lambdas[2]: -0.1 is less than the minimum of 0"),
        (lambda p: p["train"].update(batch_size="64"), "train.batch_size: '64' is not of type 'integer'"),
        (lambda p: p["datasets"].update(imagenet=p["datasets"]["digits"]), "datasets: 'imagenet' is not one of"),
        (lambda p: p["model"].update(depth=10), "model.depth: 10 is not a ResNet depth"),
        (lambda p: p["baseline"]["depths"].append(9), "baseline.depths[2]: 9 is not a ResNet depth"),
        (lambda p: p.update(epochs=3), "(top level): Additional properties are not allowed ('epochs' was unexpected)"),
    ],
)
def test_schema_errors_name_the_key(params, edit, message):
    edit(params)
    with pytest.raises(UserError, match="tiny") as info:
        plan.validate(params, source="tiny")
    assert message in str(info.value)


def test_validate_params_cli_stops_with_the_key(tmp_path, params):
    params["sweep"]["lambdas"][1] = -1
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(params))
    proc = subprocess.run([sys.executable, "-m", "nonlinear_advantage", "validate-params", str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "sweep.lambdas[1]: -1 is less than the minimum of 0" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_run_ids(params):
    assert plan.run_ids(params) == [
        "digits/baseline/d8-own-s0", "digits/baseline/d8-wide-s0",
        "digits/baseline/d14-own-s0", "digits/baseline/d14-wide-s0",
        "digits/dense/s0",
        "digits/sparse/lam0.01-s0", "digits/sparse/lam0.1-s0",
        "digits/posthoc/lam0.01-s0", "digits/posthoc/lam0.1-s0",
    ]  # fmt: skip


def test_run_config_per_arm(params):
    sparse = plan.run_config(params, "digits/sparse/lam0.1-s0")
    assert sparse["name"] == "digits/sparse/lam0.1-s0"
    assert sparse["data"] == "data/prepared/digits.pt"
    assert sparse["lam"] == 0.1 and sparse["init_from"] is None and sparse["model"]["activation"] == "prelu"
    assert set(sparse) == {"name", "data", "model", "epochs", "batch_size", "optimizer", "schedule", "lam",
                           "proximal", "eps", "augment", "seed", "device", "precision", "channels_last",
                           "compile", "init_from"}  # docs/interfaces.md, "Run config"
    posthoc = plan.run_config(params, "digits/posthoc/lam0.01-s0")
    assert posthoc["init_from"] == "runs/digits/dense/s0/checkpoint.pt"
    assert posthoc["epochs"] == params["posthoc"]["epochs"]
    assert posthoc["optimizer"]["lr"] == params["posthoc"]["lr"]
    assert plan.run_config(params, "digits/dense/s0")["lam"] == 0.0
    own = plan.run_config(params, "digits/baseline/d8-own-s0")["model"]
    assert own == {**own, "depth": 8, "width": 4, "activation": "relu"}
    with pytest.raises(UserError, match="digits/sparse/lam0.5-s0"):
        plan.run_config(params, "digits/sparse/lam0.5-s0")


def test_changing_one_lambda_changes_only_its_runs(params):
    before = {r: plan.run_config(params, r) for r in plan.run_ids(params)}
    edited = copy.deepcopy(params)
    edited["sweep"]["lambdas"][1] = 0.2
    after = {r: plan.run_config(edited, r) for r in plan.run_ids(edited)}
    assert {r for r in after if before.get(r) != after[r]} == {"digits/sparse/lam0.2-s0", "digits/posthoc/lam0.2-s0"}


def test_widened_baseline_matches_the_full_network(params):
    full = models.build_model("resnet", depth=14, width=4, in_channels=1, num_classes=10)
    for depth in (8, 14):
        width = plan.run_config(params, f"digits/baseline/d{depth}-wide-s0")["model"]["width"]
        # Same answer as models.widen_to_match, which builds every candidate network.
        assert width == models.widen_to_match("resnet", depth, 4, models.parameter_count(full),
                                              in_channels=1, num_classes=10, activation="relu")


@pytest.mark.parametrize("arch, depths", [("resnet", (8, 14, 20)), ("plain", (4, 7, 11))])
@pytest.mark.parametrize("dataset", ["digits", "cifar100"])
@pytest.mark.parametrize("activation", ["prelu", "relu"])
def test_parameter_count_without_torch_agrees(arch, depths, dataset, activation):
    in_channels, classes = plan.DATASET_SHAPES[dataset]
    for depth in depths:
        for width in (3, 8):
            net = models.build_model(arch, depth=depth, width=width, in_channels=in_channels,
                                     num_classes=classes, activation=activation)
            assert plan.parameter_count(arch, depth, width, dataset, activation) == models.parameter_count(net)


def test_dataset_shapes_agree_with_data():
    data = pytest.importorskip("nonlinear_advantage.data")
    assert set(plan.DATASET_SHAPES) == set(data.DATASETS)
    assert set(plan.schema()["properties"]["datasets"]["propertyNames"]["enum"]) == set(data.DATASETS)
    for name, (in_channels, classes) in plan.DATASET_SHAPES.items():
        assert data.DATASETS[name].shape[0] == in_channels, name
        assert len(data.DATASETS[name].classes) in (0, classes), name  # 0: read from the archive


def test_plan_does_not_import_torch():
    code = "import sys, nonlinear_advantage.plan; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
