"""What `results/summary.csv` says about the study's three observations.

Pure functions of pandas frames, shared by the figures and the report. Conventions:

* accuracies are fractions in [0, 1]; tolerances and margins are absolute accuracy
  differences (0.01 = one percentage point);
* effective depth is the normalized APL (column ``apl_normalized``) unless a function
  takes ``apl=`` to say otherwise;
* seeds are averaged first: a "point" is one configuration (one λ, or one baseline depth
  and width) with the mean over its seeds.

Every verdict is supported, contradicted or inconclusive, decided by intervals: Student's t
over seeds combined with the test set's binomial standard error (:func:`interval`), against
the thresholds in :class:`Thresholds`; none is written in advance. A verdict is only as good as
its evidence: :func:`checks` tests the protocol (grids span the APL range, controls match the
dense run, the dense net beats its baselines, enough points below the onset, runs settled), and
any failed check a finding relies on turns that part inconclusive, naming the check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd
from scipy import stats

from . import plan, schemas
from .aggregate import SUMMARY_COLUMNS
from .errors import UserError

APL = "apl_normalized"
SUPPORTED = "supported"
CONTRADICTED = "contradicted"
INCONCLUSIVE = "inconclusive"
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
    confidence: float  # coverage of every interval
    collapse_ratio: float  # rapid collapse: slope below the onset >= this x the slope above
    span_high: float  # a grid of shifts reaches an APL >= this fraction of dense ...
    span_low: float  # ... and <= this fraction ...
    span_points: int  # ... with this many points in between
    late_margin: float  # early vs late: latest start ahead of from-scratch by more than this
    settle: float  # a run has settled: |Δ nonlinear channels over its last epoch| / channels <= this
    depth_eps: float  # measure: the second threshold of the summary's *_eps columns (no verdict reads it)

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
    dense = df[df.arm == plan.DENSE]
    return float(dense.test_acc.mean()) if len(dense) else None


def dense_error(df: pd.DataFrame) -> float | None:
    acc = dense_accuracy(df)
    return None if acc is None else 1.0 - acc


def dense_apl(df: pd.DataFrame, apl: str = APL) -> float | None:
    _one_dataset(df)
    dense = df[df.arm == plan.DENSE]
    return float(dense[apl].mean()) if len(dense) else None


def arm_rows(df: pd.DataFrame, arm: str) -> pd.DataFrame:
    """The runs of an arm (a name of the arm table, plan.ARMS)."""
    return df[df.arm == arm]


def starts(df: pd.DataFrame, arm: str) -> list[int]:
    """The epochs at which the prior switches on in ``arm``'s runs, sorted (0: from the start)."""
    rows = arm_rows(df, arm)
    if "prior_start_epoch" not in rows:
        return [0] if len(rows) else []
    return sorted(int(start) for start in rows.prior_start_epoch.unique())


def from_epoch(df: pd.DataFrame, arm: str, start: int) -> pd.DataFrame:
    """``df`` with ``arm``'s runs narrowed to those whose prior switches on at epoch ``start``
    (one curve of the late-start arm); the other arms' rows as they are."""
    if "prior_start_epoch" not in df:
        return df if start == 0 else df[df.arm != arm]
    return df[(df.arm != arm) | (df.prior_start_epoch == start)]


def arm_order(arm: str) -> int:
    """An arm's place in the arm table's order; an arm the table does not know comes last."""
    return list(plan.ARMS).index(arm) if arm in plan.ARMS else len(plan.ARMS)


def curve_label(arm: str, start: int = 0) -> str:
    """How figures and the report name an arm's runs whose prior switches on at epoch ``start``:
    the arm table's label, and the start when it is not 0. An arm the table does not know (a
    summary from an older plan) goes by its name."""
    label = plan.ARMS[arm].label if arm in plan.ARMS else arm
    return f"{label}, prior from epoch {start}" if start else label


def arm_curve(df: pd.DataFrame, arm: str, apl: str = APL) -> pd.DataFrame:
    """One row per λ of ``arm`` (mean over seeds), sorted by λ: lam, apl, acc, acc_std, width, n."""
    _one_dataset(df)
    rows = arm_rows(df, arm)
    grouped = rows.groupby("lam", sort=True)
    return pd.DataFrame({
        "lam": grouped.lam.first(),
        "apl": grouped[apl].mean(),
        "acc": grouped.test_acc.mean(),
        "acc_std": grouped.test_acc.std(),  # sample sd over seeds (NaN with one seed)
        "width": grouped.nonlinear_channels.mean(),
        "total": grouped.total_channels.mean(),
        "n": grouped.size(),
    }).reset_index(drop=True)


BASELINE_ARMS = (plan.BASELINE, plan.SHALLOW)  # ReLU nets of similar depth: the full net's family, plain CNNs


def baseline_points(df: pd.DataFrame, apl: str = APL) -> pd.DataFrame:
    """One row per baseline (arch, depth, width, widened), mean over seeds, sorted by APL;
    ``full_params``: the dense (full) network's parameter count, for the size ratio."""
    _one_dataset(df)
    rows = df[df.arm.isin(BASELINE_ARMS)]
    grouped = rows.groupby(["arch", "depth", "width", "widened"], sort=True)
    out = grouped.agg(apl=(apl, "mean"), acc=("test_acc", "mean"), params=("params", "mean"),
                      n=("test_acc", "size")).reset_index().sort_values(["apl", "widened"]).reset_index(drop=True)
    dense = df[df.arm == plan.DENSE].params
    out["full_params"] = float(dense.mean()) if len(dense) else np.nan
    return out


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
    curve = arm_curve(df, plan.SPARSE, apl)
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


def matched_apl_gap(df: pd.DataFrame, apl: str = APL, arm: str = plan.POSTHOC,
                    reference: str = plan.SPARSE) -> MatchedGap:
    """``arm`` (post-hoc) against ``reference`` (from-scratch sparse) accuracy at matched APL, for one dataset.

    Method: each arm's accuracy-vs-APL curve (mean over seeds per λ; equal APLs averaged)
    is linearly interpolated in APL. The common APL range is [max of the two minima, min of
    the two maxima]; the grid is every APL of either arm inside it. The gap is post-hoc
    minus from-scratch at each grid point; ``mean_gap`` is its plain mean over the grid.
    No extrapolation: without an overlap there is no gap.
    """
    _one_dataset(df)
    post, scratch = arm_curve(df, arm, apl), arm_curve(df, reference, apl)
    empty = np.array([])
    if post.empty or scratch.empty:
        missing = curve_label(arm if post.empty else reference)
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
    curve = arm_curve(df, plan.SPARSE, apl)
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
    curve = arm_curve(df, plan.SPARSE, apl)
    if curve.empty or base.empty:
        base["sparse_acc"] = np.nan
    else:
        inside = base.apl.between(curve.apl.min() - _SLACK, curve.apl.max() + _SLACK)
        base["sparse_acc"] = np.where(inside, _interp(curve, base.apl.to_numpy(float)), np.nan)
    base["sparse_wins"] = base.sparse_acc > base.acc
    return base


# ---------------------------------------------------------------- noise: intervals


@dataclass(frozen=True)
class Interval:
    """A mean over seeds with its interval (see :func:`interval`)."""

    mean: float
    lo: float
    hi: float
    seeds: int

    def above(self, x: float) -> str:
        """The claim "the value exceeds x": supported when the whole interval does."""
        return SUPPORTED if self.lo > x else CONTRADICTED if self.hi < x else INCONCLUSIVE

    def within(self, x: float) -> str:
        """The claim "|value| <= x"."""
        if -x <= self.lo and self.hi <= x:
            return SUPPORTED
        return CONTRADICTED if self.lo > x or self.hi < -x else INCONCLUSIVE

    def pt(self) -> str:
        return f"{100 * self.mean:+.2f} pt [{100 * self.lo:+.2f}, {100 * self.hi:+.2f}] ({self.seeds} seeds)"

    def numbers(self) -> dict:
        """For results/metrics.json (an unbounded side, one seed without a test-set error, is None)."""
        return {"mean": self.mean, "lo": _finite(self.lo), "hi": _finite(self.hi), "seeds": self.seeds}


def _finite(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def binomial_se(acc: float, n: float) -> float:
    """Standard error of an accuracy measured on n test images."""
    return float(np.sqrt(max(acc * (1 - acc), 0.0) / max(n, 1)))


def interval(per_seed, se: float, th: Thresholds) -> Interval:
    """Mean of n per-seed values ± sqrt((t·sd/√n)² + (z·se)²).

    Two independent errors, each at its own quantile, added in quadrature. The seeds' spread
    (training noise) is the sample sd over √n, at Student's t with n − 1 degrees of freedom: with
    2 or 3 seeds the sd itself is uncertain, and t says by how much (a bootstrap's spread would
    underestimate it). ``se`` is the test set's binomial standard error of the quantity, which
    seeds cannot average away (one test set of thousands of images: the normal z is exact enough).
    """
    values = np.asarray(per_seed, float)
    mean, n = float(values.mean()), len(values)
    if n < 2 and se == 0:  # one seed and no test-set error to go on: no interval at all
        return Interval(mean, -np.inf, np.inf, n)
    tail = 0.5 + th.confidence / 2
    seeds = float(stats.t.ppf(tail, n - 1) * values.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0
    half = float(np.hypot(seeds, NormalDist().inv_cdf(tail) * se))
    return Interval(mean, mean - half, mean + half, n)


def test_size(df: pd.DataFrame) -> float:
    return float(df.test_size.mean()) if "test_size" in df and len(df) else 1.0


@dataclass(frozen=True)
class Gap:
    """An arm minus a reference at matched APL, net of the arm's control, per seed and over seeds."""

    per_seed: dict  # seed -> its gap (fraction)
    missing: dict  # seed -> why it has none: such a seed makes a verdict on the gap inconclusive
    interval: Interval | None  # over the seeds that have a gap
    reason: str = ""  # why no seed has one

    @property
    def mean(self) -> float | None:
        return None if self.interval is None else self.interval.mean

    def why_missing(self) -> str:
        return "; ".join(f"seed {seed}: {why}" for seed, why in self.missing.items())


def control_difference(df: pd.DataFrame, arm: str, seed) -> tuple[float | None, str]:
    """``arm``'s λ = 0 control minus the dense run, one seed of one dataset: what the control's own
    training (post-hoc: P epochs more) adds. 0 where the control is the dense run itself."""
    control = plan.ARMS[arm].control if arm in plan.ARMS else None
    if control in (None, plan.DENSE):
        return 0.0, ""
    rows = df[df.seed == seed]
    twin, dense = arm_rows(rows, control), arm_rows(rows, plan.DENSE)
    if twin.empty or dense.empty:
        return None, f"no {curve_label(control if twin.empty else plan.DENSE)} run"
    return float(twin.test_acc.mean() - dense.test_acc.mean()), ""


def matched_gap(df: pd.DataFrame, arm: str = plan.POSTHOC, reference: str = plan.SPARSE,
                th: Thresholds | None = None) -> Gap:
    """The nonlinear advantage of ``arm`` over ``reference`` for one dataset, as the findings and the
    figures state it (one definition, one number).

    Per seed: [arm(APL a) − control] − [reference(APL a) − dense], averaged over the matched APL
    grid (:func:`matched_apl_gap` of that seed's runs), i.e. the matched gap less what the arm's
    control gains over dense by its extra training alone (post-hoc: P epochs more; the late arm's
    control is dense, so its gap is the plain one). Then the interval over seeds. Every seed of
    ``df`` must give a value; one that cannot is in ``missing`` with the reason.
    """
    per_seed, missing = {}, {}
    for seed in sorted(df.seed.unique()):
        g = matched_apl_gap(df[df.seed == seed], arm=arm, reference=reference)
        extra, why = control_difference(df, arm, seed)
        if g.mean_gap is None or extra is None:
            missing[seed] = g.reason or why
        else:
            per_seed[seed] = g.mean_gap - extra
    if not per_seed:
        return Gap({}, missing, None, matched_apl_gap(df, arm=arm, reference=reference).reason
                   or "no seed has both arms")
    th = th or Thresholds.from_params()
    return Gap(per_seed, missing, interval(list(per_seed.values()), gap_se(df, arm, reference), th))


def gap_se(df: pd.DataFrame, arm: str, reference: str) -> float:
    """The test set's binomial standard error of a gap: the two arms' accuracies over their common
    APL range (the points the gap compares), and the arm's control and dense where the gap is net of them."""
    n = test_size(df)
    rows = [arm_rows(df, arm), arm_rows(df, reference)]
    if all(len(r) for r in rows):
        lo, hi = max(r[APL].min() for r in rows), min(r[APL].max() for r in rows)
        matched = [r[r[APL].between(lo - _SLACK, hi + _SLACK)] for r in rows]
        rows = matched if all(len(r) for r in matched) else rows
    control = plan.ARMS[arm].control if arm in plan.ARMS else None
    rows += [arm_rows(df, control), arm_rows(df, plan.DENSE)] if control not in (None, plan.DENSE) else []
    accs = [r.test_acc.mean() for r in rows]
    return float(np.sqrt(sum(binomial_se(p, n) ** 2 for p in accs if not np.isnan(p))))


def effective_tolerance(df: pd.DataFrame, th: Thresholds) -> float:
    """The collapse tolerance, never below twice the test set's standard error of the dense accuracy."""
    dense = dense_accuracy(df)
    return max(th.tolerance, 2 * binomial_se(dense, test_size(df))) if dense is not None else th.tolerance


def _slope(apl: np.ndarray, acc: np.ndarray) -> float | None:
    return float(np.polyfit(apl, acc, 1)[0]) if len(apl) >= 2 and np.ptp(apl) > 0 else None


def collapse_steepness(df: pd.DataFrame, onset_apl: float, th: Thresholds) -> tuple[Interval | None, dict]:
    """Per seed: accuracy-per-APL slope below the onset minus ``collapse_ratio`` x the slope
    above it (the dense run included above). Positive: the collapse is that much steeper.
    Also: each seed that has no value, with why (None: no seed has one)."""
    values, missing = [], {}
    for seed in sorted(df.seed.unique()):
        rows = df[(df.seed == seed) & df.arm.isin([plan.SPARSE, plan.DENSE])]
        apl, acc = rows[APL].to_numpy(float), rows.test_acc.to_numpy(float)
        above = _slope(apl[apl >= onset_apl - _SLACK], acc[apl >= onset_apl - _SLACK])
        below = _slope(apl[apl <= onset_apl + _SLACK], acc[apl <= onset_apl + _SLACK])
        if above is None or below is None:
            missing[seed] = f"fewer than two points {'above' if above is None else 'below'} the onset"
        else:
            values.append(below - th.collapse_ratio * max(above, 0.0))
    return (interval(values, 0.0, th) if values else None), missing


def grid_span(df: pd.DataFrame, th: Thresholds) -> pd.DataFrame:
    """Does each grid of prior shifts span the APL range? One row per dataset, arm under the prior
    (the arm table's, in its order) and epoch at which its prior switches on.

    Columns: dataset, arm, start (that epoch), high (largest APL / dense APL), low (smallest),
    transition (points strictly between span_low and span_high of dense), ok, note.
    """
    rows = []
    prior_arms = [name for name, arm in plan.ARMS.items() if arm.prior]
    for d in sorted(df.dataset.unique()):
        sub = df[df.dataset == d]
        full = dense_apl(sub)
        for arm, start in [(name, start) for name in prior_arms for start in starts(sub, name)]:
            curve = arm_curve(from_epoch(sub, arm, start), arm)
            if curve.empty or not full:
                continue
            frac = curve.apl.to_numpy(float) / full
            inside = int(((frac > th.span_low) & (frac < th.span_high)).sum())
            short = [f"no point above {th.span_high:.0%} of dense APL"] if frac.max() < th.span_high else []
            short += [f"no point below {th.span_low:.0%}"] if frac.min() > th.span_low else []
            short += [f"{inside} point(s) in the transition (< {th.span_points})"] if inside < th.span_points else []
            rows.append(dict(dataset=d, arm=arm, start=start, high=float(frac.max()), low=float(frac.min()),
                             transition=inside, ok=not short, note="; ".join(short) or "spans the range"))
    return pd.DataFrame(rows, columns=["dataset", "arm", "start", "high", "low", "transition", "ok", "note"])


# ---------------------------------------------------------------- checks: the protocol behind each verdict

SPAN, CONTROL, DENSE_VS_BASELINE, BELOW_ONSET, SETTLED = (
    "grid span", "control", "dense vs baseline", "points below onset", "settled")
MIN_BELOW_ONSET = 3  # from-scratch APLs per seed below the onset: a slope there needs a few distinct ones


@dataclass(frozen=True)
class Check:
    """One test of the evidence behind a verdict; a failed one makes what rests on it inconclusive."""

    name: str  # one of SPAN, CONTROL, DENSE_VS_BASELINE, BELOW_ONSET, SETTLED
    dataset: str
    subject: str  # what it tests: an arm's label, a baseline, a run
    value: float | str
    threshold: str
    passed: bool
    text: str  # one line with its numbers; the findings quote it when it fails
    arm: str = ""  # the arm (plan.ARMS) it is about: how a finding picks the checks it relies on
    start: int = 0  # grid span: the epoch at which the arm's prior switches on

    def numbers(self) -> dict:
        """For results/metrics.json."""
        return dict(name=self.name, dataset=self.dataset, subject=self.subject, value=self.value,
                    threshold=self.threshold, passed=self.passed)


def controls(df: pd.DataFrame, th: Thresholds) -> pd.DataFrame:
    """Each arm with a λ = 0 control (plan.ARMS[arm].control) against the dense run, per dataset.

    Per seed of the arm, control minus dense (paired), then the interval; the control passes when
    |mean| ≤ the collapse tolerance (:func:`effective_tolerance`): a twin without the prior that
    drifts further from dense than that would credit (or charge) the arm with its own training.
    Columns: dataset, arm, control, control_acc, dense_acc, diff (an Interval, None without a value),
    tolerance, missing (seed -> why it has no value), passed.
    """
    rows = []
    for d in sorted(df.dataset.unique()):
        sub = df[df.dataset == d]
        tol, dense = effective_tolerance(sub, th), dense_accuracy(sub)
        for name, arm in plan.ARMS.items():
            if arm.control is None or arm_rows(sub, name).empty:
                continue
            diffs, missing = [], {}
            for seed in sorted(arm_rows(sub, name).seed.unique()):
                diff, why = control_difference(sub, name, seed)
                if diff is None:
                    missing[seed] = why
                else:
                    diffs.append(diff)
            twin = arm_rows(sub, arm.control).test_acc.mean()
            se = 0.0 if arm.control == plan.DENSE else float(np.hypot(
                binomial_se(twin, test_size(sub)), binomial_se(dense or 0.0, test_size(sub))))
            iv = interval(diffs, se, th) if diffs else None
            rows.append(dict(dataset=d, arm=name, control=arm.control, control_acc=twin, dense_acc=dense, diff=iv,
                             tolerance=tol, missing=missing,
                             passed=iv is not None and not missing and abs(iv.mean) <= tol + _SLACK))
    return pd.DataFrame(rows, columns=["dataset", "arm", "control", "control_acc", "dense_acc", "diff", "tolerance",
                                       "missing", "passed"])


def _span_checks(df: pd.DataFrame, th: Thresholds) -> list[Check]:
    threshold = f"≥ {th.span_high:.0%} and ≤ {th.span_low:.0%} of dense APL, ≥ {th.span_points} between"
    return [Check(SPAN, r.dataset, curve_label(r.arm, r.start), f"{r.high:.0%} to {r.low:.0%}, {r.transition} between",
                  threshold, bool(r.ok), f"{r.dataset} {curve_label(r.arm, r.start)} grid: {r.note}", r.arm,
                  int(r.start)) for r in grid_span(df, th).itertuples()]


def _control_checks(df: pd.DataFrame, th: Thresholds) -> list[Check]:
    out = []
    for r in controls(df, th).itertuples():
        label, limit = curve_label(r.control), f"|control − dense| ≤ {100 * r.tolerance:.2f} pt"
        if r.control == plan.DENSE:
            text = (f"{r.dataset} {curve_label(r.arm)}: its control is the dense run itself (a late run with no "
                    "prior continues the dense state: it is the dense run), difference 0 by construction")
            out.append(Check(CONTROL, r.dataset, f"{curve_label(r.arm)}: dense", 0.0, limit, True, text, r.arm))
        elif r.missing:
            why = "; ".join(f"seed {seed}: {why}" for seed, why in r.missing.items())
            out.append(Check(CONTROL, r.dataset, label, "no value", limit, False,
                             f"{r.dataset} {label} − dense not measurable ({why})", r.arm))
        else:
            where = "within" if r.passed else "beyond"
            out.append(Check(CONTROL, r.dataset, label, r.diff.mean, limit, bool(r.passed),
                             f"{r.dataset} {label} − dense {r.diff.pt()}, {where} ±{100 * r.tolerance:.2f} pt", r.arm))
    return out


def baseline_name(b) -> str:
    """A baseline configuration (arch, depth, widened) as checks and evidence name it."""
    return f"{b.arch}-{b.depth} ({'widened' if b.widened else 'own width'})"


def _baseline_rows(sub: pd.DataFrame, b) -> pd.DataFrame:
    return sub[sub.arm.isin(BASELINE_ARMS) & (sub.arch == b.arch) & (sub.depth == b.depth) & (sub.width == b.width)
               & (sub.widened == b.widened)]


# What a failed dense-vs-baseline check means for the study.
SCALE_NOTE = (", below 0: the full network is the weaker one at this scale, so this scale cannot test sparse "
              "against this baseline (config/paper.yaml, a ResNet-56 on CIFAR, is where it can be tested)")


def _baseline_checks(df: pd.DataFrame, th: Thresholds) -> list[Check]:
    """The dense full net at least as good as each baseline: otherwise beating that baseline says
    nothing of sparsity (the full net itself is the weaker one)."""
    out = []
    for d in sorted(df.dataset.unique()):
        sub = df[df.dataset == d]
        dense = arm_rows(sub, plan.DENSE).groupby("seed").test_acc.mean()
        if dense.empty:
            continue
        for b in baseline_points(sub).itertuples():
            base = _baseline_rows(sub, b).groupby("seed").test_acc.mean()
            seeds = sorted(set(dense.index) | set(base.index))
            missing = [s for s in seeds if s not in dense.index or s not in base.index]
            paired = [dense[s] - base[s] for s in seeds if s not in missing]
            name, threshold = baseline_name(b), "dense − baseline ≥ 0"
            arm = _baseline_rows(sub, b).arm.iloc[0]
            if missing or not paired:
                out.append(Check(DENSE_VS_BASELINE, d, name, "no value", threshold, False,
                                 f"{d} dense − {name}: seed(s) {', '.join(map(str, missing))} lack a dense or a "
                                 "baseline run", arm))
                continue
            n = test_size(sub)
            iv = interval(paired, float(np.hypot(binomial_se(dense.mean(), n), binomial_se(b.acc, n))), th)
            ok = iv.mean >= -_SLACK
            out.append(Check(DENSE_VS_BASELINE, d, name, iv.mean, threshold, ok,
                             f"{d} dense − {name} {iv.pt()}" + ("" if ok else SCALE_NOTE), arm))
    return out


def _onset_checks(df: pd.DataFrame, th: Thresholds) -> list[Check]:
    """Every seed with enough from-scratch points below the onset for the collapse's slope: distinct
    APLs, since runs that all end fully linear (APL 0) give no slope however many there are."""
    out, threshold = [], f"≥ {MIN_BELOW_ONSET} distinct APLs per seed"
    for d in sorted(df.dataset.unique()):
        sub = df[df.dataset == d]
        sparse = arm_rows(sub, plan.SPARSE)
        if sparse.empty:
            continue
        label = curve_label(plan.SPARSE)
        onset = collapse_onset(sub, effective_tolerance(sub, th))
        if onset.apl is None:
            out.append(Check(BELOW_ONSET, d, label, "no onset", threshold, False,
                             f"{d}: no collapse onset ({onset.reason})", plan.SPARSE))
            continue
        below = {seed: sparse[(sparse.seed == seed) & (sparse[APL] < onset.apl - _SLACK)][APL]
                 for seed in sorted(sub.seed.unique())}
        counts = {seed: int(apl.round(6).nunique()) for seed, apl in below.items()}
        worst = min(counts, key=counts.get)
        ok = counts[worst] >= MIN_BELOW_ONSET
        out.append(Check(BELOW_ONSET, d, label, counts[worst], threshold, ok,
                         f"{d}: seed {worst} has {counts[worst]} distinct from-scratch APL(s) below the onset (APL "
                         f"{onset.apl:.2f})" + ("" if ok else f", fewer than {MIN_BELOW_ONSET}"), plan.SPARSE))
    return out


def _settled_checks(df: pd.DataFrame, th: Thresholds) -> list[Check]:
    """Per dataset and arm, its worst run: a run still switching channels at its end is no point on a
    curve of the prior's equilibrium."""
    out, threshold = [], f"|Δ nonlinear| / channels ≤ {th.settle:.0%}"
    for d in sorted(df.dataset.unique()):
        sub = df[df.dataset == d]
        for arm in sorted(sub.arm.unique(), key=lambda a: (arm_order(a), a)):
            rows, label = arm_rows(sub, arm), curve_label(arm)
            if "nonlinear_change" not in rows:
                out.append(Check(SETTLED, d, label, "no value", threshold, False,
                                 f"{d} {label}: no nonlinear_change column: rerun aggregate", arm))
                continue
            frac = rows.nonlinear_change.abs() / rows.total_channels
            if frac.isna().any():
                run = rows.run[frac.isna()].iloc[0]
                out.append(Check(SETTLED, d, label, "no value", threshold, False,
                                 f"{d} {label}: run {run} has no nonlinear_change (fewer than two epochs?)", arm))
                continue
            worst = rows.loc[frac.idxmax()]
            ok = frac.max() <= th.settle + _SLACK
            out.append(Check(SETTLED, d, label, float(frac.max()), threshold, bool(ok),
                             f"{d} {label}: worst run {worst.run} changed {worst.nonlinear_change:+.0f} of "
                             f"{worst.total_channels:.0f} nonlinear channels over its last epoch ({frac.max():.1%}, "
                             f"{'within' if ok else 'beyond'} {th.settle:.0%})", arm))
    return out


def checks(df: pd.DataFrame, th: Thresholds) -> list[Check]:
    """Every check of the study: grid span, controls, dense vs baselines, points below the onset, runs
    settled (in that order, by dataset within each)."""
    return (_span_checks(df, th) + _control_checks(df, th) + _baseline_checks(df, th) + _onset_checks(df, th)
            + _settled_checks(df, th))


def relied(gates: list[Check], dataset: str, *wants: tuple) -> list[Check]:
    """The checks of ``dataset`` that match any of ``wants``: (name, arm) or (name, arm, start)."""
    return [c for c in gates if c.dataset == dataset
            and any(c.name == w[0] and c.arm == w[1] and (len(w) < 3 or c.start == w[2]) for w in wants)]


def combine(verdicts: list[str]) -> str:
    """All parts supported: supported; any part contradicted: contradicted; else inconclusive."""
    if verdicts and all(v == SUPPORTED for v in verdicts):
        return SUPPORTED
    return CONTRADICTED if CONTRADICTED in verdicts else INCONCLUSIVE


# ---------------------------------------------------------------- findings


@dataclass
class Finding:
    number: int
    title: str
    claim: str  # the study's observation
    criterion: str  # what this run must show, with the thresholds
    verdict: str = INCONCLUSIVE
    evidence: list[str] = field(default_factory=list)
    numbers: dict = field(default_factory=dict)  # the values behind the verdict, by name (results/metrics.json)
    checks: list[Check] = field(default_factory=list)  # the checks it relies on, passed or not

    def record(self, dataset: str, name: str, value) -> None:
        self.numbers.setdefault(dataset, {})[name] = value.numbers() if isinstance(value, Interval) else value

    def gate(self, checks_: list[Check]) -> bool:
        """Rely on ``checks_``: whether all pass; each failed one goes into the evidence and the numbers."""
        for c in checks_:
            if c not in self.checks:
                self.checks.append(c)
                if not c.passed:
                    self.numbers.setdefault("failed_checks", []).append(c.numbers())
                    self.evidence.append(f"inconclusive: {c.name} failed: {c.text}")
        return all(c.passed for c in checks_)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]


def _pct(x: float | None) -> str:
    return "n/a" if x is None or np.isnan(x) else f"{100 * x:.2f}%"


def _num(x: float | None) -> str:
    return "n/a" if x is None or np.isnan(x) else f"{x:.2f}"


def _seeds(missing: dict) -> str:
    return "; ".join(f"seed {seed}: {why}" for seed, why in missing.items())


def ranked_datasets(df: pd.DataFrame, th: Thresholds) -> tuple[list[str], str]:
    """Datasets with a dense run, easiest first, and whether their order is certain: each dense
    error's interval (seeds and test-set SE) below the next one's (SUPPORTED) or not."""
    ranked = [d for d in datasets_by_difficulty(df) if dense_error(df[df.dataset == d]) is not None]
    errors = []
    for d in ranked:
        sub = df[(df.dataset == d) & (df.arm == plan.DENSE)]
        se = binomial_se(1 - sub.test_acc.mean(), test_size(sub))
        errors.append(interval(1 - sub.test_acc.to_numpy(float), se, th))
    ordered = all(a.hi < b.lo for a, b in zip(errors, errors[1:], strict=False))
    return ranked, SUPPORTED if ordered and len(ranked) >= 2 else INCONCLUSIVE


def _sparse_gates(gates: list[Check], d: str, *arms) -> list[Check]:
    """Grid span and settled of the from-scratch arm and ``arms`` (name, or (name, start))."""
    wants = [(SPAN, plan.SPARSE, 0), (SETTLED, plan.SPARSE)]
    for arm in arms:
        name, start = arm if isinstance(arm, tuple) else (arm, 0)
        wants += [(SPAN, name, start), (SETTLED, name)]
    return relied(gates, d, *wants)


def finding_core_networks(df: pd.DataFrame, th: Thresholds, gates: list[Check] | None = None) -> Finding:
    f = Finding(
        1, "Core networks",
        "The channels that stay nonlinear form structures of nearly constant effective depth "
        "and width, and that depth and width depend on how hard the task is.",
        f"On every dataset, among the from-scratch runs above the collapse onset, at least "
        f"{th.plateau_min_points} consecutive λ whose APL and nonlinear width vary by at most "
        f"{th.plateau:.0%} of their median, with at most {th.core_max_fraction:.0%} of the channels "
        "nonlinear (contradicted: enough λ above the onset and none form one); and, on datasets whose "
        "dense errors' intervals are ordered, a larger core APL on the harder task (interval of the "
        "difference over seeds above 0). Relies on: grid span and settled of the from-scratch arm.",
    )
    gates = checks(df, th) if gates is None else gates
    parts, cores = [], {}
    ranked, certain = ranked_datasets(df, th)
    for d in ranked:
        sub = df[df.dataset == d]
        onset = collapse_onset(sub, effective_tolerance(sub, th))
        above = sub if onset.apl is None else sub[(sub.arm != plan.SPARSE) | (sub[APL] >= onset.apl - _SLACK)]
        p = core_plateau(above, th)
        n_above = arm_curve(above, plan.SPARSE).lam.gt(0).sum()
        trusted = f.gate(_sparse_gates(gates, d))
        if p.found:
            parts.append(SUPPORTED if trusted else INCONCLUSIVE)
            lams = arm_curve(above, plan.SPARSE).lam
            lams = lams[(lams >= p.lam_lo) & (lams <= p.lam_hi)]
            core = above[(above.arm == plan.SPARSE) & above.lam.isin(lams)]
            if trusted:
                cores[d] = core.groupby("seed")[APL].median()
            f.numbers.setdefault(d, {}).update(core_apl=p.apl, core_width=p.width, core_fraction=p.fraction)
            f.evidence.append(f"{d}: plateau over λ {p.lam_lo:g}–{p.lam_hi:g} ({p.points} values above the "
                              f"onset), core APL {_num(p.apl)}, {p.width:.0f} nonlinear channels "
                              f"({p.fraction:.0%} of all).")
        else:
            parts.append(CONTRADICTED if trusted and n_above >= th.plateau_min_points else INCONCLUSIVE)
            f.evidence.append(f"{d}: no plateau among the {n_above} λ above the collapse onset.")
            f.record(d, "points_above_onset", int(n_above))
    if len(cores) >= 2 and len(cores) == len(ranked):
        if certain != SUPPORTED:
            f.evidence.append("The dense errors' intervals overlap: the datasets' difficulty order is uncertain.")
            parts.append(INCONCLUSIVE)
        for easy, hard in zip(ranked, ranked[1:], strict=False):
            seeds = sorted(set(df[df.dataset == easy].seed) | set(df[df.dataset == hard].seed))
            missing = {s: f"no core run on {d}" for d in (hard, easy) for s in seeds if s not in cores[d].index}
            diff = (cores[hard] - cores[easy]).dropna()
            if missing:
                f.evidence.append(f"Core APL {hard} minus {easy}: inconclusive, {_seeds(missing)}.")
            if diff.empty or missing:
                parts.append(INCONCLUSIVE)
                continue
            iv = interval(diff.to_numpy(), 0.0, th)
            parts.append(iv.above(0.0))
            f.record(hard, f"core_apl_minus_{easy}", iv)
            f.evidence.append(f"Core APL {hard} minus {easy}: {iv.mean:+.2f} [{iv.lo:+.2f}, {iv.hi:+.2f}].")
    elif len(ranked) < 2:
        f.evidence.append("Task dependence needs two datasets with a dense run.")
        parts.append(INCONCLUSIVE)
    f.verdict = combine(parts)
    return f


def _decay_parts(d: str, sub: pd.DataFrame, th: Thresholds, f: Finding, gates: list[Check]) -> list[str]:
    """Finding 2 on one dataset: a shallow onset, a rapid collapse, baselines beaten."""
    trusted = f.gate(_sparse_gates(gates, d))
    tol, full = effective_tolerance(sub, th), dense_apl(sub)
    onset, parts = collapse_onset(sub, tol), []
    if onset.apl is None or full is None:
        curve = arm_curve(sub, plan.SPARSE)
        spans = full is not None and not curve.empty and curve.apl.max() >= th.span_high * full
        f.evidence.append(f"{d}: no collapse onset ({onset.reason}; tolerance {100 * tol:.2f} pt).")
        return [CONTRADICTED if trusted and spans and onset.dense_acc is not None else INCONCLUSIVE]
    shallow = onset.apl <= th.shallow_fraction * full + _SLACK
    f.record(d, "onset_fraction_of_dense_apl", onset.apl / full)
    f.evidence.append(f"{d}: dense {_pct(onset.dense_acc)} at APL {_num(full)}; onset (tolerance "
                      f"{100 * tol:.2f} pt) at APL {_num(onset.apl)} = {onset.apl / full:.0%} of dense"
                      + (", collapses below it." if onset.collapsed else ", no collapse in the sweep."))
    parts.append(SUPPORTED if shallow else CONTRADICTED if onset.collapsed else INCONCLUSIVE)
    steep, missing = collapse_steepness(sub, onset.apl, th)
    enough = f.gate(relied(gates, d, (BELOW_ONSET, plan.SPARSE)))
    if steep is None or missing:
        f.evidence.append(f"{d}: collapse steepness not measurable ({_seeds(missing) or 'no seeds'}).")
        parts.append(INCONCLUSIVE)
    else:
        f.evidence.append(f"{d}: slope below onset − {th.collapse_ratio:g} × slope above: "
                          f"{steep.mean:+.3f} [{steep.lo:+.3f}, {steep.hi:+.3f}] per APL.")
        parts.append(steep.above(0.0) if enough else INCONCLUSIVE)
        f.record(d, "collapse_steepness", steep)
    parts += _baseline_parts(d, sub, th, f, gates)
    return parts if trusted else [INCONCLUSIVE for _ in parts]


def _baseline_parts(d: str, sub: pd.DataFrame, th: Thresholds, f: Finding, gates: list[Check]) -> list[str]:
    """Sparse (interpolated at each baseline's APL) minus each baseline, per seed, with intervals."""
    parts = []
    base = baseline_comparison(sub)
    for b in base.itertuples():
        if np.isnan(b.sparse_acc):
            continue
        kind, name = "widened" if b.widened else "own width", baseline_name(b)
        by_seed = _baseline_rows(sub, b).groupby("seed").test_acc.mean()
        per_seed, missing = [], {}
        for seed in sorted(sub.seed.unique()):
            curve = arm_curve(sub[sub.seed == seed], plan.SPARSE)
            if seed not in by_seed.index:
                missing[seed] = "no baseline run"
            elif curve.empty or not curve.apl.min() - _SLACK <= b.apl <= curve.apl.max() + _SLACK:
                missing[seed] = f"no from-scratch runs around APL {_num(b.apl)}"
            else:
                per_seed.append(float(_interp(curve, [b.apl])[0]) - by_seed[seed])
        fair = f.gate([c for c in gates if (c.name, c.dataset, c.subject) == (DENSE_VS_BASELINE, d, name)])
        if missing:
            f.evidence.append(f"  {d}: {name}: sparse − baseline inconclusive ({_seeds(missing)}).")
            parts.append(INCONCLUSIVE)
            continue
        n = test_size(sub)
        iv = interval(per_seed, float(np.hypot(binomial_se(b.sparse_acc, n), binomial_se(b.acc, n))), th)
        parts.append(iv.above(0.0) if fair else INCONCLUSIVE)
        f.record(d, f"{plan.SPARSE}_minus_{b.arch}{b.depth}_{'wide' if b.widened else 'own'}", iv)
        f.evidence.append(f"  {d}: {b.arch}-{b.depth} ({kind}, width {b.width}, {b.params / b.full_params:.2f}× "
                          f"params) at APL {_num(b.apl)}: sparse − baseline {iv.pt()}.")
    if not parts:
        f.evidence.append(f"{d}: no baseline inside the sparse runs' APL range.")
        parts.append(INCONCLUSIVE)
    return parts


def finding_decay_collapse(df: pd.DataFrame, th: Thresholds, gates: list[Check] | None = None) -> Finding:
    f = Finding(
        2, "Slow decay, then collapse",
        "Accuracy falls slowly as effective depth falls, then collapses; shallow, partially "
        "linear networks beat baselines of similar depth, including widened ones.",
        f"On every dataset: a collapse onset (accuracy within max({100 * th.tolerance:g} pt, 2 test-set SE) "
        f"of dense) at an APL of at most {th.shallow_fraction:.0%} of the dense APL; a collapse at least "
        f"{th.collapse_ratio:g}× steeper below the onset than above it (interval over seeds); and the sparse "
        "curve above every baseline inside its APL range (interval of sparse − baseline above 0). Relies on: "
        "grid span and settled of the from-scratch arm, points below onset (the steepness), dense vs baseline "
        "(each comparison).",
    )
    gates = checks(df, th) if gates is None else gates
    parts = []
    for d in datasets_by_difficulty(df):
        parts += _decay_parts(d, df[df.dataset == d], th, f, gates)
    f.verdict = combine(parts)
    return f


def finding_nonlinear_advantage(df: pd.DataFrame, th: Thresholds, gates: list[Check] | None = None) -> Finding:
    f = Finding(
        3, "Nonlinear advantage",
        "Removing nonlinearity after training beats training with that little nonlinearity "
        "from the start; the gap depends on task difficulty and vanishes on easy tasks.",
        "The post-hoc minus from-scratch accuracy gap at matched APL, net of the post-hoc control's extra "
        "training (per seed: [post-hoc − its λ = 0 control] − [from scratch − dense]): its interval above "
        f"{100 * th.gap_margin:g} pt on the hardest dataset, within ±{100 * th.vanish:g} pt (or twice the test "
        "set's SE of the gap) on the easiest, and the hardest's gap minus the easiest's above 0 (datasets "
        "ordered by dense error, the order itself certain). Relies on: grid span and settled of the "
        "from-scratch and post-hoc arms, the post-hoc control.",
    )
    gates = checks(df, th) if gates is None else gates
    ranked, certain = ranked_datasets(df, th)
    gaps, trusted = {}, {}
    for d in ranked:
        sub = df[df.dataset == d]
        gaps[d] = g = matched_gap(sub, plan.POSTHOC, plan.SPARSE, th)
        trusted[d] = f.gate(_sparse_gates(gates, d, plan.POSTHOC) + relied(gates, d, (CONTROL, plan.POSTHOC)))
        f.record(d, f"{plan.POSTHOC}_minus_{plan.SPARSE}", g.interval)
        text = g.interval.pt() if g.interval else f"no gap ({g.reason})."
        f.evidence.append(f"{d} (dense error {_pct(dense_error(sub))}): {text}"
                          + (f"; inconclusive, {g.why_missing()}" if g.missing and g.interval else ""))
    if len(ranked) < 2 or any(g.interval is None for g in gaps.values()):
        f.evidence.append("Task dependence needs two datasets with a gap each.")
        f.verdict = INCONCLUSIVE
        return f
    easy, hard = ranked[0], ranked[-1]

    def judged(d: str, verdict: str) -> str:  # a failed check or a missing seed: no verdict on that dataset
        return verdict if trusted[d] and not gaps[d].missing else INCONCLUSIVE

    seeds = sorted(set(gaps[hard].per_seed) | set(gaps[easy].per_seed))
    diffs = [gaps[hard].per_seed[s] - gaps[easy].per_seed[s] for s in seeds
             if s in gaps[hard].per_seed and s in gaps[easy].per_seed]
    se = float(np.hypot(*(gap_se(df[df.dataset == d], plan.POSTHOC, plan.SPARSE) for d in (hard, easy))))
    grows = interval(diffs, se, th) if diffs else None
    if grows:
        f.evidence.append(f"Gap on {hard} minus gap on {easy}: {grows.pt()}.")
        f.record(hard, f"gap_minus_{easy}", grows)
    # "Vanishes" within the tolerance, or twice the test set's SE of the gap where that is larger.
    vanish = max(th.vanish, 2 * gap_se(df[df.dataset == easy], plan.POSTHOC, plan.SPARSE))
    f.record(easy, "vanish_bound", vanish)
    both = grows.above(0.0) if grows and len(diffs) == len(seeds) else INCONCLUSIVE
    f.verdict = combine([judged(hard, gaps[hard].interval.above(th.gap_margin)),
                         judged(easy, gaps[easy].interval.within(vanish)),
                         judged(easy, judged(hard, both)), certain])
    return f


def finding_early_late(df: pd.DataFrame, th: Thresholds, gates: list[Check] | None = None) -> Finding:
    f = Finding(
        4, "Early versus late",
        "Reducing nonlinearity early in training costs much more than reducing it late.",
        "At equal training budgets, on the hardest dataset, the run whose prior starts latest minus the "
        f"from-scratch run (prior from epoch 0) at matched APL: interval above {100 * th.late_margin:g} pt. "
        "Relies on: grid span and settled of the from-scratch and late-start arms, the late-start control.",
    )
    gates = checks(df, th) if gates is None else gates
    ranked, _ = ranked_datasets(df, th)
    verdict = INCONCLUSIVE
    for d in ranked:
        sub = df[df.dataset == d]
        late = starts(sub, plan.LATE)
        for start in late:
            g = matched_gap(from_epoch(sub, plan.LATE, start), plan.LATE, plan.SPARSE, th)
            text = g.interval.pt() if g.interval else g.reason
            f.evidence.append(f"{d}: prior from epoch {start} minus from scratch: {text}"
                              + (f"; inconclusive, {g.why_missing()}" if g.missing and g.interval else ""))
            f.record(d, f"{plan.LATE}{start}_minus_{plan.SPARSE}", g.interval)
            if d == ranked[-1] and start == late[-1]:
                trusted = f.gate(_sparse_gates(gates, d, (plan.LATE, start)) + relied(gates, d, (CONTROL, plan.LATE)))
                verdict = g.interval.above(th.late_margin) if g.interval and trusted and not g.missing else INCONCLUSIVE
        if not late:
            f.evidence.append(f"{d}: no late-start runs.")
    f.verdict = verdict
    return f


def findings(df: pd.DataFrame, th: Thresholds) -> list[Finding]:
    """The four observations, each with its verdict, the numbers that decide it and the checks it relies on."""
    gates = checks(df, th)
    return [finding_core_networks(df, th, gates), finding_decay_collapse(df, th, gates),
            finding_nonlinear_advantage(df, th, gates), finding_early_late(df, th, gates)]
