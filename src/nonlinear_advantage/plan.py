"""The study plan: validate ``params.yaml``, list every run, and give each run its config.

The **arm table** (:data:`ARMS`) is the one place that says which runs exist: per arm, its
name and label, its run-id pattern, its sweep axes, how its config differs from the full
budget's and which arm's run it starts from. Snakemake (one training rule), the generated
dvc.yaml, aggregate, the figures and the report all derive from it. A run id is the run's
directory under ``runs/``:

    digits/dense/s0            digits/sparse/shift0.9-s0    digits/posthoc/shift0.9-s0
    digits/baseline/d8-own-s0  digits/baseline/d8-wide-s0   digits/finetune/s0

A run's fields (dataset, arm, shift, seed, ...) travel as data in its config (``fields``), so
nothing parses an id back. ``configure`` writes every run's resolved config to
``configs/RUN.yaml``, and that file, not the plan, is what a training job depends on: a new
arm or registry row leaves the configs of existing runs, and so their training, as they are.
A grid value is written as ``str(value)`` of the YAML number, which
is how DVC interpolates it too. Grids are prior shifts (how far the prior can move a slope over
the run, see schedule.py); each run's λ is computed from its shift. A grid is one list for every
dataset, or a mapping from each dataset to its own (GRIDS). No torch here: the
Snakefile imports this module, and ``snakemake -n`` must stay fast.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import hashlib
import itertools
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml

from . import architectures, fileio, schedule, schemas
from .datasets import DATASETS
from .errors import UserError

TRAIN_FILES = ("checkpoint.pt", "metrics.json", "history.csv", "config.yaml")  # what `train` writes
# Every arm sweeps these; an arm's own axes come after them.
COMMON_AXES = {"dataset": "datasets", "seed": "seeds"}
# Runtime switches of the run config; params.yaml may leave them out.
RUNTIME_DEFAULTS = {"device": "auto", "precision": "auto", "channels_last": "auto", "compile": "auto"}


# ---- params --------------------------------------------------------------------------------


@cache
def params_schema() -> dict:
    """The params schema, with the names of the registries' datasets and architectures as enums."""
    schema = copy.deepcopy(schemas.load(schemas.PARAMS))
    schema["properties"]["model"]["properties"]["arch"]["enum"] = list(architectures.ARCHITECTURES)
    schema["properties"]["datasets"]["propertyNames"]["enum"] = list(DATASETS)
    return schema


def validate(params, source: str = "params") -> dict:
    """Check ``params`` against the schema; raise UserError listing every problem by key."""
    params = schemas.check(params, params_schema(), source)
    # What JSON schema cannot say: each architecture's own depth rule, the late starts' epochs, and
    # that a grid per dataset names exactly the study's datasets.
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
        _check_dataset(name, sizes, source)
    for key in GRIDS:
        grid = lookup(params, key)
        if isinstance(grid, dict) and set(grid) != set(params["datasets"]):
            missing, extra = sorted(set(params["datasets"]) - set(grid)), sorted(set(grid) - set(params["datasets"]))
            what = f"no grid for {', '.join(missing)}" if missing else f"{', '.join(extra)} is not in datasets"
            raise UserError(f"{source} is invalid:\n  {key}: {what}: a grid per dataset names exactly the "
                            "datasets of `datasets:`")
    return params


def _check_dataset(name: str, sizes: dict, source: str) -> None:
    """What validate knows of a dataset's entry without its data, from the dataset table: a pool that
    divides the images, and splits no larger than the table's image counts."""
    ds, key = DATASETS[name], f"datasets.{name}"
    (_, height, width), pool = ds.shape, sizes["pool"]
    if height % pool or width % pool:
        divisors = [k for k in range(1, min(height, width) + 1) if height % k == 0 and width % k == 0]
        raise UserError(f"{source} is invalid:\n  {key}.pool: {pool} does not divide the {height}×{width} images of "
                        f"{name} (pooling would drop pixels at the edge); use one of {', '.join(map(str, divisors))}")
    if ds.images is None:  # a row that does not give its image counts
        return
    (pool_images, test_images), (train, val, test) = ds.images, (sizes[f"{s}_size"] for s in ("train", "val", "test"))
    where = f"{name} has (its row of the dataset table, datasets.py)"
    if not test_images and train + val + test > pool_images:
        raise UserError(f"{source} is invalid:\n  {key}: train_size {train} + val_size {val} + test_size {test} = "
                        f"{train + val + test} is more than the {pool_images} images {where}")
    if test_images and train + val > pool_images:
        raise UserError(f"{source} is invalid:\n  {key}: train_size {train} + val_size {val} = {train + val} is more "
                        f"than the {pool_images} training images {where}")
    if test_images and test > test_images:
        raise UserError(f"{source} is invalid:\n  {key}.test_size: {test} is more than the {test_images} test images "
                        f"{where}")


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


# The grids that may be given per dataset: a mapping from each dataset's name to its list.
GRIDS = ("sweep.shifts", "posthoc.shifts", "late.shifts")


def lookup(params: dict, key: str, dataset: str | None = None):
    """The value at a dotted params key (``sweep.shifts``); of a grid given per dataset (GRIDS),
    ``dataset``'s list."""
    value = params
    for part in key.split("."):
        value = value[part]
    return value[dataset] if key in GRIDS and isinstance(value, dict) and dataset is not None else value


def per_dataset(params: dict, key: str) -> bool:
    """Whether a grid is given per dataset (a mapping) rather than one list for every dataset."""
    return isinstance(lookup(params, key), dict)


# ---- the arm table ---------------------------------------------------------------------------
# Arm names: analysis, figures and report import these; no other module spells one.
BASELINE, SHALLOW, DENSE, SPARSE, FINETUNE, POSTHOC, LATE = (
    "baseline", "shallow", "dense", "sparse", "finetune", "posthoc", "late")


def _posthoc(params: dict, fields: dict, config: dict) -> None:
    # Post-hoc as the paper means it: the dense run's final state (its lr cycle of B epochs), then P
    # more epochs from a small lr (falling linearly to 0, or constant: posthoc.tail), the prior on from
    # B. Budget B + P; finetune, its λ = 0 twin, trains the same P epochs without the prior.
    budget = config["epochs"]
    tail = params["posthoc"].get("tail", "linear")  # the schema's default
    config["schedule"] |= {"epochs": budget, "tail_lr": params["posthoc"]["lr"], "tail": tail}
    config["epochs"] = budget + params["posthoc"]["epochs"]
    config["prior_start_epoch"] = budget


def start_epoch(start: float, budget: int) -> int:
    """The epoch at which a late start's prior switches on: start·B, halves rounded up."""
    return math.floor(start * budget + 0.5)


def _late(params: dict, fields: dict, config: dict) -> None:
    config["prior_start_epoch"] = start_epoch(fields["start"], config["epochs"])


def _relu(params: dict, fields: dict, config: dict, arch: str) -> None:
    """A ReLU network of ``arch`` and the run's depth, at the full net's width or widened to its size."""
    width = config["model"]["width"]
    if fields["kind"] == "wide":
        width = widened_width(params, fields["dataset"], fields["depth"], arch=arch)
    config["model"].update(arch=arch, builder=architectures.architecture(arch).builder, depth=fields["depth"],
                           width=width, activation="relu")


def _baseline(params: dict, fields: dict, config: dict) -> None:
    _relu(params, fields, config, params["model"]["arch"])


def _shallow(params: dict, fields: dict, config: dict) -> None:
    _relu(params, fields, config, "plain")


@dataclass(frozen=True)
class Arm:
    label: str  # how figures and the report name it
    id_tail: str = "s{seed}"  # its run ids are {dataset}/{arm}/{id_tail}: one directory under runs/
    axes: dict[str, str] = field(default_factory=dict)  # field -> params key listing its values
    # Edits the run config: epochs, lr, start, model. It never sets λ: run_config does, after it,
    # from the shift and the config as edited (prior_lam), so no arm's order of edits matters.
    configure: Callable[[dict, dict, dict], None] = lambda params, fields, config: None
    init_from: str | None = None  # the arm whose run (same dataset and seed) it starts from
    # How: None, from that run's final weights (checkpoint.pt, a fresh optimiser); a name (a pattern
    # over the arm's own axes), continuing that run from the full state it kept for this run after
    # the epoch this run's prior starts (states/NAME.pt): up to there the two are one computation.
    init_state: str | None = None
    # The arm's λ = 0 twin (same dataset and seed): it must match the dense run within noise, and
    # the arm's gap is measured net of it (analysis.checks, analysis.matched_gap).
    control: str | None = None

    def all_axes(self) -> dict[str, str]:
        return COMMON_AXES | self.axes

    @property
    def prior(self) -> bool:
        """Whether the arm trains under the prior (its grid is of prior shifts)."""
        return "shift" in self.axes


ARMS: dict[str, Arm] = {
    # ReLU networks of similar depth: the full network's family, and plain CNNs down to APL 1.
    BASELINE: Arm("baseline", "d{depth}-{kind}-s{seed}", axes={"depth": "baseline.depths", "kind": "baseline.widths"},
                  configure=_baseline),
    SHALLOW: Arm("plain baseline", "d{depth}-{kind}-s{seed}",
                 axes={"depth": "baseline.plain_depths", "kind": "baseline.widths"}, configure=_shallow),
    DENSE: Arm("dense"),
    SPARSE: Arm("sparse (from scratch)", "shift{shift}-s{seed}", axes={"shift": "sweep.shifts"}),
    FINETUNE: Arm("post-hoc control (λ = 0)", configure=_posthoc, init_from=DENSE, init_state="end"),
    POSTHOC: Arm("post-hoc", "shift{shift}-s{seed}", axes={"shift": "posthoc.shifts"}, configure=_posthoc,
                 init_from=DENSE, init_state="end", control=FINETUNE),
    # Its control is the dense run itself: a late run without the prior, continuing the dense state, is it.
    LATE: Arm("late start", "at{start}-shift{shift}-s{seed}", axes={"start": "late.starts", "shift": "late.shifts"},
              configure=_late, init_from=DENSE, init_state="at{start}", control=DENSE),
}


def pattern(arm: str) -> str:
    """The run-id pattern of an arm, with {field} slots."""
    return f"{{dataset}}/{arm}/{ARMS[arm].id_tail}"


@dataclass(frozen=True)
class Run:
    id: str  # its place in the study: {dataset}/{arm}/...
    arm: str
    fields: dict  # dataset, seed and the arm's own axes, as in params.yaml
    trained_as: str = ""  # the run that trains its network: its own id, or an identical run's

    @property
    def dir(self) -> str:
        return self.trained_as or self.id


def _entries(params: dict, arms) -> list[Run]:
    out = []
    for dataset, seed in itertools.product(params["datasets"], params["seeds"]):
        for name in arms:
            arm = ARMS[name]
            values = [lookup(params, key, dataset) for key in arm.axes.values()]
            for combo in itertools.product(*values):
                fields = {"dataset": dataset, "seed": seed, **dict(zip(arm.axes, combo, strict=True))}
                out.append(Run(pattern(name).format(**fields), name, fields))
    return out


def _network_key(config: dict) -> str:
    """What makes two runs the same network: the run config without its name and fields."""
    return json.dumps({k: v for k, v in config.items() if k not in ("name", "fields")}, sort_keys=True)


@cache
def _plan(params_json: str, arms: tuple) -> tuple[Run, ...]:
    """Every entry of the study, each with the run that trains it: identical configs train once.
    ``arms``: the table's (name, id(arm)), so that a changed table is a new plan."""
    params, first, out = json.loads(params_json), {}, []
    for entry in _entries(params, [name for name, _ in arms]):
        key = _network_key(_resolve(params, entry))
        trained_as = first.setdefault(key, entry.id)
        out.append(Run(entry.id, entry.arm, entry.fields, trained_as))
    return tuple(out)


def runs(params: dict, arms=None) -> list[Run]:
    """Every run of the study (of ``arms``, default all), in a fixed order: dataset, seed, arm, then
    the sweep's order. A run whose network another run already trains (own and widened width equal,
    say) is listed with ``trained_as`` that run: the report shows it under both, and it trains once."""
    table = tuple((name, id(arm)) for name, arm in ARMS.items())
    return [run for run in _plan(json.dumps(params, sort_keys=True), table) if arms is None or run.arm in arms]


def find_run(params: dict, run_id: str) -> Run:
    by_id = {run.id: run for run in runs(params)}
    if run_id not in by_id:
        known = ", ".join(list(by_id)[:4])
        raise UserError(f"run {run_id!r} is not in the plan of these params (runs look like {known}, ...)")
    return by_id[run_id]


def run_ids(params: dict, arms=None) -> list[str]:
    """The runs to train: one per distinct network."""
    return [run.id for run in runs(params, arms) if run.dir == run.id]


def run_dir(run_id: str, root: str = "runs") -> str:
    return f"{root}/{run_id}"


STATES_DIR = "states"  # in a run directory: the states it keeps for the runs that continue it


def init_from(run: Run) -> str | None:
    """The file a run starts from, if its arm starts from another run: that run's checkpoint, or the
    state it kept for this run (``Arm.init_state``)."""
    arm = ARMS[run.arm]
    if not arm.init_from:
        return None
    source = run_dir(pattern(arm.init_from).format(**run.fields))
    if arm.init_state:
        return f"{source}/{STATES_DIR}/{arm.init_state.format(**run.fields)}.pt"
    return f"{source}/checkpoint.pt"


def kept_states(params: dict, run: Run) -> dict[str, int]:
    """The states a run keeps for the runs that continue it (of the arms whose ``init_state`` names
    its arm), by name: the epoch after which each is saved, the continuing run's prior start."""
    arms = [name for name, arm in ARMS.items() if arm.init_from == run.arm and arm.init_state]
    kept = {}
    for entry in _entries(params, arms):
        if (entry.fields["dataset"], entry.fields["seed"]) == (run.fields["dataset"], run.fields["seed"]):
            kept[ARMS[entry.arm].init_state.format(**entry.fields)] = _resolve(params, entry)["prior_start_epoch"]
    return dict(sorted(kept.items()))


def trained_epochs(config: dict) -> int:
    """The epochs a run's job trains: a run that continues a kept state starts after its epoch, which
    is the run's prior start (kept_states): a late run trains B − start, a post-hoc or finetune run P."""
    return config["epochs"] - (config["prior_start_epoch"] if config["init"] == "state" else 0)


def run_inputs(params: dict, run_id: str) -> dict[str, str]:
    """The files a run reads besides its config: its prepared data, and the checkpoint it starts from."""
    run = find_run(params, run_id)
    inputs = {"data": data_path(run.fields["dataset"])}
    if init_from(run):
        inputs["init_from"] = init_from(run)
    return inputs


def dataset_row(dataset: str) -> dict:
    """What decides a dataset's raw and prepared files: its row of the table, less where a copy
    may be found (the checksums decide, not the source; the offline path differs by machine)."""
    row = dataclasses.asdict(DATASETS[dataset])
    return {key: value for key, value in row.items() if key not in ("urls", "offline")}


def data_path(dataset: str) -> str:
    return f"data/prepared/{dataset}.pt"


CONFIG_DIR = "configs"


def config_path(run_id: str, root: str = CONFIG_DIR) -> str:
    """Where ``configure`` writes a run's resolved config, which ``train --config`` reads."""
    return f"{root}/{run_id}.yaml"


def data_check(params: dict, dataset: str) -> dict:
    """What a run expects of its prepared file, from the params' entry of its dataset: the trainer
    compares the file with it (run.schema.json's ``data_check``) and refuses another dataset's."""
    sizes, (channels, height, width) = params["datasets"][dataset], DATASETS[dataset].shape
    return {"dataset": dataset, "image_shape": [channels, height // sizes["pool"], width // sizes["pool"]],
            **{f"{split}_size": sizes[f"{split}_size"] for split in ("train", "val", "test")},
            "pool": sizes["pool"], "seed": params["data_seed"]}


def prior_lam(config: dict, shift: float, train_size: int, dataset: str) -> float:
    """λ of a run under the prior, from its shift and its config as the trainer will run it: its
    epochs, learning rates, prior start and batch size, its train split's size and its channels."""
    return schedule.lam_for_shift(shift, config, train_size, prior_channels(config["model"], dataset))


def _resolve(params: dict, run: Run) -> dict:
    model, train = params["model"], params["train"]
    dataset = run.fields["dataset"]
    config = {
        "name": run.id,
        "fields": {"arm": run.arm, **run.fields},
        "data": data_path(dataset),
        "data_check": data_check(params, dataset),
        "model": {"arch": model["arch"], "builder": architectures.architecture(model["arch"]).builder,
                  "depth": model["depth"], "width": model["width"], "activation": "prelu",
                  "slope_init": model["slope_init"]},
        "epochs": params["datasets"][dataset]["epochs"],
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
        "init": "state" if ARMS[run.arm].init_state else "weights",
        "save_states": kept_states(params, run),
    }
    ARMS[run.arm].configure(params, run.fields, config)
    if ARMS[run.arm].prior:
        # The trainer's train split is what `prepare` wrote: exactly train_size images
        # (validate refuses a train_size the dataset cannot give).
        config["lam"] = prior_lam(config, run.fields["shift"], params["datasets"][dataset]["train_size"], dataset)
        # Only here: without a prior the form is moot, and changing it must not retrain those runs.
        config["prox_form"] = train.get("prox_form", "step")  # the schema's default
    return copy.deepcopy(config)


def run_config(params: dict, run_id: str) -> dict:
    """The trainer's run config for ``run_id`` (schema_files/run.schema.json)."""
    return _resolve(params, find_run(params, run_id))


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


def one_of(runs) -> str:
    """A regex that matches exactly these run ids (none: nothing): a wildcard constraint."""
    return "|".join(re.escape(run) for run in runs) or "(?!)"


def train_outputs(run: str, states=()) -> dict[str, str]:
    """The files ``train`` writes for a run, named for Snakemake: checkpoint, metrics, ..., and the
    ``states`` it keeps (state0, state1, ...)."""
    outputs = {name.split(".")[0]: f"runs/{run}/{name}" for name in TRAIN_FILES}
    return outputs | {f"state{i}": f"runs/{run}/{STATES_DIR}/{name}.pt" for i, name in enumerate(states)}


def state_keepers(params: dict) -> tuple[list[str], list[str]]:
    """The runs to train that keep states for others, and the names of the states they keep: the
    same for each (a name is a pattern over the continuing arm's own axes), so that one Snakemake
    rule, whose outputs are the same for every job, trains them all."""
    kept = {run: list(kept_states(params, find_run(params, run))) for run in run_ids(params)}
    keepers = [run for run, names in kept.items() if names]
    names = {tuple(kept[run]) for run in keepers}
    if len(names) > 1:
        raise ValueError(f"the runs that keep states keep different ones ({sorted(names)}): an init_state "
                         "pattern may use only its arm's own axes")
    return keepers, list(next(iter(names), ()))


# ---- code as a dependency -------------------------------------------------------------------
# A stage's code is what turns its inputs into its outputs: its command's module, the package
# modules that module imports, and the schema files it validates with. Not the plan, unless the
# stage reads the params itself: a training job reads its resolved config (configs/RUN.yaml),
# so the plan and the registries' rows are not its code. Snakemake hashes these files into a
# job parameter (code_digest) and DVC lists them as deps (code_files): the same definition.

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


def _schemas_used(module: str) -> set[str]:
    """The schemas ``module`` validates with: its ``schemas.PARAMS`` / ``schemas.RUN``."""
    names = {getattr(schemas, attr): attr for attr in ("PARAMS", "RUN")}
    return {name for node in ast.walk(ast.parse((PACKAGE / f"{module}.py").read_text()))
            for name, attr in names.items()
            if isinstance(node, ast.Attribute) and node.attr == attr and getattr(node.value, "id", "") == "schemas"}


# Registry tables that are a stage's input row by row, not its code. A data job works on one
# dataset: its row (dataset_row) is its input, so a new row re-downloads nothing. The study
# stages read runs the plan names from params: the registries shape only the run configs,
# which `configure` resolves (and a changed config retrains, and so reruns them).
REGISTRIES = ("datasets", "architectures")
ROW_TABLES = {"data": ("datasets",),
              **dict.fromkeys(("measure", "aggregate", "metrics", "figures", "report"), REGISTRIES)}


@cache
def code_modules(module: str) -> tuple[str, ...]:
    """``module`` and every package module it reaches through imports, sorted (less the tables
    whose rows are the stage's input, ROW_TABLES)."""
    seen, todo = set(), [module, *ENTRY_MODULES]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += _imports(name)
    return tuple(sorted(seen - set(ROW_TABLES.get(module, ()))))


def _code_paths(module: str) -> list[Path]:
    """The files of a stage's code, relative to the package: modules, then the schemas they use."""
    modules = code_modules(module)
    used = sorted(set().union(*(_schemas_used(m) for m in modules)))
    return [Path(f"{m}.py") for m in modules] + [schemas.path(name).relative_to(PACKAGE) for name in used]


def code_files(module: str) -> list[str]:
    """The source files a stage runs, relative to the checkout (DVC's deps)."""
    return [f"src/nonlinear_advantage/{path}" for path in _code_paths(module)]


def code_digest(module: str) -> str:
    """One sha256 over the source a stage runs (Snakemake's params: a change reruns the stage)."""
    digest = hashlib.sha256()
    for path in _code_paths(module):
        digest.update(str(path).encode() + b"\0" + (PACKAGE / path).read_bytes())
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
    """Epochs a run's network has trained since initialization, its starting checkpoint's included
    (a run that continues another counts that run's epochs among its own)."""
    epochs, arm = run_config(params, run.id)["epochs"], ARMS[run.arm]
    if not arm.init_from:
        return epochs
    source = find_run(params, pattern(arm.init_from).format(**run.fields))
    before = budget_epochs(params, source) - (run_config(params, source.id)["epochs"] if arm.init_state else 0)
    return epochs + before


# ---- CLI ---------------------------------------------------------------------------------


def configs_digest(params: dict) -> str:
    """One sha256 over everything ``configure`` writes (the params of Snakemake's configure job)."""
    text = json.dumps([{run_id: run_config(params, run_id) for run_id in run_ids(params)},
                       {name: dataset_row(name) for name in params["datasets"]}], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_configs(params: dict, root) -> list[str]:
    """``configure``: each trained run's resolved config to ``root/RUN.yaml``, and each dataset's
    row to ``root/datasets/NAME.json`` (what a DVC data stage depends on); the files written."""
    files = {f"{root}/datasets/{name}.json": fileio.json_text(dataset_row(name)) for name in params["datasets"]}
    for run_id in run_ids(params):
        files[config_path(run_id, root=str(root))] = yaml.safe_dump(run_config(params, run_id), sort_keys=False)
    fileio.write_files(files)  # all or none
    return list(files)


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("validate-params", help="check a params file against the schema and list its runs")
    p.add_argument("params", help="params.yaml or config/paper.yaml")
    p.set_defaults(func=_validate_cli)
    p = subparsers.add_parser(
        "configure", help="write every run's resolved config (configs/RUN.yaml), which `train --config` reads",
        description="Resolve the plan: one run config per network to train. A training job depends on its "
                    "config file, not on the plan, so a new arm or registry row retrains nothing.")
    p.add_argument("--params", required=True, help="params.yaml or config/paper.yaml")
    p.add_argument("--out", default=CONFIG_DIR, help="directory to write into (default: %(default)s)")
    p.set_defaults(func=_configure_cli)


def _configure_cli(args) -> int:
    paths = write_configs(load_params(args.params), args.out)
    print(f"configure: {len(paths)} run configs under {args.out}/")
    return 0


def _validate_cli(args) -> int:
    params = load_params(args.params)
    ids = run_ids(params)
    print(f"{args.params}: valid, {len(ids)} runs over {', '.join(params['datasets'])}")
    return 0
