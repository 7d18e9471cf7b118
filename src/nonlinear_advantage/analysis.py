"""What `results/summary.csv` says about the study's three observations.

Pure functions of pandas frames, shared by the figures and the report. Conventions:

* accuracies are fractions in [0, 1]; tolerances and margins are absolute accuracy
  differences (0.01 = one percentage point);
* effective depth is the normalized APL (column ``apl_normalized``) unless a function
  takes ``apl=`` to say otherwise;
* seeds are averaged first: a "point" is one configuration (one λ, or one baseline depth
  and width) with the mean over its seeds.

Every verdict is computed from the numbers against the thresholds in :class:`Thresholds`;
none is written in advance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import schemas
from .aggregate import SUMMARY_COLUMNS
from .errors import UserError

APL = "apl_normalized"
SUPPORTED = "supported"
NOT_SUPPORTED = "not supported by this run"
# Float comparisons against a tolerance: 0.95 - 0.01 must still admit 0.94.
_SLACK = 1e-12


@dataclass(frozen=True)
class Thresholds:
    """The stated tolerances behind every verdict; the report prints them.

    Their values and meanings live in params.yaml's ``analysis:`` section, checked (and
    defaulted) by workflow/schemas/params.schema.json: build them with :meth:`from_params`.
    """

    tolerance: float  # collapse onset: accuracy at least dense − tolerance
    plateau: float  # core network: (max − min) / median of APL and of width over a plateau
    plateau_min_points: int  # consecutive λ values that make a plateau
    core_max_fraction: float  # a core holds at most this fraction of the channels
    shallow_fraction: float  # slow decay: onset APL at most this fraction of dense APL
    gap_margin: float  # nonlinear advantage: post-hoc ahead by more than this
    vanish: float  # ... and |gap| at most this on the easiest dataset

    @classmethod
    def from_params(cls, params: dict | None = None) -> Thresholds:
        """From a params mapping's ``analysis`` section; the schema's defaults fill the gaps."""
        section = schemas.load(schemas.PARAMS)["properties"]["analysis"]
        return cls(**schemas.with_defaults((params or {}).get("analysis") or {}, section))

    @classmethod
    def from_file(cls, path: Path | None) -> Thresholds:
        """From a params file (validated, so a bad threshold names its key); None: the defaults."""
        if path is None:
            return cls.from_params()
        from .plan import load_params

        return cls.from_params(load_params(path))


# ---------------------------------------------------------------- loading and curves


def load_summary(path: str | Path) -> pd.DataFrame:
    """Read summary.csv; a missing file or column is a :class:`UserError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"summary file not found: {path} (run the aggregate stage first)")
    try:
        df = pd.read_csv(path)
    except (ValueError, OSError) as exc:  # empty (EmptyDataError), malformed, not text
        raise UserError(f"{path}: not a readable summary CSV ({exc}); run the aggregate stage again") from None
    missing = [c for c in SUMMARY_COLUMNS if c not in df.columns]
    if missing:
        raise UserError(f"{path}: missing columns {', '.join(missing)}")
    if df.empty:
        raise UserError(f"{path}: no runs")
    df["widened"] = df["widened"].astype(str).str.lower().isin(("true", "1", "1.0"))
    return df


def datasets_by_difficulty(df: pd.DataFrame) -> list[str]:
    """Datasets ordered by dense test error, easiest first; those without a dense run last."""
    errors = {d: dense_error(df[df.dataset == d]) for d in sorted(df.dataset.unique())}
    return sorted(errors, key=lambda d: (errors[d] is None, errors[d] or 0.0, d))


def _one_dataset(df: pd.DataFrame) -> None:
    if df.dataset.nunique() > 1:
        raise ValueError(f"expected one dataset, got {sorted(df.dataset.unique())}")


def dense_accuracy(df: pd.DataFrame) -> float | None:
    """Mean test accuracy of the dense (λ = 0 PReLU) runs of one dataset; None without one."""
    _one_dataset(df)
    dense = df[df.arm == "dense"]
    return float(dense.test_acc.mean()) if len(dense) else None


def dense_error(df: pd.DataFrame) -> float | None:
    acc = dense_accuracy(df)
    return None if acc is None else 1.0 - acc


def dense_apl(df: pd.DataFrame, apl: str = APL) -> float | None:
    _one_dataset(df)
    dense = df[df.arm == "dense"]
    return float(dense[apl].mean()) if len(dense) else None


def arm_curve(df: pd.DataFrame, arm: str, apl: str = APL) -> pd.DataFrame:
    """One row per λ of ``arm`` (mean over seeds), sorted by λ: lam, apl, acc, acc_std, width, n."""
    _one_dataset(df)
    rows = df[df.arm == arm]
    grouped = rows.groupby("lam", sort=True)
    return pd.DataFrame({
        "lam": grouped.lam.first(),
        "apl": grouped[apl].mean(),
        "acc": grouped.test_acc.mean(),
        "acc_std": grouped.test_acc.std(ddof=0),
        "width": grouped.nonlinear_channels.mean(),
        "total": grouped.total_channels.mean(),
        "n": grouped.size(),
    }).reset_index(drop=True)


def baseline_points(df: pd.DataFrame, apl: str = APL) -> pd.DataFrame:
    """One row per baseline (depth, width, widened), mean over seeds, sorted by depth."""
    _one_dataset(df)
    rows = df[df.arm == "baseline"]
    grouped = rows.groupby(["depth", "width", "widened"], sort=True)
    out = grouped.agg(apl=(apl, "mean"), acc=("test_acc", "mean"), params=("params", "mean"),
                      n=("test_acc", "size"))
    return out.reset_index()


def _interp(curve: pd.DataFrame, at) -> np.ndarray:
    """Accuracy linearly interpolated in APL; points of equal APL are averaged first."""
    by_apl = curve.groupby("apl", sort=True).acc.mean()
    return np.interp(at, by_apl.index.to_numpy(float), by_apl.to_numpy(float))


# ---------------------------------------------------------------- collapse onset


@dataclass(frozen=True)
class Onset:
    apl: float | None  # the collapse onset; None when it is undefined (see reason)
    lam: float | None
    acc: float | None
    dense_acc: float | None
    tolerance: float
    collapsed: bool  # a sparse point of smaller APL falls below dense − tolerance
    reason: str = ""  # why apl is None


def collapse_onset(df: pd.DataFrame, tolerance: float, apl: str = APL) -> Onset:
    """The smallest APL at which sparse accuracy is still within ``tolerance`` of dense.

    For one dataset: the dense reference D is the mean test accuracy of its dense runs; the
    from-scratch sparse runs are averaged over seeds per λ and ordered by APL, largest
    first. A point is *within tolerance* when its accuracy is ≥ D − tolerance. The onset
    is the last point of the leading run of points within tolerance: the smallest APL such
    that it and every sparse point of larger APL are within tolerance. (A noisy recovery
    below an earlier failure does not move the onset down.)

    ``collapsed`` says whether some point beyond the onset falls outside the tolerance;
    when it is False the sweep never collapsed and the onset is only an upper bound.
    Undefined (``apl=None``, ``reason`` set) without a dense run, without sparse runs, or
    when even the sparse point of largest APL is outside the tolerance.
    """
    _one_dataset(df)
    dense = dense_accuracy(df)
    if dense is None:
        return Onset(None, None, None, None, tolerance, False, "no dense run")
    curve = arm_curve(df, "sparse", apl)
    if curve.empty:
        return Onset(None, None, None, dense, tolerance, False, "no sparse runs")
    points = curve.sort_values(["apl", "lam"], ascending=[False, True]).reset_index(drop=True)
    within = (points.acc >= dense - tolerance - _SLACK).to_numpy()
    leading = len(within) if within.all() else int(np.argmin(within))
    if leading == 0:
        return Onset(None, None, None, dense, tolerance, True,
                     "every sparse run is below dense − tolerance")
    onset = points.iloc[leading - 1]
    return Onset(float(onset.apl), float(onset.lam), float(onset.acc), dense, tolerance,
                 collapsed=leading < len(points))


# ---------------------------------------------------------------- nonlinear advantage


@dataclass(frozen=True)
class MatchedGap:
    apl: np.ndarray  # the common APL grid
    posthoc: np.ndarray  # interpolated accuracies on it
    scratch: np.ndarray
    mean_gap: float | None  # mean of posthoc − scratch over the grid
    max_gap: float | None
    reason: str = ""  # why there is no gap

    @property
    def gap(self) -> np.ndarray:
        return self.posthoc - self.scratch


def matched_apl_gap(df: pd.DataFrame, apl: str = APL) -> MatchedGap:
    """Post-hoc against from-scratch sparse accuracy at matched APL, for one dataset.

    Method: each arm's accuracy-vs-APL curve (mean over seeds per λ; equal APLs averaged)
    is linearly interpolated in APL. The common APL range is [max of the two minima, min of
    the two maxima]; the grid is every APL of either arm inside it. The gap is post-hoc
    minus from-scratch at each grid point; ``mean_gap`` is its plain mean over the grid.
    No extrapolation: without an overlap there is no gap.
    """
    _one_dataset(df)
    post, scratch = arm_curve(df, "posthoc", apl), arm_curve(df, "sparse", apl)
    empty = np.array([])
    if post.empty or scratch.empty:
        missing = "post-hoc" if post.empty else "from-scratch sparse"
        return MatchedGap(empty, empty, empty, None, None, f"no {missing} runs")
    lo, hi = max(post.apl.min(), scratch.apl.min()), min(post.apl.max(), scratch.apl.max())
    if lo > hi:
        return MatchedGap(empty, empty, empty, None, None, "the two arms' APL ranges do not overlap")
    all_apl = np.concatenate([post.apl.to_numpy(float), scratch.apl.to_numpy(float)])
    grid = np.unique(all_apl[(all_apl >= lo) & (all_apl <= hi)])
    p, s = _interp(post, grid), _interp(scratch, grid)
    return MatchedGap(grid, p, s, float(np.mean(p - s)), float(np.max(p - s)))


# ---------------------------------------------------------------- core networks


@dataclass(frozen=True)
class Plateau:
    found: bool
    lam_lo: float | None = None
    lam_hi: float | None = None
    points: int = 0
    apl: float | None = None  # median over the plateau: the core network's depth
    width: float | None = None  # ... and its total nonlinear width
    fraction: float | None = None  # width / total channels


def _spread(values: np.ndarray) -> float:
    return float((values.max() - values.min()) / np.median(values))


def core_plateau(df: pd.DataFrame, th: Thresholds, apl: str = APL) -> Plateau:
    """The longest run of consecutive λ values (from-scratch sparse, λ > 0) forming a core.

    A run of at least ``th.plateau_min_points`` consecutive λ is a plateau when APL and
    total nonlinear width both have (max − min) / median ≤ ``th.plateau``, every point has
    some nonlinear channel, and the median width is at most ``th.core_max_fraction`` of
    all channels (a still-dense network is not a core). Ties go to the smaller λ.
    """
    curve = arm_curve(df, "sparse", apl)
    curve = curve[curve.lam > 0].reset_index(drop=True)
    best: Plateau = Plateau(False)
    for i in range(len(curve)):
        for j in range(i + th.plateau_min_points, len(curve) + 1):
            run = curve.iloc[i:j]
            if (run.width <= 0).any() or (run.apl <= 0).any():
                break
            a, w = run.apl.to_numpy(float), run.width.to_numpy(float)
            if _spread(a) > th.plateau + _SLACK or _spread(w) > th.plateau + _SLACK:
                continue  # a longer run may still qualify: the median moves too
            fraction = float(np.median(w) / run.total.mean())
            if fraction <= th.core_max_fraction and len(run) > best.points:
                best = Plateau(True, float(run.lam.iloc[0]), float(run.lam.iloc[-1]), len(run),
                               float(np.median(a)), float(np.median(w)), fraction)
    return best


# ---------------------------------------------------------------- baselines


def baseline_comparison(df: pd.DataFrame, apl: str = APL) -> pd.DataFrame:
    """Each baseline against the sparse curve interpolated at the baseline's APL.

    Columns: depth, width, widened, apl, acc, sparse_acc (NaN when the baseline's APL lies
    outside the sparse runs' APL range: no extrapolation), sparse_wins.
    """
    base = baseline_points(df, apl)
    curve = arm_curve(df, "sparse", apl)
    if curve.empty or base.empty:
        base["sparse_acc"] = np.nan
    else:
        inside = base.apl.between(curve.apl.min() - _SLACK, curve.apl.max() + _SLACK)
        base["sparse_acc"] = np.where(inside, _interp(curve, base.apl.to_numpy(float)), np.nan)
    base["sparse_wins"] = base.sparse_acc > base.acc
    return base


# ---------------------------------------------------------------- findings


@dataclass
class Finding:
    number: int
    title: str
    claim: str  # the study's observation
    criterion: str  # what this run must show, with the thresholds
    verdict: str = NOT_SUPPORTED
    evidence: list[str] = field(default_factory=list)


def _pct(x: float | None) -> str:
    return "n/a" if x is None or np.isnan(x) else f"{100 * x:.2f}%"


def _pt(x: float | None) -> str:
    """An accuracy difference, in percentage points."""
    return "n/a" if x is None or np.isnan(x) else f"{100 * x:+.2f} pt"


def _num(x: float | None) -> str:
    return "n/a" if x is None or np.isnan(x) else f"{x:.2f}"


def _strictly_increasing(values: list[float]) -> bool:
    return all(b > a for a, b in zip(values, values[1:], strict=False))


def finding_core_networks(df: pd.DataFrame, th: Thresholds) -> Finding:
    f = Finding(
        1, "Core networks",
        "The channels that stay nonlinear form structures of nearly constant effective depth "
        "and width, and that depth and width depend on how hard the task is.",
        f"On every dataset, at least {th.plateau_min_points} consecutive λ values whose APL and "
        f"nonlinear width vary by at most {th.plateau:.0%} of their median, with at most "
        f"{th.core_max_fraction:.0%} of the channels nonlinear; and, over at least two datasets "
        "ordered by dense test error, a strictly larger core APL and width on the harder task.",
    )
    order = datasets_by_difficulty(df)
    plateaus = {d: core_plateau(df[df.dataset == d], th) for d in order}
    for d, p in plateaus.items():
        if p.found:
            f.evidence.append(
                f"{d}: plateau over λ {p.lam_lo:g}–{p.lam_hi:g} ({p.points} values), core APL "
                f"{_num(p.apl)}, {p.width:.0f} nonlinear channels ({p.fraction:.0%} of all)."
            )
        else:
            f.evidence.append(f"{d}: no plateau in the λ sweep.")
    ranked = [d for d in order if dense_error(df[df.dataset == d]) is not None]
    all_found = all(p.found for p in plateaus.values())
    ordered = False
    if len(ranked) >= 2 and all_found:
        apls = [plateaus[d].apl for d in ranked]
        widths = [plateaus[d].width for d in ranked]
        ordered = _strictly_increasing(apls) and _strictly_increasing(widths)
        f.evidence.append(
            f"Ordered by dense error ({', '.join(ranked)}): core APL "
            f"{', '.join(_num(a) for a in apls)}; width {', '.join(f'{w:.0f}' for w in widths)}."
        )
    elif len(ranked) < 2:
        f.evidence.append("Task dependence needs two datasets with a dense run.")
    f.verdict = SUPPORTED if all_found and ordered else NOT_SUPPORTED
    return f


def finding_decay_collapse(df: pd.DataFrame, th: Thresholds) -> Finding:
    f = Finding(
        2, "Slow decay, then collapse",
        "Accuracy falls slowly as effective depth falls, then collapses; shallow, partially "
        "linear networks beat baselines of similar depth, including widened ones.",
        f"On every dataset, a collapse onset (accuracy within {100 * th.tolerance:g} pt of dense) at "
        f"an APL of at most {th.shallow_fraction:.0%} of the dense APL, followed by sparser "
        "runs below the tolerance; and the sparse curve, interpolated at each baseline's APL, "
        "above every own-width and widened baseline inside its APL range (at least one of each).",
    )
    ok = True
    for d in datasets_by_difficulty(df):
        sub = df[df.dataset == d]
        onset, full_apl = collapse_onset(sub, th.tolerance), dense_apl(sub)
        if onset.apl is None:
            f.evidence.append(f"{d}: no collapse onset ({onset.reason}).")
            ok = False
        else:
            shallow = full_apl is not None and onset.apl <= th.shallow_fraction * full_apl + _SLACK
            f.evidence.append(
                f"{d}: dense accuracy {_pct(onset.dense_acc)} at APL {_num(full_apl)}; onset at "
                f"APL {_num(onset.apl)} (λ {onset.lam:g}, accuracy {_pct(onset.acc)})"
                + ("; collapses below it." if onset.collapsed else "; no collapse in the sweep.")
            )
            ok &= shallow and onset.collapsed
        base = baseline_comparison(sub)
        comparable = base.dropna(subset=["sparse_acc"])
        wins = int(comparable.sparse_wins.sum())
        f.evidence.append(
            f"{d}: sparse beats {wins} of {len(comparable)} baselines at matched APL "
            f"({int((~comparable.widened).sum())} own width, {int(comparable.widened.sum())} widened; "
            f"{len(base) - len(comparable)} outside the sparse APL range)."
        )
        for b in comparable.itertuples():
            kind = "widened" if b.widened else "own width"
            f.evidence.append(
                f"  depth {b.depth} ({kind}, width {b.width}): {_pct(b.acc)} vs sparse "
                f"{_pct(b.sparse_acc)} at APL {_num(b.apl)}."
            )
        ok &= (comparable.widened.any() and (~comparable.widened).any()
               and bool(comparable.sparse_wins.all()))
    f.verdict = SUPPORTED if ok else NOT_SUPPORTED
    return f


def finding_nonlinear_advantage(df: pd.DataFrame, th: Thresholds) -> Finding:
    f = Finding(
        3, "Nonlinear advantage",
        "Removing nonlinearity after training beats training with that little nonlinearity "
        "from the start; the gap depends on task difficulty and vanishes on easy tasks.",
        "Over at least two datasets ordered by dense test error, the mean post-hoc minus "
        f"from-scratch accuracy gap at matched APL exceeds {100 * th.gap_margin:g} pt on the hardest, "
        f"grows strictly with difficulty, and is at most {100 * th.vanish:g} pt in size on the easiest.",
    )
    ranked = [d for d in datasets_by_difficulty(df) if dense_error(df[df.dataset == d]) is not None]
    gaps = {}
    for d in ranked:
        g = matched_apl_gap(df[df.dataset == d])
        gaps[d] = g.mean_gap
        err = dense_error(df[df.dataset == d])
        if g.mean_gap is None:
            f.evidence.append(f"{d} (dense error {_pct(err)}): no gap ({g.reason}).")
        else:
            f.evidence.append(
                f"{d} (dense error {_pct(err)}): mean gap {_pt(g.mean_gap)}, largest "
                f"{_pt(g.max_gap)}, over APL {_num(g.apl.min())}–{_num(g.apl.max())} "
                f"({len(g.apl)} points)."
            )
    values = [gaps[d] for d in ranked]
    if len(ranked) < 2:
        f.evidence.append("Task dependence needs two datasets with a dense run.")
    elif any(v is None for v in values):
        f.evidence.append("A dataset without a gap cannot be ranked.")
    else:
        ok = values[-1] > th.gap_margin and _strictly_increasing(values) and abs(values[0]) <= th.vanish
        f.verdict = SUPPORTED if ok else NOT_SUPPORTED
    return f


def findings(df: pd.DataFrame, th: Thresholds) -> list[Finding]:
    """The three observations, each with its verdict and the numbers that decide it."""
    return [finding_core_networks(df, th), finding_decay_collapse(df, th),
            finding_nonlinear_advantage(df, th)]
