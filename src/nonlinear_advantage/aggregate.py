"""``aggregate``: every run's metrics, config and depth into ``results/summary.csv``.

One row per run of the plan (columns: docs/interfaces.md): a run that shares its network with
another (plan.runs: ``trained_as``) has its own row, read from that run's files. Depth comes
from the study's depth file (``measure``: results/depth.json). Plus ``results/curves.csv``: every run's
history.csv stacked, with the run's identity in front; DVC declares it as a plot.
Rows come in a fixed order (dataset, arm, depth, width kind, λ, seed), so the same runs
always give the same bytes.

With ``--plots DIR``, also the files ``dvc plots show`` draws (dvc.yaml's top-level ``plots:``):
DVC's templates colour by revision and tell series apart only by file or by y column
(treeverse/dvc#6713), and dvc.yaml cannot know the datasets of params.yaml. So one file per
dataset, one column per arm (the arm's label): ``DIR/accuracy/DATASET.csv`` (test accuracy
against normalized APL, a row per run) and ``DIR/curves/DATASET.csv`` (test accuracy per epoch
since initialization, the mean over the arm's runs). DVC draws a plot per file, a series per arm.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import yaml

from . import fileio, plan
from .errors import UserError

SUMMARY_COLUMNS = (
    "run", "dataset", "arm", "arch", "depth", "width", "activation", "widened", "lam", "seed",
    "params", "test_acc", "val_acc", "train_acc", "test_loss", "penalty", "nonlinear_channels",
    "total_channels", "apl_normalized", "apl_unnormalized", "eps", "depth_eps", "apl_normalized_eps",
    "apl_unnormalized_eps", "nonlinear_channels_eps", "slope_q10", "slope_q50", "slope_q90", "nonlinear_change",
    "epochs", "budget_epochs", "prior_start_epoch", "max_prior_shift", "test_size",
)  # fmt: skip
# Not applicable (a ReLU net's slope quantiles, the change of a one-epoch run) is an empty cell.
# No timings here (they stay in each metrics.json): the same runs give the same summary bytes
# wherever they ran, so a cluster run can be checked against a local one.
CURVE_KEYS = ("run", "dataset", "arm", "lam", "seed")
PLOT_X = {"accuracy": "apl_normalized", "curves": "epoch"}  # dvc.yaml's x of each kind of plot file
FROM_METRICS = ("params", "test_acc", "val_acc", "train_acc", "test_loss", "penalty", "epochs", "budget_epochs",
                "prior_start_epoch", "max_prior_shift", "test_size")
FROM_DEPTH = ("nonlinear_channels", "total_channels", "apl_normalized", "apl_unnormalized", "eps", "depth_eps",
              "apl_normalized_eps", "apl_unnormalized_eps", "nonlinear_channels_eps", "slope_q10", "slope_q50",
              "slope_q90")


def _read(run_dir: Path, name: str):
    path = run_dir / name
    try:
        text = path.read_text()
        return yaml.safe_load(text) if name.endswith(".yaml") else json.loads(text)
    except FileNotFoundError:
        raise UserError(f"run {run_dir}: {name} is missing (has it been trained and measured?)") from None
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise UserError(f"run {run_dir}: {name} cannot be read: {exc}") from None


def _history(run_dir: Path, run: str) -> list[dict]:
    path = run_dir / "history.csv"
    if not path.exists():
        raise UserError(f"run {run}: history.csv is missing")
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def nonlinear_change(history: list[dict]) -> int | None:
    """Nonlinear channels at the last epoch less those at the one before: 0 when the count has
    settled. None (an empty cell) for a one-epoch history or one without the count."""
    counts = [r.get("nonlinear_channels") for r in history[-2:]]
    if len(counts) < 2 or any(c in (None, "") for c in counts):
        return None
    return int(float(counts[1])) - int(float(counts[0]))


def summary_row(run_dir: Path, depths: dict[str, dict], entry: plan.Run | None = None) -> dict:
    """The row of the run trained in ``run_dir``; as the plan's ``entry`` when given (a run that
    shares another's network: its own id and fields, that run's numbers)."""
    metrics, config = (_read(run_dir, n) for n in ("metrics.json", "config.yaml"))
    model, trained = config["model"], config["name"]
    if trained not in depths:
        raise UserError(f"run {trained}: not in the depth file (measure the study again)")
    depth = depths[trained]
    missing = [k for k in FROM_METRICS if k not in metrics] + [k for k in FROM_DEPTH if k not in depth]
    if missing:
        raise UserError(f"run {trained}: missing keys {', '.join(missing)} in metrics.json/the depth file")
    name, fields = (entry.id, {"arm": entry.arm, **entry.fields}) if entry else (trained, config.get("fields") or {})
    if not {"dataset", "arm"} <= set(fields):
        raise UserError(f"run {name}: config.yaml has no fields.dataset/fields.arm (not trained from the plan?)")
    row = {
        "run": name, "dataset": fields["dataset"], "arm": fields["arm"],
        "arch": model["arch"], "depth": model["depth"], "width": model["width"], "activation": model["activation"],
        "widened": fields.get("kind") == "wide", "lam": config["lam"], "seed": config["seed"],
    }  # fmt: skip
    row |= {k: metrics[k] for k in FROM_METRICS} | {k: depth[k] for k in FROM_DEPTH}
    row["nonlinear_change"] = nonlinear_change(_history(run_dir, trained))
    return {k: row[k] for k in SUMMARY_COLUMNS}


def _order(row: dict):
    arms = list(plan.ARMS)
    arm = arms.index(row["arm"]) if row["arm"] in arms else len(arms)
    return (row["dataset"], arm, row["depth"], row["widened"], row["prior_start_epoch"], row["lam"], row["seed"],
            row["run"])


def curve_rows(run_dir: Path, row: dict) -> list[dict]:
    return [{k: row[k] for k in CURVE_KEYS} | r for r in _history(run_dir, row["run"])]


def plot_series() -> tuple[str, ...]:
    """The y columns of the plot files (dvc.yaml's y): a series per arm of the arm table, by its label."""
    return tuple(arm.label for arm in plan.ARMS.values())


def _series_csv(x: str, points: list[tuple[dict, str, float]]) -> str:
    """(x and the row's other fields, arm, y) as CSV: x, one column per arm (y in its arm's, the
    others empty: the templates skip an empty value), then the other fields."""
    series = plot_series()
    rows = [{**fields, **dict.fromkeys(series, ""), plan.ARMS[arm].label: y} for fields, arm, y in points]
    return fileio.csv_text(rows, (x, *series, *(k for k in rows[0] if k not in (x, *series))))


def _mean_curves(runs: list[tuple[dict, list[dict]]]) -> list[tuple[dict, str, float]]:
    """Test accuracy per arm and epoch since initialization, the mean over the arm's runs."""
    arms, by_epoch = list(plan.ARMS), {}
    for row, history in runs:
        start = int(row["budget_epochs"]) - int(row["epochs"])  # a run from a checkpoint continues its epochs
        for h in history:
            by_epoch.setdefault((start + int(h["epoch"]), arms.index(row["arm"])), []).append(float(h["test_acc"]))
    return [({"epoch": epoch, "runs": len(accs)}, arms[arm], sum(accs) / len(accs))
            for (epoch, arm), accs in sorted(by_epoch.items())]


def plot_files(pairs: list[tuple[dict, list[dict]]]) -> dict[str, str]:
    """(summary row, its history rows) of every run -> {"accuracy/DATASET.csv": text, "curves/DATASET.csv": ...}."""
    out = {}
    for dataset in dict.fromkeys(row["dataset"] for row, _ in pairs):
        runs = [(row, history) for row, history in pairs if row["dataset"] == dataset]
        points = [({key: row[key] for key in (PLOT_X["accuracy"], "run", "lam", "seed")}, row["arm"], row["test_acc"])
                  for row, _ in runs]
        out[f"accuracy/{dataset}.csv"] = _series_csv(PLOT_X["accuracy"], points)
        out[f"curves/{dataset}.csv"] = _series_csv(PLOT_X["curves"], _mean_curves(runs))
    return out


def aggregate(run_dirs, out, depth, curves=None, entries=None, plots=None) -> list[dict]:
    """Write the summary (and the stacked curves, and the plot files under ``plots``); return the
    summary rows. ``depth`` is the study's depth file; ``entries``, the plan's run of each
    directory (default: its config's)."""
    depths = fileio.read_json(depth, "measure the study first (python -m nonlinear_advantage measure)")
    entries = entries or [None] * len(run_dirs)
    pairs = sorted(((summary_row(Path(d), depths, e), Path(d)) for d, e in zip(run_dirs, entries, strict=True)),
                   key=lambda p: _order(p[0]))
    if not pairs:
        raise UserError("aggregate: no runs given")
    rows = [row for row, _ in pairs]
    files = {out: fileio.csv_text(rows, SUMMARY_COLUMNS)}
    histories = [curve_rows(d, row) for row, d in pairs] if curves or plots else []
    if curves:
        history = [r for h in histories for r in h]
        columns = list(dict.fromkeys(k for r in history for k in r))  # union, first-seen order
        files[curves] = fileio.csv_text(history, columns)
    if plots:
        series = plot_files(list(zip(rows, histories, strict=True)))
        files |= {Path(plots) / name: text for name, text in series.items()}
    fileio.write_files(files)  # all or none
    return rows


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("aggregate", help="one row per run into results/summary.csv")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories; with --params, the runs root")
    p.add_argument("--out", required=True, help="summary CSV, e.g. results/summary.csv")
    p.add_argument("--depth", required=True, help="the study's depth file, e.g. results/depth.json (measure)")
    p.add_argument("--curves", help="also stack every run's history.csv here, e.g. results/curves.csv")
    p.add_argument("--plots", help="also write the per-dataset series files `dvc plots show` draws into this "
                   "directory, e.g. results/plots")
    p.add_argument("--params", help="read exactly the runs these params plan, from under the one RUN_DIR given")
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    run_dirs, entries = args.runs, None
    if args.params:
        if len(run_dirs) != 1:
            raise UserError("with --params, give one directory: the root the runs live under (runs)")
        entries = plan.runs(plan.load_params(args.params))
        run_dirs = [plan.run_dir(run.dir, root=run_dirs[0]) for run in entries]
    rows = aggregate(run_dirs, args.out, args.depth, args.curves, entries, args.plots)
    print(f"aggregate: {len(rows)} runs -> {args.out}" + "".join(f", {p}" for p in (args.curves, args.plots) if p))
    return 0
