"""params.yaml: the schema's errors name the key, run ids, run configs, widened widths, equal budgets."""

import copy
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nonlinear_advantage import architectures, models, plan
from nonlinear_advantage.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "fixtures" / "tiny_params.yaml"


@pytest.fixture
def params():
    return yaml.safe_load(TINY.read_text())


PARAMS_FILES = ["params.yaml", "config/paper.yaml", "config/laptop.yaml", "tests/fixtures/tiny_params.yaml"]


@pytest.mark.parametrize("path", PARAMS_FILES)
def test_shipped_params_are_valid(path):
    assert plan.run_ids(plan.load_params(ROOT / path))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda p: p["sweep"]["shifts"].append(-0.1),
         "sweep.shifts[2]: -0.1 is less than or equal to the minimum of 0"),
        (lambda p: p["train"].update(batch_size="64"), "train.batch_size: '64' is not of type 'integer'"),
        (lambda p: p["datasets"].update(imagenet=p["datasets"]["digits"]), "datasets: 'imagenet' is not one of"),
        (lambda p: p["model"].update(depth=10), "model.depth: 10 is not a resnet depth (6n+2"),
        (lambda p: p["baseline"]["depths"].append(9), "baseline.depths[1]: 9 is not a resnet depth"),
        (lambda p: p["baseline"]["plain_depths"].append(1), "baseline.plain_depths[1]: 1 is not a plain depth"),
        (lambda p: p["baseline"].pop("plain_depths"), "baseline: 'plain_depths' is a required property"),
        (lambda p: p.pop("late"), "(top level): 'late' is a required property"),
        (lambda p: p["late"]["starts"].append(1.0), "late.starts[1]: 1.0 is greater than or equal to the maximum of 1"),
        (lambda p: p["posthoc"]["shifts"].append(-1),
         "posthoc.shifts[1]: -1 is less than or equal to the minimum of 0"),
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
    params["sweep"]["shifts"][1] = -1
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(params))
    proc = subprocess.run([sys.executable, "-m", "nonlinear_advantage", "validate-params", str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "sweep.shifts[1]: -1 is less than or equal to the minimum of 0" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_run_ids(params):
    assert plan.run_ids(params) == [
        "digits/baseline/d8-own-s0", "digits/baseline/d8-wide-s0",
        "digits/shallow/d3-own-s0", "digits/shallow/d3-wide-s0",
        "digits/dense/s0",
        "digits/sparse/shift0.2-s0", "digits/sparse/shift1.5-s0",
        "digits/finetune/s0",
        "digits/posthoc/shift1.5-s0",
        "digits/late/at0.5-shift1.5-s0",
    ]  # fmt: skip


def test_run_config_per_arm(params):
    budget = params["datasets"]["digits"]["epochs"]
    sparse = plan.run_config(params, "digits/sparse/shift1.5-s0")
    assert sparse["name"] == "digits/sparse/shift1.5-s0"
    assert sparse["data"] == "data/prepared/digits.pt"
    # λ from the shift: 4 steps per epoch (400/100), one-cycle from 0.1 without warm-up over 8 steps:
    # Σ lr = 0.1·(8 − 28/8) = 0.45; C = 4 + 2·2·(4 + 8 + 16) = 116 slopes of a ResNet-14 width 4
    # the slopes step at slope_lr_scale (10) times that lr, so the same shift takes a tenth of the λ
    assert params["train"]["optimizer"]["slope_lr_scale"] == 10
    assert sparse["lam"] == pytest.approx(1.5 * 116 * 0.1 / (10 * 0.45), rel=5e-4)
    assert sparse["init_from"] is None and sparse["model"]["activation"] == "prelu"
    assert sparse["epochs"] == budget and sparse["prior_start_epoch"] == 0
    assert sparse["fields"] == {"arm": "sparse", "dataset": "digits", "seed": 0, "shift": 1.5}
    assert set(sparse) == {  # workflow/schemas/run.schema.json
        "name", "fields", "data", "data_check", "model", "epochs", "batch_size", "optimizer", "schedule", "lam",
        "prior_start_epoch", "proximal", "prox_form", "eps", "augment", "seed", "threads", "device", "precision",
        "channels_last", "compile", "init_from", "init", "save_states"}
    assert sparse["init"] == "weights" and sparse["save_states"] == {}
    assert sparse["prox_form"] == "lazy"  # the prior's arms only: a λ = 0 run is the same under either form
    assert "prox_form" not in plan.run_config(params, "digits/dense/s0")
    # post-hoc: the dense run's final state, then P epochs from posthoc.lr, the prior on from B
    posthoc = plan.run_config(params, "digits/posthoc/shift1.5-s0")
    assert posthoc["init_from"] == "runs/digits/dense/s0/states/end.pt" and posthoc["init"] == "state"
    assert posthoc["epochs"] == budget + params["posthoc"]["epochs"] and posthoc["prior_start_epoch"] == budget
    assert posthoc["schedule"] == {**params["train"]["schedule"], "epochs": budget, "tail_lr": params["posthoc"]["lr"],
                                   "tail": "linear"}
    assert posthoc["optimizer"] == params["train"]["optimizer"]  # the dense run's, whose momentum it continues
    # λ = shift·C·(1 − μ)/Σ lr: 1 epoch of 4 steps falling linearly from 0.02: Σ lr = 0.02·(1 + ¾ + ½ + ¼)
    assert posthoc["lam"] == float(f"{1.5 * 116 * 0.1 / (10 * 0.02 * 2.5):.4g}")
    finetune = plan.run_config(params, "digits/finetune/s0")  # its λ = 0 twin
    assert finetune["lam"] == 0.0 and finetune["fields"] == {"arm": "finetune", "dataset": "digits", "seed": 0}
    # the prior (λ, and its prox form) is all that sets them apart
    assert {k: v for k, v in finetune.items() if k not in ("name", "fields", "lam")} == {
        k: v for k, v in posthoc.items() if k not in ("name", "fields", "lam", "prox_form")}
    assert plan.ARMS[plan.POSTHOC].control == plan.FINETUNE and plan.ARMS[plan.LATE].control == plan.DENSE
    late = plan.run_config(params, "digits/late/at0.5-shift1.5-s0")
    assert late["fields"] == {"arm": "late", "dataset": "digits", "seed": 0, "start": 0.5, "shift": 1.5}
    assert late["lam"] == pytest.approx(1.5 * 116 * 0.1 / (10 * 0.1 * (4 - 22 / 8)), rel=5e-4)  # steps 4..7 only
    assert late["epochs"] == budget and late["prior_start_epoch"] == 1  # round(0.5 · 2)
    # it continues the dense run from the state that run kept for it, after epoch 1
    assert late["init_from"] == "runs/digits/dense/s0/states/at0.5.pt" and late["init"] == "state"
    dense = plan.run_config(params, "digits/dense/s0")
    assert dense["lam"] == 0.0 and dense["prior_start_epoch"] == 0 and dense["epochs"] == budget
    assert dense["save_states"] == {"at0.5": 1, "end": budget} and dense["init_from"] is None
    assert posthoc["save_states"] == {} == finetune["save_states"]
    own = plan.run_config(params, "digits/baseline/d8-own-s0")["model"]
    assert own == {**own, "arch": "resnet", "depth": 8, "width": 4, "activation": "relu"}
    shallow = plan.run_config(params, "digits/shallow/d3-own-s0")
    assert shallow["model"] == {**shallow["model"], "arch": "plain", "depth": 3, "width": 4, "activation": "relu"}
    assert shallow["lam"] == 0.0 and shallow["epochs"] == budget and shallow["init_from"] is None
    wide = plan.run_config(params, "digits/shallow/d3-wide-s0")["model"]
    assert wide["arch"] == "plain" and wide["activation"] == "relu" and wide["width"] > 4
    with pytest.raises(UserError, match="digits/sparse/shift0.7-s0"):
        plan.run_config(params, "digits/sparse/shift0.7-s0")
    with pytest.raises(UserError, match="digits/posthoc/shift0.2-s0"):  # post-hoc has its own grid
        plan.run_config(params, "digits/posthoc/shift0.2-s0")


@pytest.mark.parametrize("key, index, changed", [
    ("sweep.shifts", 1, {"digits/sparse/shift0.5-s0"}),
    ("posthoc.shifts", 0, {"digits/posthoc/shift0.5-s0"}),
    ("late.shifts", 0, {"digits/late/at0.5-shift0.5-s0"}),
])
def test_changing_one_shift_changes_only_its_runs(params, key, index, changed):
    before = {r: plan.run_config(params, r) for r in plan.run_ids(params)}
    edited = copy.deepcopy(params)
    plan.lookup(edited, key)[index] = 0.5
    after = {r: plan.run_config(edited, r) for r in plan.run_ids(edited)}
    assert {r for r in after if before.get(r) != after[r]} == changed


@pytest.mark.parametrize("key, value", [("epochs", 3), ("lr", 0.01)])
def test_changing_the_posthoc_tail_changes_only_the_runs_after_the_dense_one(params, key, value):
    """The post-hoc epochs and lr come after the dense run's B: they change the post-hoc runs and their
    finetune control, never the dense run they continue."""
    params["datasets"]["digits"]["epochs"] = 5
    before = {r: plan.run_config(params, r) for r in plan.run_ids(params)}
    edited = copy.deepcopy(params)
    edited["posthoc"][key] = value
    after = {r: plan.run_config(edited, r) for r in plan.run_ids(edited)}
    assert {r for r in after if before[r] != after[r]} == {"digits/finetune/s0", "digits/posthoc/shift1.5-s0"}
    epochs = 5 + edited["posthoc"]["epochs"]
    assert after["digits/finetune/s0"]["epochs"] == epochs == after["digits/posthoc/shift1.5-s0"]["epochs"]


def test_widened_baselines_take_the_nearest_parameter_count(params):
    from test_models import nearest_to_match

    full = models.parameter_count(models.build_model("resnet", depth=14, width=4, in_channels=1, num_classes=10))
    for run, arch, depth in (("digits/baseline/d8-wide-s0", "resnet", 8), ("digits/shallow/d3-wide-s0", "plain", 3)):
        model = plan.run_config(params, run)["model"]
        assert model["arch"] == arch and model["depth"] == depth
        assert model["width"] == nearest_to_match(arch, depth, full, in_channels=1, num_classes=10,
                                                  activation="relu"), run


@pytest.mark.parametrize("path", PARAMS_FILES)
def test_equal_budgets_asserted_on_the_plan(path):
    """Every network trains the dataset's budget B in all, but the post-hoc runs and their finetune
    control: the dense run's B, then P more (B + P)."""
    params = plan.load_params(ROOT / path)
    runs = plan.runs(params)
    assert {r.arm for r in runs} == set(plan.ARMS)  # every arm is in each shipped study
    for dataset, sizes in params["datasets"].items():
        budget, posthoc = sizes["epochs"], params["posthoc"]["epochs"]
        budgets = {r.id: plan.budget_epochs(params, r) for r in runs if r.fields["dataset"] == dataset}
        after = {plan.POSTHOC, plan.FINETUNE}
        for run in (r for r in runs if r.fields["dataset"] == dataset):
            assert budgets[run.id] == (budget + posthoc if run.arm in after else budget), run.id
            config = plan.run_config(params, run.id)
            if run.arm in after:  # the dense run's final state, then P epochs
                assert config["epochs"] == budget + posthoc and config["prior_start_epoch"] == budget
                assert config["init_from"] == f"runs/{dataset}/dense/s{run.fields['seed']}/states/end.pt"
                assert (config["lam"] > 0) == (run.arm == plan.POSTHOC)
            elif run.arm == "late":  # the dense run up to its prior start: B in all
                assert config["epochs"] == budget and 0 < config["prior_start_epoch"] < budget
                dense = plan.run_config(params, f"{dataset}/dense/s{run.fields['seed']}")
                name = f"at{run.fields['start']}"
                assert config["init_from"] == f"runs/{dataset}/dense/s{run.fields['seed']}/states/{name}.pt"
                assert dense["save_states"][name] == config["prior_start_epoch"]
            else:
                assert config["epochs"] == budget and config["init_from"] is None


def test_budget_epochs_counts_the_checkpoint_a_run_starts_from(params, monkeypatch):
    """budget_epochs follows init_from (not a hard-coded arm): a longer chain adds up."""
    params["datasets"]["digits"]["epochs"] = 7
    params["posthoc"]["epochs"] = 3
    by_id = {r.id: r for r in plan.runs(params)}
    assert plan.budget_epochs(params, by_id["digits/finetune/s0"]) == 10
    assert plan.budget_epochs(params, by_id["digits/posthoc/shift1.5-s0"]) == 10
    # a run that continues another from a state counts that run's epochs among its own
    assert plan.budget_epochs(params, by_id["digits/late/at0.5-shift1.5-s0"]) == 7
    monkeypatch.setitem(plan.ARMS, "late", dataclasses.replace(plan.ARMS["late"], init_state=None))
    assert plan.budget_epochs(params, by_id["digits/late/at0.5-shift1.5-s0"]) == 14  # from its final weights


def test_the_dense_run_keeps_a_state_per_late_start(params):
    """One state per start, named by the start (the same names on every dataset, so that Snakemake's
    rule and DVC's matrix can name them); each at that dataset's start epoch. A changed late shift
    leaves the dense run's config as it is; a new start adds a state to it."""
    params["datasets"]["digits"]["epochs"] = 4
    params["datasets"]["fashion_mnist"] = {**params["datasets"]["digits"], "epochs": 5}
    params["late"]["starts"] = [0.5, 0.25]
    params = plan.validate(params)
    dense = {ds: plan.run_config(params, f"{ds}/dense/s0") for ds in params["datasets"]}
    # and its final state, for the post-hoc and finetune runs
    assert dense["digits"]["save_states"] == {"at0.25": 1, "at0.5": 2, "end": 4}
    assert dense["fashion_mnist"]["save_states"] == {"at0.25": 1, "at0.5": 3, "end": 5}  # halves rounded up
    assert plan.state_keepers(params) == (["digits/dense/s0", "fashion_mnist/dense/s0"], ["at0.25", "at0.5", "end"])
    assert plan.train_outputs("{run}", ["at0.5"])["state0"] == "runs/{run}/states/at0.5.pt"
    edited = copy.deepcopy(params)
    edited["late"]["shifts"] = [0.5]
    assert plan.run_config(edited, "fashion_mnist/dense/s0") == dense["fashion_mnist"]
    assert all(not plan.run_config(params, run)["save_states"] for run in plan.run_ids(params) if "/dense/" not in run)


def test_posthoc_epochs_are_extra_epochs(params):
    """P comes after the dense run's B: any P >= 1, however it compares with B."""
    params["posthoc"]["epochs"] = 3  # the tiny budget is 2
    plan.validate(params, source="tiny")
    params["posthoc"]["epochs"] = 0
    with pytest.raises(UserError, match=r"posthoc\.epochs: 0 is less than the minimum of 1"):
        plan.validate(params, source="tiny")


def test_a_grid_per_dataset_gives_each_dataset_its_own_runs(params):
    params["datasets"]["fashion_mnist"] = {**params["datasets"]["digits"], "pool": 2}
    params["sweep"]["shifts"] = {"digits": [0.2], "fashion_mnist": [0.9, 1.5]}
    params["late"]["shifts"] = {"fashion_mnist": [0.7], "digits": [1.5]}
    runs = plan.run_ids(plan.validate(params, source="tiny"))
    assert [r for r in runs if "/sparse/" in r] == [
        "digits/sparse/shift0.2-s0", "fashion_mnist/sparse/shift0.9-s0", "fashion_mnist/sparse/shift1.5-s0"]
    assert [r for r in runs if "/late/" in r] == [
        "digits/late/at0.5-shift1.5-s0", "fashion_mnist/late/at0.5-shift0.7-s0"]
    assert [r for r in runs if "/posthoc/" in r] == ["digits/posthoc/shift1.5-s0", "fashion_mnist/posthoc/shift1.5-s0"]


@pytest.mark.parametrize("grid, message", [
    ({"digits": [0.2]}, "sweep.shifts: no grid for fashion_mnist"),
    ({"digits": [0.2], "fashion_mnist": [1.0], "cifar10": [1.0]}, "sweep.shifts: cifar10 is not in datasets"),
    ({"digits": [0.2], "fashion_mnist": [-1]},
     "sweep.shifts.fashion_mnist[0]: -1 is less than or equal to the minimum"),
    ({"digits": [0.2], "fashion_mnist": []}, "sweep.shifts.fashion_mnist: [] should be non-empty"),
    ({}, "sweep.shifts: {} should be non-empty"),
])
def test_a_grid_per_dataset_names_exactly_the_datasets(params, grid, message):
    params["datasets"]["fashion_mnist"] = {**params["datasets"]["digits"], "pool": 2}
    params["sweep"]["shifts"] = grid
    with pytest.raises(UserError, match="tiny") as info:
        plan.validate(params, source="tiny")
    assert message in str(info.value)


def test_runs_carry_their_fields_and_ids_are_unique(params):
    runs = plan.runs(params)
    assert len({r.id for r in runs}) == len(runs)
    for run in runs:
        assert run.id == plan.pattern(run.arm).format(**run.fields) and run.dir == run.id
        assert set(run.fields) == set(plan.ARMS[run.arm].all_axes())


def test_code_modules_follow_imports():
    assert "trainer" in plan.code_modules("trainer") and "report" not in plan.code_modules("trainer")
    assert "report" in plan.code_modules("report") and "trainer" not in plan.code_modules("report")
    assert "torch" not in plan.code_modules("report")
    assert plan.code_digest("trainer") != plan.code_digest("report")


def test_the_trainers_code_holds_no_plan_and_no_registry_rows():
    """A training job trains from its resolved config: the plan, the registries and the data
    stage's download code are not what decides its output (a new arm or row retrains nothing)."""
    trainer = plan.code_modules("trainer")
    assert not {"plan", "architectures", "datasets", "data", "analysis", "aggregate"} & set(trainer)
    assert {"models", "prelu", "depth", "schemas", "prepared"} <= set(trainer)
    # the schema it validates with counts; the params schema does not
    files = plan.code_files("trainer")
    assert "src/nonlinear_advantage/schema_files/run.schema.json" in files
    assert not any("params.schema" in f for f in files)
    assert "src/nonlinear_advantage/schema_files/params.schema.json" in plan.code_files("plan")
    for name in ("aggregate", "figures", "report", "measure"):  # they read params.yaml
        assert "src/nonlinear_advantage/schema_files/params.schema.json" in plan.code_files(name), name


def test_every_registry_builder_is_in_the_trainers_code():
    """Builders are loaded by name from the run config: their module must be a module the
    trainer's code digest covers, or an edit to it would retrain nothing."""
    trainer = {f"nonlinear_advantage.{m}" for m in plan.code_modules("trainer")}
    for name, arch in architectures.ARCHITECTURES.items():
        assert arch.builder.split(":")[0] in trainer, name


def test_plan_does_not_import_torch():
    code = "import sys, nonlinear_advantage.plan; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


@pytest.mark.parametrize("starts", [[0.2], [0.75], [0.25, 0.3]])
def test_late_starts_must_fall_inside_the_budget_at_distinct_epochs(params, starts):
    """B = 2: 0.2 starts at epoch 0 (the sparse arm), 0.75 at 2 (never), 0.25 and 0.3 both at epoch 1."""
    params["late"]["starts"] = starts
    with pytest.raises(UserError, match=r"late\.starts\[\d\]: .* datasets\.digits\.epochs \(2\)"):
        plan.validate(params, source="tiny")


def test_identical_runs_train_once(params):
    """A widened baseline as deep as the full net keeps its width (a ReLU net has only the slopes
    fewer parameters): it is the own-width net, trained once and listed under both."""
    params["baseline"]["depths"] = [8, 14]
    params = plan.validate(params, source="tiny")
    by_id = {run.id: run for run in plan.runs(params)}
    twin, own = by_id["digits/baseline/d14-wide-s0"], by_id["digits/baseline/d14-own-s0"]
    assert plan.run_config(params, twin.id)["model"] == plan.run_config(params, own.id)["model"]
    assert twin.dir == own.id and own.dir == own.id and twin.fields["kind"] == "wide"
    assert twin.id not in plan.run_ids(params) and own.id in plan.run_ids(params)
    assert by_id["digits/baseline/d8-wide-s0"].dir == "digits/baseline/d8-wide-s0"  # wider: its own run
    assert len(plan.run_ids(params)) == len(by_id) - 1


def test_lam_is_set_after_the_arms_edits(params, monkeypatch):
    """λ follows the config as the trainer runs it, whatever an arm edits and in which order:
    an arm that halves the epochs and doubles the lr of a late start gets the λ of that config."""
    run, late = next(r for r in plan.runs(params) if r.arm == plan.LATE), plan.ARMS[plan.LATE]
    before = plan.run_config(params, run.id)

    def edit(params, fields, config):  # the late arm's own edit, then more after it
        late.configure(params, fields, config)
        config["optimizer"]["lr"] *= 2

    monkeypatch.setitem(plan.ARMS, plan.LATE, dataclasses.replace(late, configure=edit))
    after = plan.run_config(params, run.id)
    assert after["lam"] == pytest.approx(before["lam"] / 2, rel=1e-3)  # twice the Σlr: half the λ
    train_size = params["datasets"]["digits"]["train_size"]
    assert after["lam"] == plan.prior_lam(after, run.fields["shift"], train_size, "digits")
