"""``metrics``: the study's results in one small file, ``results/metrics.json``, for DVC.

dvc.yaml declares it as the study's metrics file, so ``dvc metrics show``, ``dvc metrics
diff`` and ``dvc exp show`` compare experiments by what they found (per-run metrics.json
files stay outputs of their training stages). It holds, from results/summary.csv and the
thresholds of params.yaml's ``analysis`` section:

* ``dense_acc``: the dense network's mean test accuracy per dataset;
* ``collapse_onset``: per dataset, the APL, λ and accuracy of the collapse onset, the APL as a
  fraction of the dense network's, the tolerance it was found with and whether the sweep
  collapses below it (analysis.collapse_onset);
* ``checks``: every check of analysis.checks(), each as name, dataset, subject, value, threshold
  and passed;
* ``findings``: per observation (a key from its title), the verdict of analysis.findings() and
  the numbers that decide it, by dataset (intervals as mean, lo, hi, seeds), with the checks it
  relies on that failed (``failed_checks``).

Floats are rounded to 6 significant digits, NaN and infinite values are null, and keys are
sorted: the same summary gives the same bytes.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from . import analysis, fileio

DIGITS = 6


def finding_key(title: str) -> str:
    """``"Slow decay, then collapse"`` -> ``"slow_decay_then_collapse"``."""
    return re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_")


def _clean(value):
    """JSON-ready: numpy scalars to Python, floats rounded, NaN and infinities to None."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "item"):  # a numpy scalar
        value = value.item()
    if isinstance(value, float):
        return float(f"{value:.{DIGITS}g}") if math.isfinite(value) else None
    return value


def _onset(sub, th: analysis.Thresholds) -> dict:
    onset = analysis.collapse_onset(sub, analysis.effective_tolerance(sub, th))
    full = analysis.dense_apl(sub)
    out = {"apl": onset.apl, "lam": onset.lam, "acc": onset.acc, "tolerance": onset.tolerance,
           "collapsed": onset.collapsed,
           "fraction_of_dense_apl": onset.apl / full if onset.apl is not None and full else None}
    return out | ({"undefined": onset.reason} if onset.reason else {})


def study_metrics(df, th: analysis.Thresholds) -> dict:
    datasets = analysis.datasets_by_difficulty(df)
    subs = {d: df[df.dataset == d] for d in datasets}
    return _clean({
        "dense_acc": {d: analysis.dense_accuracy(sub) for d, sub in subs.items()},
        "collapse_onset": {d: _onset(sub, th) for d, sub in subs.items()},
        "checks": [c.numbers() for c in analysis.checks(df, th)],
        "findings": {finding_key(f.title): {"verdict": f.verdict, **f.numbers} for f in analysis.findings(df, th)},
    })


def write_metrics(summary, out, params=None) -> dict:
    metrics = study_metrics(analysis.load_summary(summary), analysis.Thresholds.from_file(params))
    fileio.write_json(out, metrics)
    return metrics


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("metrics", help="the study's dense accuracies, collapse onsets and verdicts into "
                              "results/metrics.json (DVC's metrics file)", description=__doc__)
    p.add_argument("--summary", type=Path, required=True, help="results/summary.csv")
    p.add_argument("--out", type=Path, required=True, help="the JSON file to write, e.g. results/metrics.json")
    p.add_argument("--params", type=Path, help="params.yaml: its analysis section sets the thresholds")
    p.set_defaults(func=_main)


def _main(args) -> int:
    metrics = write_metrics(args.summary, args.out, args.params)
    verdicts = ", ".join(f"{key} {f['verdict']}" for key, f in metrics["findings"].items())
    print(f"metrics: {args.out} ({verdicts})")
    return 0
