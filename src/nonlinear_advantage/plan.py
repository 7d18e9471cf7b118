"""The study plan: validate ``params.yaml``, list every run, and give each run its config.

The **arm table** (:data:`ARMS`) is the one place that says which runs exist: per arm, its
run-id pattern, its sweep axes, the params keys its config reads, how it is configured and
which run it starts from. Snakemake (one training rule), the generated dvc.yaml, the trainer
and aggregate all derive from it. A run id is the run's directory under ``runs/``:

    digits/dense/s0            digits/sparse/shift0.9-s0    digits/posthoc/shift0.9-s0
    digits/baseline/d8-own-s0  digits/baseline/d8-wide-s0

A run's fields (dataset, arm, shift, seed, ...) travel as data in its config (``fields``), so
nothing parses an id back. A grid value is written as ``str(value)`` of the YAML number, which
is how DVC interpolates it too. Grids are prior shifts (how far the prior can move a slope over
the run, see schedule.py); each run's λ is computed from its shift. No torch here: the
Snakefile imports this module, and ``snakemake -n`` must stay fast.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import itertools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml

from . import architectures, schedule, schemas
from .datasets import DATASETS
from .errors import UserError

TRAIN_FILES = ("checkpoint.pt", "metrics.json", "history.csv", "config.yaml")  # what `train` writes
# Every arm sweeps these; an arm's own axes come after them.
COMMON_AXES = {"dataset": "datasets", "seed": "seeds"}
# Runtime switches of the run config; params.yaml may leave them out.
RUNTIME_DEFAULTS = {"device": "auto", "precision": "auto", "channels_last": "auto", "compile": "auto"}


# ---- params --------------------------------------------------------------------------------


def validate(params, source: str = "params") -> dict:
    """Check ``params`` against the schema; raise UserError listing every problem by key."""
    params = schemas.check(params, schemas.PARAMS, source)
    # What JSON schema cannot say: each architecture's own depth rule, and the post-hoc budget.
    depths = {("model.depth", params["model"]["arch"]): params["model"]["depth"]}
    base = params["baseline"]
    depths |= {(f"baseline.depths[{i}]", params["model"]["arch"]): d for i, d in enumerate(base["depths"])}
    depths |= {(f"baseline.plain_depths[{i}]", "plain"): d for i, d in enumerate(base["plain_depths"])}
    for (key, arch), depth in depths.items():
        try:
            architectures.check_depth(arch, depth)
        except UserError as exc:
            raise UserError(f"{source} is invalid:\n  {key}: {exc}") from None
    for name, sizes in params["datasets"].items():
        epochs = [start_epoch(s, sizes["epochs"]) for s in params["late"]["starts"]]
        for i, epoch in enumerate(epochs):
            if not 0 < epoch < sizes["epochs"] or epoch in epochs[:i]:
                raise UserError(f"{source} is invalid:\n  late.starts[{i}]: {params['late']['starts'][i]} of "
                                f"datasets.{name}.epochs ({sizes['epochs']}) starts the prior at epoch {epoch}: it "
                                "must fall strictly inside the budget, at an epoch no other start has")
        if params["posthoc"]["epochs"] >= sizes["epochs"]:
            raise UserError(f"{source} is invalid:\n  posthoc.epochs: {params['posthoc']['epochs']} must be less than "
                            f"datasets.{name}.epochs ({sizes['epochs']}): post-hoc runs start from a dense net of "
                            "the budget less the post-hoc epochs")
    return params


def read_params(path) -> dict:
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"params file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise UserError(f"params file {path} is not valid YAML: {exc}") from None


def load_params(path) -> dict:
    """Read and validate a params file (``params.yaml`` or ``config/paper.yaml``)."""
    return validate(read_params(path), source=str(path))


def lookup(params: dict, key: str):
    """The value at a dotted params key (``sweep.shifts``); a mapping gives its keys."""
    value = params
    for part in key.split("."):
        value = value[part]
    return list(value) if isinstance(value, dict) else value


# ---- the arm table ---------------------------------------------------------------------------


def _prior(params: dict, fields: dict, config: dict) -> None:
    """λ from the grid's prior shift, for this run's steps, learning rates and channels."""
    dataset = fields["dataset"]
    config["lam"] = schedule.lam_for_shift(fields["shift"], config, params["datasets"][dataset]["train_size"],
                                           prior_channels(config["model"], dataset))


def _pretrain(params: dict, fields: dict, config: dict) -> None:
    # The dense start of the post-hoc runs: the budget less the post-hoc epochs, so that every
    # post-hoc network has trained as many epochs in all as the dense and sparse ones.
    config["epochs"] -= params["posthoc"]["epochs"]


def _posthoc(params: dict, fields: dict, config: dict) -> None:
    config["epochs"] = params["posthoc"]["epochs"]
    config["optimizer"]["lr"] = params["posthoc"]["lr"]
    _prior(params, fields, config)


def start_epoch(start: float, budget: int) -> int:
    """The epoch at which a late start's prior switches on: start·B, halves rounded up."""
    return math.floor(start * budget + 0.5)


def _late(params: dict, fields: dict, config: dict) -> None:
    config["prior_start_epoch"] = start_epoch(fields["start"], config["epochs"])
    _prior(params, fields, config)


def _baseline(params: dict, fields: dict, config: dict) -> None:
    width = config["model"]["width"] if fields["kind"] == "own" else widened_width(params, fields["dataset"],
                                                                                 fields["depth"])
    config["model"].update(depth=fields["depth"], width=width, activation="relu")


def _shallow(params: dict, fields: dict, config: dict) -> None:
    width = config["model"]["width"]
    if fields["kind"] == "wide":
        width = widened_width(params, fields["dataset"], fields["depth"], arch="plain")
    config["model"].update(arch="plain", depth=fields["depth"], width=width, activation="relu")


@dataclass(frozen=True)
class Arm:
    pattern: str  # run id with {field} slots: one directory under runs/
    axes: dict[str, str] = field(default_factory=dict)  # field -> params key listing its values
    reads: tuple[str, ...] = ("model", "train", "datasets.{dataset}.epochs")  # params keys its config reads
    configure: Callable[[dict, dict, dict], None] = lambda params, fields, config: None  # edits the config
    init_from: str | None = None  # run-id pattern of the run whose checkpoint it starts from

    def all_axes(self) -> dict[str, str]:
        return COMMON_AXES | self.axes


BUDGET = ("model", "train", "datasets.{dataset}.epochs")  # what a run of the full budget reads
PRIOR = (*BUDGET, "datasets.{dataset}.train_size")  # and with the prior: λ follows the steps per epoch

ARMS: dict[str, Arm] = {
    # ReLU networks of similar depth: the full network's family, and plain CNNs down to APL 1.
    "baseline": Arm("{dataset}/baseline/d{depth}-{kind}-s{seed}",
                    axes={"depth": "baseline.depths", "kind": "baseline.widths"}, configure=_baseline),
    "shallow": Arm("{dataset}/shallow/d{depth}-{kind}-s{seed}",
                   axes={"depth": "baseline.plain_depths", "kind": "baseline.widths"}, configure=_shallow),
    "dense": Arm("{dataset}/dense/s{seed}"),
    "sparse": Arm("{dataset}/sparse/shift{shift}-s{seed}", axes={"shift": "sweep.shifts"}, reads=PRIOR,
                  configure=_prior),
    "pretrain": Arm("{dataset}/pretrain/s{seed}", reads=(*BUDGET, "posthoc.epochs"), configure=_pretrain),
    "posthoc": Arm("{dataset}/posthoc/shift{shift}-s{seed}", axes={"shift": "posthoc.shifts"},
                   reads=("model", "train", "posthoc", "datasets.{dataset}.train_size"), configure=_posthoc,
                   init_from="{dataset}/pretrain/s{seed}"),
    "late": Arm("{dataset}/late/at{start}-shift{shift}-s{seed}", axes={"start": "late.starts", "shift": "late.shifts"},
                reads=PRIOR, configure=_late),
}


@dataclass(frozen=True)
class Run:
    id: str
    arm: str
    fields: dict  # dataset, seed and the arm's own axes, as in params.yaml


def runs(params: dict, arms=tuple(ARMS)) -> list[Run]:
    """Every run of the study, in a fixed order: dataset, seed, arm, then the sweep's order."""
    out = []
    for dataset, seed in itertools.product(params["datasets"], params["seeds"]):
        for name in arms:
            arm = ARMS[name]
            values = [lookup(params, key) for key in arm.axes.values()]
            for combo in itertools.product(*values):
                fields = {"dataset": dataset, "seed": seed, **dict(zip(arm.axes, combo, strict=True))}
                out.append(Run(arm.pattern.format(**fields), name, fields))
    return out


@cache
def _runs_by_id(params_json: str) -> dict[str, Run]:
    return {run.id: run for run in runs(json.loads(params_json))}


def find_run(params: dict, run_id: str) -> Run:
    by_id = _runs_by_id(json.dumps(params, sort_keys=True))
    if run_id not in by_id:
        known = ", ".join(list(by_id)[:4])
        raise UserError(f"run {run_id!r} is not in the plan of these params (runs look like {known}, ...)")
    return by_id[run_id]


def run_ids(params: dict, arms=tuple(ARMS)) -> list[str]:
    return [run.id for run in runs(params, arms)]


def run_dir(run_id: str, root: str = "runs") -> str:
    return f"{root}/{run_id}"


def init_from(run: Run) -> str | None:
    """The checkpoint a run starts from, if its arm starts from another run."""
    pattern = ARMS[run.arm].init_from
    return f"{run_dir(pattern.format(**run.fields))}/checkpoint.pt" if pattern else None


def run_inputs(params: dict, run_id: str) -> dict[str, str]:
    """The files a run reads: its prepared data, and the checkpoint it starts from."""
    run = find_run(params, run_id)
    inputs = {"data": f"data/prepared/{run.fields['dataset']}.pt"}
    if init_from(run):
        inputs["init_from"] = init_from(run)
    return inputs


def run_config(params: dict, run_id: str) -> dict:
    """The trainer's run config for ``run_id`` (workflow/schemas/run.schema.json)."""
    run = find_run(params, run_id)
    model, train = params["model"], params["train"]
    config = {
        "name": run.id,
        "fields": {"arm": run.arm, **run.fields},
        "data": run_inputs(params, run_id)["data"],
        "model": {"arch": model["arch"], "depth": model["depth"], "width": model["width"],
                  "activation": "prelu", "slope_init": model["slope_init"]},
        "epochs": params["datasets"][run.fields["dataset"]]["epochs"],
        "batch_size": train["batch_size"],
        "optimizer": dict(train["optimizer"]),
        "schedule": dict(train["schedule"]),
        "lam": 0.0,
        "prior_start_epoch": 0,
        "proximal": train["proximal"],
        "eps": float(train["eps"]),
        "augment": dict(train["augment"]),
        "seed": run.fields["seed"],
        "threads": train.get("threads", 1),  # the schema's default
        **{key: train.get(key, default) for key, default in RUNTIME_DEFAULTS.items()},
        "init_from": init_from(run),
    }
    ARMS[run.arm].configure(params, run.fields, config)
    return copy.deepcopy(config)


# ---- what the Snakefile needs ------------------------------------------------------------------


def params_file(configfiles) -> str:
    """The one params file of a Snakemake run: the --configfile given, else params.yaml."""
    if len(configfiles) > 1:
        raise UserError("give one --configfile: the trainer reads a single params file, not a merge")
    if not configfiles:
        return "params.yaml"
    path = Path(configfiles[0]).absolute()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def check_same_as_file(config: dict, path) -> None:
    """--config edits would reach Snakemake but not the commands, which read the file."""
    if config != read_params(path):
        raise UserError(f"the config differs from {path}: edit the file (or copy it) instead of using --config")


def prepare_args(params: dict, dataset: str) -> str:
    """The split flags of ``prepare``."""
    sizes = params["datasets"][dataset]
    return (
        f"--train-size {sizes['train_size']} --val-size {sizes['val_size']} "
        f"--test-size {sizes['test_size']} --pool {sizes['pool']} --seed {params['data_seed']}"
    )


def train_outputs(run: str) -> dict[str, str]:
    """The files ``train`` writes for a run, named for Snakemake: checkpoint, metrics, ..."""
    return {name.split(".")[0]: f"runs/{run}/{name}" for name in TRAIN_FILES}


# ---- code as a dependency -------------------------------------------------------------------

PACKAGE = Path(__file__).resolve().parent
# Every command runs through these, whatever its stage module imports.
ENTRY_MODULES = ("__init__", "__main__", "cli", "errors")


def _imports(module: str) -> set[str]:
    """The package modules ``module`` imports (``from . import x``, ``from .x import y``), anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse((PACKAGE / f"{module}.py").read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found |= {node.module} if node.module else {alias.name for alias in node.names}
    return {m for m in found if (PACKAGE / f"{m}.py").is_file()}


@cache
def code_modules(module: str) -> tuple[str, ...]:
    """``module`` and every package module it reaches through imports, sorted."""
    seen, todo = set(), [module, *ENTRY_MODULES]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += _imports(name)
    return tuple(sorted(seen))


def code_files(module: str, root: Path | None = None) -> list[str]:
    """The source files a stage runs, relative to the checkout (DVC's deps)."""
    base = PACKAGE.relative_to(root) if root else Path("src/nonlinear_advantage")
    return [f"{base}/{m}.py" for m in code_modules(module)]


def code_digest(module: str) -> str:
    """One sha256 over the source a stage runs (Snakemake's params: a change reruns the stage)."""
    digest = hashlib.sha256()
    for name in code_modules(module):
        digest.update(name.encode() + b"\0" + (PACKAGE / f"{name}.py").read_bytes())
    return digest.hexdigest()[:16]


# ---- widened baselines ------------------------------------------------------------------------


def widened_width(params: dict, dataset: str, depth: int, arch: str | None = None) -> int:
    """The width whose ReLU network of ``arch`` (default: the full net's) and ``depth`` has the
    parameter count nearest the full network's."""
    model, ds = params["model"], DATASETS[dataset]
    args = (ds.shape[0], ds.num_classes)
    target = architectures.parameter_count(model["arch"], model["depth"], model["width"], *args, "prelu")
    return architectures.nearest_width(arch or model["arch"], depth, target, *args)


def prior_channels(model: dict, dataset: str) -> int:
    """C, the PReLU channels the prior averages over: the full net's parameters less its ReLU twin's."""
    ds = DATASETS[dataset]
    args = (model["arch"], model["depth"], model["width"], ds.shape[0], ds.num_classes)
    return architectures.parameter_count(*args, "prelu") - architectures.parameter_count(*args, "relu")


def budget_epochs(params: dict, run: Run) -> int:
    """Epochs a run's network has trained since initialization, its starting checkpoint's included."""
    epochs = run_config(params, run.id)["epochs"]
    pattern = ARMS[run.arm].init_from
    return epochs + (budget_epochs(params, find_run(params, pattern.format(**run.fields))) if pattern else 0)


# ---- CLI ---------------------------------------------------------------------------------


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("validate-params", help="check a params file against the schema and list its runs")
    p.add_argument("params", help="params.yaml or config/paper.yaml")
    p.set_defaults(func=_validate_cli)


def _validate_cli(args) -> int:
    params = load_params(args.params)
    ids = run_ids(params)
    print(f"{args.params}: valid, {len(ids)} runs over {', '.join(params['datasets'])}")
    return 0
