"""A synthetic but realistic study on disk, written by the pipeline's own writers (trainer, aggregate).

Two datasets (an easy one and a harder one), a ResNet-20 (width 8) trained dense, sparse at
7 log-spaced λ, post-hoc and late-start at the first 6, post-hoc's λ = 0 control (finetune,
within noise of dense), and plain ReLU baselines at 4 depths, own width and widened.
Accuracy decays slowly with APL and then collapses (harder tasks collapse at a larger APL),
with at least 3 points below the collapse; post-hoc runs beat from-scratch ones on the harder
task only; the nonlinear channels form a core of nearly constant size over the middle of the
sweep. Every run has settled, and every check of analysis.checks passes.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from nonlinear_advantage import aggregate, measure, plan, trainer

LAMS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
EPOCHS = 6
SEEDS = (0, 1, 2)
TEST_SIZE = 10_000  # a binomial SE of ~0.3 pt: the seeds' noise dominates
# dataset: dense accuracy, chance, collapse scale (APL units), post-hoc and late-start advantage
# (shrinks the collapse scale), kept fraction per λ
DATASETS = {
    "digits": dict(dense=0.975, chance=0.1, scale=0.6, advantage=0.0, late=0.0,
                   keep=(0.8, 0.3, 0.27, 0.24, 0.08, 0.04, 0.02)),
    "fashion_mnist": dict(dense=0.900, chance=0.1, scale=1.0, advantage=0.8, late=0.8,
                          keep=(0.9, 0.40, 0.36, 0.33, 0.1, 0.05, 0.025)),
}
BASELINE_DEPTHS = (2, 3, 5, 7)  # plain nets: depth − 1 activation layers
NOISE = 0.002  # sd of a run's accuracy around its curve (seed-to-seed noise)
RESNET_PARAMS = 78_042


def resnet20_layers(width: int = 8) -> list[dict]:
    """Activation layers of a CIFAR ResNet-20: stem, then 9 blocks of (act1 P=½, act2 P=1)."""
    layers = [dict(name="stem.act", width=width, P=1.0)]
    for stage, w in enumerate((width, 2 * width, 4 * width)):
        for block in range(3):
            layers.append(dict(name=f"stage{stage + 1}.{block}.act1", width=w, P=0.5))
            layers.append(dict(name=f"stage{stage + 1}.{block}.act2", width=w, P=1.0))
    return layers


def _profile(layers: list[dict], keep: float) -> list[dict]:
    """Keep ``keep`` of the channels, more of them in the first and last layers."""
    out = []
    for i, layer in enumerate(layers):
        edge = 1.0 + 0.6 * math.cos(math.pi * i / (len(layers) - 1)) ** 2
        n = int(min(layer["width"], round(layer["width"] * keep * edge)))
        out.append(dict(index=i, name=layer["name"], width=layer["width"], nonlinear=n,
                        P=layer["P"], contribution=layer["P"] * n / layer["width"]))
    return out


def _accuracy(spec: dict, apl: float, scale: float) -> float:
    return spec["chance"] + (spec["dense"] - spec["chance"]) * (1 - math.exp(-apl / scale))


def _write_run(root: Path, row: dict, layers: list[dict], rng: np.random.Generator, depths: dict) -> Path:
    """One run directory, written by the trainer's own writers (their column contract); its depth
    goes into ``depths``, for measure's writer."""
    run_dir = root / row["run"]
    run_dir.mkdir(parents=True, exist_ok=True)
    fields = {"arm": row["arm"], "dataset": row["dataset"], "seed": row["seed"]}
    fields |= {"shift": row["max_prior_shift"]} if plan.ARMS[row["arm"]].prior else {}
    fields |= {"depth": row["depth"], "kind": "wide" if row["widened"] else "own"} if row["arm"] == plan.SHALLOW else {}
    config = trainer.validate_config(dict(
        name=row["run"], fields=fields, data=f"data/prepared/{row['dataset']}.pt", epochs=EPOCHS, lam=row["lam"],
        seed=row["seed"], prior_start_epoch=row["prior_start_epoch"],
        model=dict(arch=row["arch"], depth=row["depth"], width=row["width"],
                                     activation=row["activation"], slope_init=0.25)), check_files=False)
    trainer.write_config(run_dir, config)
    metrics = {k: row[k] for k in trainer.METRICS_KEYS if k in row}
    metrics.update(name=row["run"], train_loss=0.1, val_loss=0.2, threads=1,
                   nonlinear_per_layer=[lay["nonlinear"] for lay in layers])
    trainer.write_metrics(run_dir, metrics)
    depth = {k: row[k] for k in ("apl_normalized", "apl_unnormalized", "eps", "nonlinear_channels",
                                 "total_channels")}
    # At depth_eps, the channels the prior only partly linearized count as linear too; the slopes'
    # distances from linear spread from 0 (linearized) to slope_init's 0.75. ReLU nets have none.
    prelu = row["activation"] == "prelu"
    linear = 1 - row["nonlinear_channels"] / row["total_channels"]
    depth |= {"depth_eps": 0.1, "apl_normalized_eps": round(0.9 * row["apl_normalized"], 4),
              "apl_unnormalized_eps": round(0.9 * row["apl_unnormalized"], 4),
              "nonlinear_channels_eps": round(0.9 * row["nonlinear_channels"]) if prelu else row["nonlinear_channels"],
              "slope_q10": (0.0 if linear > 0.1 else 0.5) if prelu else None,
              "slope_q50": (0.0 if linear > 0.5 else 0.6) if prelu else None,
              "slope_q90": (0.0 if linear > 0.9 else 0.72) if prelu else None}
    depths[row["run"]] = {"run": row["run"], **depth, "layers": layers}
    t = np.arange(1, EPOCHS + 1)
    rise = 1 - np.exp(-t / 1.5)
    settle = np.minimum(1.0, t / (EPOCHS - 1))
    history = pd.DataFrame({
        "epoch": t, "lr": 0.1 * np.cos(np.pi * (t - 1) / (2 * EPOCHS)),
        "train_loss": 2.3 * np.exp(-t / 1.5) + 0.05, "val_loss": 2.3 * np.exp(-t / 1.7) + 0.1,
        "train_acc": 0.1 + (row["train_acc"] - 0.1) * rise,
        "val_acc": 0.1 + (row["val_acc"] - 0.1) * rise + rng.normal(0, 0.003, EPOCHS),
        "test_loss": 2.3 * np.exp(-t / 1.7) + 0.12, "test_acc": 0.1 + (row["test_acc"] - 0.1) * rise,
        "penalty": row["penalty"] * (1 + np.exp(-t)),
        "nonlinear_channels": np.round(row["total_channels"] - (row["total_channels"]  # settled: the last
                                       - row["nonlinear_channels"]) * settle).astype(int),  # two epochs agree
        "total_channels": row["total_channels"], "apl_normalized": row["apl_normalized"],
        "apl_unnormalized": row["apl_unnormalized"], "wall_time_s": row["wall_time_s"] * t / EPOCHS,
    })
    trainer._write_history(run_dir, history.to_dict("records"))
    return run_dir


def write_study(root: Path, seeds=SEEDS, noise: float = NOISE) -> Path:
    """Write ``root/runs/...`` and ``root/results/summary.csv``; return the summary's path.

    Every seed's accuracy is its curve's plus Gaussian noise of sd ``noise``; APLs do not vary.
    """
    rng = np.random.default_rng(0)
    runs, run_dirs, depths = root / "runs", [], {}

    def add(dataset, arm, tag, arch, depth, width, activation, widened, lam, seed, layers, acc, params, start=0,
            jitter=noise) -> float:
        apl = sum(lay["contribution"] for lay in layers)
        nonlinear = sum(lay["nonlinear"] for lay in layers)
        acc = float(np.clip(acc + rng.normal(0, jitter), 0, 1))
        row = dict(run=f"{dataset}/{arm}/{tag}", dataset=dataset, arm=arm, arch=arch, depth=depth,
                   width=width, activation=activation, widened=widened, lam=lam, seed=seed,
                   params=params, test_acc=round(acc, 4), val_acc=round(acc + 0.004, 4),
                   train_acc=round(min(1.0, acc + 0.03), 4), test_loss=round(2.5 * (1 - acc), 4),
                   penalty=round(lam * (1 - nonlinear / sum(x["width"] for x in layers)), 6),
                   nonlinear_channels=nonlinear, total_channels=sum(x["width"] for x in layers),
                   apl_normalized=round(apl, 4), apl_unnormalized=round(1.2 * apl, 4), eps=0.0,
                   epochs=EPOCHS, wall_time_s=round(30 + 10 * rng.random(), 2),
                   images_per_s=round(5000 + 500 * rng.random(), 1), budget_epochs=EPOCHS, prior_start_epoch=start,
                   max_prior_shift=round(3 * lam, 6), test_size=TEST_SIZE)
        run_dirs.append(_write_run(runs, row, layers, rng, depths))
        return acc

    full = resnet20_layers()
    for dataset, spec in DATASETS.items():
        for seed in seeds:
            dense = add(dataset, plan.DENSE, f"s{seed}", "resnet", 20, 8, "prelu", False, 0.0, seed,
                        _profile(full, 1.0), spec["dense"], RESNET_PARAMS)
            # the dense net fine-tuned without the prior at a small learning rate: it stays where it was
            add(dataset, plan.FINETUNE, f"s{seed}", "resnet", 20, 8, "prelu", False, 0.0, seed,
                _profile(full, 1.0), dense + 0.001, RESNET_PARAMS, jitter=noise / 4)
            for lam, keep in zip(LAMS, spec["keep"], strict=True):
                layers = _profile(full, keep)
                apl = sum(lay["contribution"] for lay in layers)
                add(dataset, plan.SPARSE, f"shift{3 * lam:g}-s{seed}", "resnet", 20, 8, "prelu", False, lam, seed,
                    layers, _accuracy(spec, apl, spec["scale"]), RESNET_PARAMS)
                if lam > LAMS[5]:  # post-hoc and late-start grids (their own in params.yaml) stop at the sixth
                    continue
                for arm, gain, start in ((plan.POSTHOC, spec["advantage"], 0), (plan.LATE, spec["late"], EPOCHS // 2)):
                    post = _profile(full, keep * 1.1)
                    post_apl = sum(lay["contribution"] for lay in post)
                    tag = f"shift{3 * lam:g}-s{seed}" if arm == plan.POSTHOC else f"at0.5-shift{3 * lam:g}-s{seed}"
                    add(dataset, arm, tag, "resnet", 20, 8, "prelu", False, lam, seed, post,
                        _accuracy(spec, post_apl, spec["scale"] * (1 - gain)), RESNET_PARAMS, start)
            for depth in BASELINE_DEPTHS:
                for widened, width in ((False, 8), (True, 8 * (12 - depth))):
                    layers = [dict(index=i, name=f"features.{i}.act", width=width, nonlinear=width, P=1.0,
                                   contribution=1.0) for i in range(depth - 1)]
                    handicap = 0.03 if not widened else 0.015  # worse than a sparse net of equal APL
                    acc = _accuracy(spec, depth - 1, 1.6 * spec["scale"]) - handicap
                    params = RESNET_PARAMS if widened else 1_000 * depth * 8
                    add(dataset, plan.SHALLOW, f"d{depth}-{'wide' if widened else 'own'}-s{seed}", "plain", depth,
                        width, "relu", widened, 0.0, seed, layers, acc, params)
    summary, depth = root / "results" / "summary.csv", root / "results" / "depth.json"
    measure.write_depth(depth, depths)  # the pipeline's own writers
    aggregate.aggregate(run_dirs, summary, depth, root / "results" / "curves.csv")
    _add_nonlinear_change(summary, runs)
    return summary


def _add_nonlinear_change(summary: Path, runs: Path) -> None:
    """summary.csv's ``nonlinear_change`` (nonlinear channels at the last epoch minus the one before,
    from history.csv), where aggregate does not write it yet."""
    df = pd.read_csv(summary)
    if "nonlinear_change" in df:
        return
    last = {run: pd.read_csv(runs / run / "history.csv").nonlinear_channels.diff().iloc[-1] for run in df.run}
    df["nonlinear_change"] = df.run.map(last)
    df.to_csv(summary, index=False)


if __name__ == "__main__":  # python tests/synthetic_study.py DIR: a demo study to look at
    import sys

    print(write_study(Path(sys.argv[1])))
