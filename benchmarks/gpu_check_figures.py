"""One summary line of figures from a gpu_check.sh step's outputs (a helper of benchmarks/gpu_check.sh).

    python benchmarks/gpu_check_figures.py dataset PREPARED.pt
    python benchmarks/gpu_check_figures.py train RUN_DIR
    python benchmarks/gpu_check_figures.py pipeline COPY_DIR DEVICE
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path


def dataset(path: str) -> str:
    import torch

    d = torch.load(path, weights_only=True)
    sizes = ", ".join(f"{len(d[f'{k}_y'])} {k}" for k in ("train", "val", "test"))
    return f"  prepared {d['name']}: {sizes} images of {tuple(d['train_x'].shape[1:])}"


def train(run_dir: str) -> str:
    run = Path(run_dir)
    m = json.loads((run / "metrics.json").read_text())
    import yaml

    model = yaml.safe_load((run / "config.yaml").read_text())["model"]
    return (f"  ResNet-{model['depth']} width {model['width']}, {m['epochs']} epochs: test accuracy "
            f"{m['test_acc']:.4f}, training wall time {m['wall_time_s']:.1f} s ({m['images_per_s']:.0f} images/s)")


def pipeline(copy_dir: str, device: str) -> str:
    root = Path(copy_dir)
    with open(root / "results" / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    pdf = root / "reports" / "report.pdf"
    figures = sorted((root / "reports" / "figures").glob("*.png"))
    return (f"  tiny study on {device}: {len(rows)} runs in results/summary.csv, {len(figures)} figures, "
            f"report.pdf {'written' if pdf.is_file() and pdf.stat().st_size else 'MISSING'}")


if __name__ == "__main__":
    commands = {"dataset": dataset, "train": train, "pipeline": pipeline}
    if len(sys.argv) < 3 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    print(commands[sys.argv[1]](*sys.argv[2:]))
