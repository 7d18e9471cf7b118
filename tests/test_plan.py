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
        (lambda p: p["model"].update(depth=10), "model.depth: 10 is not a resnet depth (6n+2"),
        (lambda p: p["baseline"]["depths"].append(9), "baseline.depths[2]: 9 is not a resnet depth"),
        (lambda p: p.update(epochs=3), "(top level): Additional properties are not allowed ('epochs' was unexpected)"),
        (lambda p: p.update(analysis={"tolerance": -0.01}), "analysis.tolerance: -0.01 is less than the minimum of 0"),
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
    assert sparse["fields"] == {"arm": "sparse", "dataset": "digits", "seed": 0, "lam": 0.1}
    assert set(sparse) == {"name", "fields", "data", "model", "epochs", "batch_size", "optimizer", "schedule", "lam",
                           "proximal", "eps", "augment", "seed", "threads", "device", "precision", "channels_last",
                           "compile", "init_from"}  # workflow/schemas/run.schema.json
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
    from test_models import widen_to_match

    full = models.build_model("resnet", depth=14, width=4, in_channels=1, num_classes=10)
    for depth in (8, 14):
        width = plan.run_config(params, f"digits/baseline/d{depth}-wide-s0")["model"]["width"]
        assert width == widen_to_match("resnet", depth, 4, models.parameter_count(full),
                                       in_channels=1, num_classes=10, activation="relu")


def _perturb_all_but(params: dict, keep: list[str], dataset: str) -> dict:
    """A copy of params where every leaf outside ``keep`` (dotted keys) is changed."""
    out = copy.deepcopy(params)
    kept = {k.format(dataset=dataset) for k in keep}

    def walk(tree, prefix):
        for key, value in tree.items():
            path = f"{prefix}{key}"
            if any(path == k or path.startswith(k + ".") or k.startswith(path + ".") for k in kept):
                if isinstance(value, dict) and path not in kept:
                    walk(value, path + ".")
                continue
            if isinstance(value, bool):
                tree[key] = not value
            elif isinstance(value, int | float) and key not in ("depth", "train_size", "val_size", "test_size"):
                tree[key] = value + 1
    walk(out, "")
    return out


@pytest.mark.parametrize("arm", list(plan.ARMS))
def test_a_run_config_reads_only_the_keys_its_arm_declares(params, arm):
    """DVC's params deps are the arm's `reads`: a key read but not declared would not rerun the stage."""
    run = next(r for r in plan.runs(params) if r.arm == arm)
    keep = list(plan.ARMS[arm].reads) + list(plan.ARMS[arm].all_axes().values())
    perturbed = _perturb_all_but(params, keep, run.fields["dataset"])
    assert perturbed != params
    assert plan.run_config(perturbed, run.id) == plan.run_config(params, run.id)


def test_runs_carry_their_fields_and_ids_are_unique(params):
    runs = plan.runs(params)
    assert len({r.id for r in runs}) == len(runs)
    for run in runs:
        assert run.id == plan.ARMS[run.arm].pattern.format(**run.fields)
        assert set(run.fields) == set(plan.ARMS[run.arm].all_axes())


def test_code_modules_follow_imports():
    assert "trainer" in plan.code_modules("trainer") and "report" not in plan.code_modules("trainer")
    assert "report" in plan.code_modules("report") and "trainer" not in plan.code_modules("report")
    assert "torch" not in plan.code_modules("report")
    assert plan.code_digest("trainer") != plan.code_digest("report")


def test_plan_does_not_import_torch():
    code = "import sys, nonlinear_advantage.plan; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
