"""The study plan: validate ``params.yaml``, name every run, and give each run its config.

Snakemake, DVC and the trainer all read the plan from here, so a run id means the same
thing everywhere. A run id is the run's directory under ``runs/``:

    digits/dense/s0            digits/sparse/lam0.01-s0     digits/posthoc/lam0.01-s0
    digits/baseline/d8-own-s0  digits/baseline/d8-wide-s0

λ is written as ``str(value)`` of the YAML number, which is how DVC interpolates it too.
No torch here: the Snakefile imports this module, and ``snakemake -n`` must stay fast.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import yaml

from .errors import UserError

# The schema lives with the workflow; the package is installed editable from this checkout.
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "params.schema.json"

# (input channels, classes) per dataset: all the model needs to know of the data.
DATASET_SHAPES = {
    "digits": (1, 10),
    "fashion_mnist": (1, 10),
    "mnist": (1, 10),
    "cifar10": (3, 10),
    "cifar100": (3, 100),
    "svhn": (3, 10),
}
ARMS = ("baseline", "dense", "sparse", "posthoc")
# Run ids per arm, as Snakemake wildcard patterns: RUN_PATTERNS[arm].format(**wildcards) is a run id.
RUN_PATTERNS = {
    "baseline": "{dataset}/baseline/d{depth}-{kind}-s{seed}",
    "dense": "{dataset}/dense/s{seed}",
    "sparse": "{dataset}/sparse/lam{lam}-s{seed}",
    "posthoc": "{dataset}/posthoc/lam{lam}-s{seed}",
}
TRAIN_FILES = ("checkpoint.pt", "metrics.json", "history.csv", "config.yaml")  # what `train` writes
# Runtime switches of the run config; params.yaml may leave them out.
RUNTIME_DEFAULTS = {"device": "auto", "precision": "auto", "channels_last": "auto", "compile": "auto"}


@cache
def schema() -> dict:
    if not SCHEMA_PATH.exists():
        raise UserError(f"{SCHEMA_PATH} not found: the study runs from a checkout (pip install -e .)")
    return json.loads(SCHEMA_PATH.read_text())


def _key_path(error) -> str:
    """``sweep.lambdas[2]``: the place in params.yaml that an error is about."""
    text = ""
    for part in error.absolute_path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def validate(params, source: str = "params") -> dict:
    """Check ``params`` against the schema; raise UserError listing every problem by key."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(params), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    if errors:
        lines = [f"  {_key_path(e)}: {e.message}" for e in errors]
        raise UserError(f"{source} is invalid:\n" + "\n".join(lines))
    # What JSON schema cannot say: a ResNet's depth is 6n+2.
    if params["model"]["arch"] == "resnet":
        depths = {"model.depth": params["model"]["depth"]}
        depths |= {f"baseline.depths[{i}]": d for i, d in enumerate(params["baseline"]["depths"])}
        for key, depth in depths.items():
            if depth < 8 or (depth - 2) % 6:
                raise UserError(f"{source} is invalid:\n  {key}: {depth} is not a ResNet depth (6n+2: 8, 14, 20, ...)")
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


# ---- what the Snakefile needs --------------------------------------------------------------


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
    """The split flags of ``prepare`` (dvc.yaml spells out the same)."""
    sizes = params["datasets"][dataset]
    return (
        f"--train-size {sizes['train_size']} --val-size {sizes['val_size']} "
        f"--test-size {sizes['test_size']} --seed {params['data_seed']}"
    )


def train_outputs(run: str) -> dict[str, str]:
    """The files ``train`` writes for a run, named for Snakemake: checkpoint, metrics, ..."""
    return {name.split(".")[0]: f"runs/{run}/{name}" for name in TRAIN_FILES}


# ---- run ids -----------------------------------------------------------------------------


def run_ids(params: dict, arms=ARMS) -> list[str]:
    """Every run of the study, in a fixed order: dataset, arm, then the sweep's order."""
    ids = []
    for dataset in params["datasets"]:
        for seed in params["seeds"]:
            s = f"s{seed}"
            if "baseline" in arms:
                for depth in params["baseline"]["depths"]:
                    ids += [f"{dataset}/baseline/d{depth}-{kind}-{s}" for kind in params["baseline"]["widths"]]
            if "dense" in arms:
                ids.append(f"{dataset}/dense/{s}")
            for arm in ("sparse", "posthoc"):
                if arm in arms:
                    ids += [f"{dataset}/{arm}/lam{lam}-{s}" for lam in params["sweep"]["lambdas"]]
    return ids


def run_dir(run_id: str, root: str = "runs") -> str:
    return f"{root}/{run_id}"


def dense_checkpoint(dataset: str, seed) -> str:
    return f"{run_dir(f'{dataset}/dense/s{seed}')}/checkpoint.pt"


def run_config(params: dict, run_id: str) -> dict:
    """The trainer's run config for ``run_id`` (docs/interfaces.md, "Run config")."""
    if run_id not in run_ids(params):
        known = ", ".join(run_ids(params)[:4])
        raise UserError(f"run {run_id!r} is not in the plan of these params (runs look like {known}, ...)")
    dataset, arm, tag = run_id.split("/")
    seed = int(tag.rsplit("-s", 1)[-1]) if "-" in tag else int(tag[1:])
    return _config(params, run_id, dataset, arm, tag, seed)


def _config(params, run_id, dataset, arm, tag, seed) -> dict:
    model, train = params["model"], params["train"]
    net = {"arch": model["arch"], "depth": model["depth"], "width": model["width"],
           "activation": "prelu", "slope_init": model["slope_init"]}
    lr, epochs, lam, init_from = train["optimizer"]["lr"], params["datasets"][dataset]["epochs"], 0.0, None
    if arm in ("sparse", "posthoc"):
        lam_text = tag[len("lam"):].rsplit("-s", 1)[0]
        lam = next(v for v in params["sweep"]["lambdas"] if str(v) == lam_text)
    if arm == "posthoc":
        epochs, lr, init_from = params["posthoc"]["epochs"], params["posthoc"]["lr"], dense_checkpoint(dataset, seed)
    if arm == "baseline":
        depth_text, kind = tag.split("-")[:2]
        depth = int(depth_text[1:])
        width = model["width"] if kind == "own" else widened_width(params, dataset, depth)
        net.update(depth=depth, width=width, activation="relu")
    return {
        "name": run_id,
        "data": f"data/prepared/{dataset}.pt",
        "model": net,
        "epochs": epochs,
        "batch_size": train["batch_size"],
        "optimizer": {**train["optimizer"], "lr": lr},
        "schedule": dict(train["schedule"]),
        "lam": float(lam),
        "proximal": train["proximal"],
        "eps": float(train["eps"]),
        "augment": dict(train["augment"]),
        "seed": seed,
        **{key: train.get(key, default) for key, default in RUNTIME_DEFAULTS.items()},
        "init_from": init_from,
    }


# ---- parameter counts without torch ------------------------------------------------------


def parameter_count(arch: str, depth: int, width: int, dataset: str, activation: str) -> int:
    """What ``models.parameter_count(models.build_model(...))`` gives, in closed form."""
    in_channels, classes = DATASET_SHAPES[dataset]
    act = 1 if activation == "prelu" else 0  # a PReLU has one slope per channel

    def conv_bn(cin, cout, kernel=3):
        return cin * cout * kernel * kernel + 2 * cout  # conv (no bias) + BN weight and bias

    total = 0
    if arch == "resnet":
        total += conv_bn(in_channels, width) + act * width
        cin = width
        for stage, mult in enumerate((1, 2, 4)):
            for i in range((depth - 2) // 6):
                cout, stride = width * mult, 2 if stage > 0 and i == 0 else 1
                total += conv_bn(cin, cout) + conv_bn(cout, cout) + 2 * act * cout
                if stride != 1 or cin != cout:
                    total += conv_bn(cin, cout, kernel=1)
                cin = cout
    else:
        convs, cin = depth - 1, in_channels
        for stage, mult in enumerate((1, 2, 4)):
            for _ in range(convs // 3 + (1 if stage < convs % 3 else 0)):
                total += conv_bn(cin, width * mult) + act * width * mult
                cin = width * mult
    return total + cin * classes + classes


def widened_width(params: dict, dataset: str, depth: int) -> int:
    """Smallest width >= the full net's whose ReLU baseline has at least its parameters."""
    model = params["model"]
    target = parameter_count(model["arch"], model["depth"], model["width"], dataset, "prelu")
    width = model["width"]
    while parameter_count(model["arch"], depth, width, dataset, "relu") < target:
        width += 1
    return width


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
