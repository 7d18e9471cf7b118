"""``figures``: the report's figures from results/summary.csv and the per-run files.

Every figure is one entry of the figure registry (:data:`FIGURES`): stem, report section,
title, drawing and caption. Each has one panel per dataset and a fixed file name, so the
pipeline can declare them as outputs. Figures are drawn on bare ``Figure`` objects (the
Agg canvas, no pyplot state) and written atomically with fixed metadata, so the same
inputs give the same bytes.
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import yaml
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from . import analysis, plan
from .errors import UserError
from .fileio import json_text, read_json, write_dir

METHOD_FILE = "method.json"  # run settings gathered from the runs' config.yaml, for the report
STYLE = {
    "font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "legend.fontsize": 7,
    "axes.spines.top": False, "axes.spines.right": False, "svg.hashsalt": "nonlinear-advantage",
    "figure.dpi": 100, "savefig.dpi": 150,
}
ARM_COLORS = {plan.SPARSE: "C0", plan.POSTHOC: "C3", plan.DENSE: "k", plan.BASELINE: "C2"}
# Fixed metadata, so the same inputs give the same bytes; each writer knows its own keys.
METADATA = {"pdf": {"CreationDate": None, "Creator": "nonlinear-advantage"},
            "svg": {"Date": None, "Creator": "nonlinear-advantage"},
            "png": {"Software": "nonlinear-advantage"}}
# report.py's frame (A4 less 2 cm margins, at most 11 cm high): drawn at that size, a figure fills
# the page's width at print size, its fonts as set in STYLE.
PAGE_WIDTH_IN = 17 / 2.54
PAGE_HEIGHT_IN = 11 / 2.54
CLIP_MARKER, CLIP_SYMBOL = "v", "▼"  # a point below the accuracy axis, drawn at its lower edge (and in text)


def _render(fig: Figure, stem: str, formats: list[str]) -> dict[str, bytes]:
    """A figure's files, name -> bytes: drawn in memory, so that the set is written at once."""
    files = {}
    for fmt in formats:
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, metadata=METADATA[fmt], bbox_inches="tight")
        files[f"{stem}.{fmt}"] = buffer.getvalue()
    return files


def _grid(n: int, height: float = 2.9, extra: int = 0) -> tuple[Figure, list]:
    """Panels of ``height`` inches, up to 3 a row across the page's width."""
    cols = min(3, n + extra)
    rows = -(-(n + extra) // cols)
    fig = Figure(figsize=(PAGE_WIDTH_IN, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n + extra:]:
        ax.set_visible(False)
    return fig, axes


def run_dir(runs: Path, run: str) -> Path:
    """The directory of a summary row: ``runs/<run>``, or ``<run>`` itself when it is a path."""
    for candidate in (runs / run, Path(run)):
        if candidate.is_dir():
            return candidate
    return runs / run


def _legend_below(ax, ncol: int = 1, below: float = 0.2) -> None:
    """The legend under the axes (``below``: in axes heights, under the x label), where it cannot hide a point."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -below), frameon=False, ncol=ncol, columnspacing=1.0,
              handlelength=1.6)


# ---------------------------------------------------------------- the accuracy axis


def _prior_curves(sub: pd.DataFrame) -> list[tuple[str, int, pd.DataFrame]]:
    """(arm, start, curve) for every arm under the prior and every epoch its prior switches on."""
    return [(arm, start, analysis.arm_curve(analysis.from_epoch(sub, arm, start), arm).sort_values("apl"))
            for arm, spec in plan.ARMS.items() if spec.prior for start in analysis.starts(sub, arm)]


def _plotted_accuracies(sub: pd.DataFrame) -> np.ndarray:
    """Every accuracy an accuracy axis of ``sub`` may show: the prior arms' points, dense, baselines."""
    values = [curve.acc for _, _, curve in _prior_curves(sub)] + [analysis.baseline_points(sub).acc]
    dense = analysis.dense_accuracy(sub)
    values.append(pd.Series([] if dense is None else [dense], dtype=float))
    flat = pd.concat(values).to_numpy(float)
    return flat[np.isfinite(flat)]


def accuracy_floor(sub: pd.DataFrame) -> float | None:
    """The lower limit of a dataset's accuracy axis: robust, so that one collapsed point does not
    squash the rest into a line. Half the range of the upper 90% of the points below its 10%
    quantile, never below the lowest point (None: nothing is cut)."""
    acc = _plotted_accuracies(sub)
    if acc.size < 5:
        return None
    low, high = np.quantile(acc, 0.1), acc.max()
    floor = low - 0.5 * max(high - low, 0.01)
    return float(floor) if floor > acc.min() else None


def _clip_note(sub: pd.DataFrame) -> str | None:
    """"2 points below 60.0%" when the floor cuts some; None otherwise."""
    floor = accuracy_floor(sub)
    if floor is None:
        return None
    n = int((_plotted_accuracies(sub) < floor).sum())
    return f"{n} point{'s' * (n != 1)} below {100 * floor:.1f}%"


def _robust_accuracy_axis(ax, sub: pd.DataFrame, curves: list[pd.DataFrame]) -> None:
    """Limit the accuracy axis to :func:`accuracy_floor`; the points below it appear as markers at
    its edge (in their curve's colour), and a note in the corner says how many."""
    floor = accuracy_floor(sub)
    if floor is None:
        return
    top = float(_plotted_accuracies(sub).max())
    ax.set_ylim(floor, top + 0.08 * (top - floor))
    clipped = 0
    for curve, color in curves:
        below = curve[curve.acc < floor]
        clipped += len(below)
        ax.scatter(below.apl, np.full(len(below), floor), marker=CLIP_MARKER, color=color, s=30, clip_on=False,
                   zorder=4)
    if clipped:
        # Two short lines: one line ran past a narrow panel's left edge, over its tick labels.
        ax.text(0.99, 0.02, f"{CLIP_SYMBOL} {clipped} point{'s' * (clipped != 1)}\nbelow {100 * floor:.1f}%",
                transform=ax.transAxes, ha="right", va="bottom", fontsize=6, color="0.3")


def _arm_color(arm: str, start: int, k: int) -> str | tuple:
    """Fixed colours for the named arms; late starts from a sequential palette, any other arm C4, C5, ..."""
    if start:
        return _start_color(k + 1)  # as in early_late, where from scratch is the first
    return ARM_COLORS.get(arm) or f"C{4 + analysis.arm_order(arm) % 6}"


def _first_seed(rows: pd.DataFrame) -> pd.DataFrame:
    return rows.sort_values("seed").groupby("lam", sort=True).head(1).sort_values("lam")


# ---------------------------------------------------------------- the figures


def accuracy_vs_apl(df: pd.DataFrame, th: analysis.Thresholds) -> Figure:
    order = analysis.datasets_by_difficulty(df)
    fig, axes = _grid(len(order), height=3.9)
    for ax, dataset in zip(axes, order, strict=False):
        sub = df[df.dataset == dataset]
        tolerance = analysis.effective_tolerance(sub, th)
        dense = analysis.dense_accuracy(sub)
        if dense is not None:
            ax.axhspan(dense - tolerance, dense, color="0.9", zorder=0, label="collapse tolerance")
            ax.axhline(dense, color=ARM_COLORS[plan.DENSE], lw=1, label=analysis.curve_label(plan.DENSE))
            full_apl = analysis.dense_apl(sub)
            ax.plot([full_apl], [dense], "D", color=ARM_COLORS[plan.DENSE], ms=4)
        drawn, late = [], 0
        for arm, start, curve in _prior_curves(sub):
            color = _arm_color(arm, start, late)
            late += bool(start)
            ax.errorbar(curve.apl, curve.acc, yerr=curve.acc_std.fillna(0), fmt="o-", color=color, ms=3, lw=1,
                        capsize=2, label=analysis.curve_label(arm, start))
            drawn.append((curve, color))
        base = analysis.baseline_points(sub)
        for widened, marker, label in ((False, "s", "baseline, own width"), (True, "^", "baseline, widened")):
            b = base[base.widened == widened]
            if b.empty:  # no legend entry for a kind this study did not train
                continue
            ax.scatter(b.apl, b.acc, marker=marker, color=ARM_COLORS[plan.BASELINE], s=26, label=label,
                       facecolors="none" if widened else ARM_COLORS[plan.BASELINE], zorder=3)
            for p in b.itertuples():
                name = f"{'p' if p.arch == 'plain' else 'd'}{p.depth}"
                ax.annotate(name, (p.apl, p.acc), textcoords="offset points", xytext=(4, 2), fontsize=6,
                            color=ARM_COLORS[plan.BASELINE])
            drawn.append((b, ARM_COLORS[plan.BASELINE]))
        onset = analysis.collapse_onset(sub, tolerance)
        if onset.apl is not None:
            ax.axvline(onset.apl, color="C1", ls="--", lw=1, label="collapse onset")
        _robust_accuracy_axis(ax, sub, drawn)
        title = dataset if dense is None else f"{dataset} (dense {100 * dense:.2f}%)"
        ax.set(title=title, xlabel="normalized APL", ylabel="test accuracy")
        _legend_below(ax, ncol=2)
    return fig


@dataclass(frozen=True)
class Study:
    """What the drawings read besides the summary: the runs' directories and the study's depth file."""

    runs: Path
    depths: dict[str, dict]


def _heatmap_rows(df: pd.DataFrame, depths: dict) -> tuple[pd.DataFrame, np.ndarray | None, np.ndarray | None]:
    """The sparse runs drawn (first seed per λ, with a depth entry) and their (nonlinear, width)
    matrices from the depth file."""
    rows = _first_seed(df[df.arm == plan.SPARSE])
    rows = rows[rows.run.isin(list(depths))]
    counts, widths = [], []
    for run in rows.run:
        layers = sorted(depths[run]["layers"], key=lambda r: r["index"])
        counts.append([r["nonlinear"] for r in layers])
        widths.append([r["width"] for r in layers])
    if rows.empty or len({len(c) for c in counts}) != 1:
        return rows, None, None
    return rows, np.array(counts, float), np.array(widths, float)


SLOPE_QUANTILE_COLUMNS = ("slope_q10", "slope_q50", "slope_q90")


def _slope_panel(ax, rows: pd.DataFrame) -> None:
    """|1 − a| of each row's channels: 10–90% as a bar, the median as a dot, one row per λ as in
    the heat map beside it; the two thresholds as vertical lines. Channels the prior only partly
    linearized show here, where the counts (exact zeros) hide them."""
    y = np.arange(len(rows))
    q10, q50, q90 = (rows[c].to_numpy(float) for c in SLOPE_QUANTILE_COLUMNS)
    ax.hlines(y, q10, q90, color="C0", lw=3, alpha=0.45, label="10–90%")
    ax.plot(q50, y, "o", color="C0", ms=3, label="median")
    for column, style, name in (("eps", ":", "eps"), ("depth_eps", "--", "depth_eps")):
        value = float(rows[column].iloc[0])
        ax.axvline(value, color="0.4", ls=style, lw=0.8, label=f"{name} {value:g}")
    widest = float(np.nanmax(q90)) if np.isfinite(q90).any() else 0.0
    ax.set_xlim(-0.02, max(0.5, 1.15 * widest))
    ax.set(xlabel="|1 − a| (distance from linear)", title="slopes per λ")
    ax.tick_params(labelleft=False)


def core_networks(df: pd.DataFrame, depths: dict) -> Figure:
    order = analysis.datasets_by_difficulty(df)
    fig = Figure(figsize=(PAGE_WIDTH_IN, 1.9 * len(order) + 0.4), layout="constrained")
    grid = fig.subplots(len(order), 2, squeeze=False, gridspec_kw={"width_ratios": (3.2, 1)})
    image = None
    for (ax, ax_slopes), dataset in zip(grid, order, strict=False):
        rows, counts, widths = _heatmap_rows(df[df.dataset == dataset], depths)
        ax.set_title(dataset, loc="left")
        if counts is None:
            ax.text(0.5, 0.5, "no depth for the sparse runs", ha="center", va="center",
                    transform=ax.transAxes)
            ax_slopes.set_visible(False)
            continue
        image = ax.imshow(counts / widths, aspect="auto", cmap="viridis", vmin=0, vmax=1,
                          interpolation="nearest")
        if counts.size <= 400:  # the counts themselves, where they fit
            for (i, j), n in np.ndenumerate(counts):
                ax.text(j, i, f"{n:.0f}", ha="center", va="center", fontsize=5,
                        color="w" if n / widths[i, j] < 0.6 else "k")
        ax.set_yticks(range(len(rows)), [f"{r.lam:.3g} ({r.apl_normalized:.1f})" for r in rows.itertuples()])
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel="activation layer index", ylabel="λ (normalized APL)")
        ax_slopes.sharey(ax)
        _slope_panel(ax_slopes, rows)
    if image is not None:
        fig.colorbar(image, ax=grid.ravel().tolist(), label="nonlinear channels / width", shrink=0.7, pad=0.02)
        visible = [ax for ax in grid[:, 1] if ax.get_visible()]
        if visible:
            _legend_below(visible[-1], ncol=2, below=0.38)
    return fig


def core_plateau(df: pd.DataFrame, th: analysis.Thresholds) -> Figure:
    fig = Figure(figsize=(PAGE_WIDTH_IN, 2.9), layout="constrained")
    ax_apl, ax_width = fig.subplots(1, 2)
    for k, dataset in enumerate(analysis.datasets_by_difficulty(df)):
        sub = df[df.dataset == dataset]
        curve = analysis.arm_curve(sub, plan.SPARSE)
        curve = curve[curve.lam > 0]
        color = f"C{k}"
        ax_apl.plot(curve.lam, curve.apl, "o-", color=color, ms=4, label=dataset)
        ax_width.plot(curve.lam, curve.width, "o-", color=color, ms=4, label=dataset)
        plateau = analysis.core_plateau(sub, th)
        if plateau.found:
            for ax in (ax_apl, ax_width):
                ax.axvspan(plateau.lam_lo, plateau.lam_hi, color=color, alpha=0.12, lw=0)
        full_apl = analysis.dense_apl(sub)
        if full_apl is not None:
            ax_apl.axhline(full_apl, color=color, lw=0.8, ls=":")
    ax_apl.set(xscale="log", xlabel="λ", ylabel="normalized APL (effective depth)",
               title="effective depth (dotted: dense)")
    ax_width.set(xscale="log", xlabel="λ", ylabel="nonlinear channels", title="total nonlinear width")
    for ax in (ax_apl, ax_width):  # a grid within one decade gets minor labels only, and they collide
        lo, hi = ax.get_xlim()
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        # 1-2-5 labels collide over more than a few decades (a grid from almost nothing linearized)
        ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5) if hi / lo <= 10 ** 2.5 else (1,)))
    ax_apl.legend()
    return fig


def nonlinear_advantage(df: pd.DataFrame) -> Figure:
    order = analysis.datasets_by_difficulty(df)
    fig, axes = _grid(len(order), extra=1)
    gaps = []
    for ax, dataset in zip(axes, order, strict=False):
        sub = df[df.dataset == dataset]
        drawn = []
        for arm in (plan.SPARSE, plan.POSTHOC):
            curve = analysis.arm_curve(sub, arm).sort_values("apl")
            ax.errorbar(curve.apl, curve.acc, yerr=curve.acc_std.fillna(0), fmt="o-", ms=3, lw=1, capsize=2,
                        color=ARM_COLORS[arm], label=f"{analysis.curve_label(arm)}, ± sd over seeds")
            drawn.append((curve, ARM_COLORS[arm]))
        gap, net = analysis.matched_apl_gap(sub), analysis.matched_gap(sub).mean  # net: the findings' number
        if gap.mean_gap is not None and net is not None:
            ax.fill_between(gap.apl, gap.scratch, gap.posthoc, color=ARM_COLORS[plan.POSTHOC], alpha=0.15,
                            lw=0, label=f"gap net of its control, mean {100 * net:+.2f} pt")
        gaps.append((dataset, analysis.dense_error(sub), net))
        _robust_accuracy_axis(ax, sub, drawn)
        ax.set(title=dataset, xlabel="normalized APL", ylabel="test accuracy")
        _legend_below(ax)
    ax = axes[len(order)]
    ranked = [g for g in gaps if g[1] is not None and g[2] is not None]
    ax.bar(range(len(ranked)), [100 * g[2] for g in ranked], color=ARM_COLORS[plan.POSTHOC])
    ax.set_xticks(range(len(ranked)), [f"{d}\n(err {100 * e:.1f}%)" for d, e, _ in ranked])
    ax.axhline(0, color="k", lw=0.8)
    ax.set(title="mean gap, by dense test error", ylabel="post-hoc − scratch (pt)")
    return fig


def early_late(df: pd.DataFrame) -> Figure:
    """Accuracy against APL for each epoch the prior switches on (0: from scratch), same budget."""
    order = analysis.datasets_by_difficulty(df)
    fig, axes = _grid(len(order))
    for ax, dataset in zip(axes, order, strict=False):
        sub = df[df.dataset == dataset]
        curves = [(plan.SPARSE, 0), *((plan.LATE, start) for start in analysis.starts(sub, plan.LATE))]
        drawn = []
        for k, (arm, start) in enumerate(curves):
            curve = analysis.arm_curve(analysis.from_epoch(sub, arm, start), arm).sort_values("apl")
            ax.errorbar(curve.apl, curve.acc, yerr=curve.acc_std.fillna(0), fmt="o-", ms=3, lw=1, capsize=2,
                        color=_start_color(k), label=analysis.curve_label(arm, start))
            drawn.append((curve, _start_color(k)))
        dense = analysis.dense_accuracy(sub)
        if dense is not None:
            ax.axhline(dense, color=ARM_COLORS[plan.DENSE], lw=1,
                       label=f"{analysis.curve_label(plan.DENSE)} ({100 * dense:.2f}%)")
        _robust_accuracy_axis(ax, sub, drawn)
        budget = sub[sub.arm.isin([arm for arm, _ in curves])].budget_epochs.max()  # the compared runs' (not B + P)
        ax.set(title=f"{dataset}, budget {int(budget)} epochs", xlabel="normalized APL",
               ylabel="test accuracy")
        _legend_below(ax)
    return fig


def _start_color(k: int) -> tuple:
    """The k-th of a sequential palette: early starts light, late ones dark."""
    return matplotlib.colormaps["viridis"](0.85 - 0.75 * k / 4)


def _representatives(sub: pd.DataFrame) -> list[tuple[str, str, pd.Series]]:
    """(arm, label, row): dense, sparse at the smallest, middle and largest λ, post-hoc at the middle λ."""
    picks = []
    dense = sub[sub.arm == plan.DENSE].sort_values("seed")
    if len(dense):
        picks.append((plan.DENSE, analysis.curve_label(plan.DENSE), dense.iloc[0]))
    for arm in (plan.SPARSE, plan.POSTHOC):
        rows = _first_seed(sub[sub.arm == arm])
        if rows.empty:
            continue
        chosen = [len(rows) // 2] if arm == plan.POSTHOC else sorted({0, len(rows) // 2, len(rows) - 1})
        picks += [(arm, f"{analysis.curve_label(arm)} λ={rows.iloc[i].lam:.3g}", rows.iloc[i]) for i in chosen]
    return picks


def training_curves(df: pd.DataFrame, runs: Path) -> Figure:
    order = analysis.datasets_by_difficulty(df)
    fig = Figure(figsize=(PAGE_WIDTH_IN, 4.4), layout="constrained")
    axes = fig.subplots(2, len(order), squeeze=False)
    for col, dataset in enumerate(order):
        ax_acc, ax_nl = axes[0, col], axes[1, col]
        for k, (arm, label, row) in enumerate(_representatives(df[df.dataset == dataset])):
            path = run_dir(runs, row.run) / "history.csv"
            if not path.is_file():
                continue
            h = pd.read_csv(path)
            # epochs since initialization (a run that continues another holds that run's epochs too)
            h["epoch"] += int(row.budget_epochs) - int(row.epochs)
            acc = "val_acc" if "val_acc" in h else "test_acc"
            style = dict(color=ARM_COLORS[plan.DENSE] if arm == plan.DENSE else f"C{k}", lw=1.2, label=label)
            if acc in h:
                ax_acc.plot(h.epoch, h[acc], **style)
            missing = {"nonlinear_channels", "total_channels"} - set(h.columns)
            if missing:  # a history from before total_channels was recorded: say so, don't draw nothing
                raise UserError(f"{path}: no column {', '.join(sorted(missing))}; retrain the run")
            ax_nl.plot(h.epoch, h.nonlinear_channels / h.total_channels, **style)
        ax_acc.set(title=dataset, xlabel="epoch (since initialization)", ylabel="validation accuracy")
        ax_nl.set(xlabel="epoch (since initialization)", ylabel="nonlinear fraction of channels", ylim=(-0.02, 1.02))
        for ax in (ax_acc, ax_nl):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _legend_below(ax_nl, below=0.32)
    return fig


# ---------------------------------------------------------------- captions (with the study's numbers)


def _onsets(df: pd.DataFrame, th: analysis.Thresholds) -> str:
    onsets = []
    for d in analysis.datasets_by_difficulty(df):
        sub = df[df.dataset == d]
        o = analysis.collapse_onset(sub, analysis.effective_tolerance(sub, th))
        onsets.append(f"{d}: {o.reason}" if o.apl is None else f"{d}: APL {o.apl:.2f} (λ {o.lam:g})")
    return "; ".join(onsets)


def _clipped(df: pd.DataFrame) -> str:
    """What the robust accuracy axes leave out, per dataset ("" when nothing is)."""
    notes = [f"{d}: {note}" for d in analysis.datasets_by_difficulty(df)
             if (note := _clip_note(df[df.dataset == d]))]
    if not notes:
        return ""
    return f" Not shown on the accuracy axes (drawn as {CLIP_SYMBOL} at their lower edge): {'; '.join(notes)}."


def _gaps(df: pd.DataFrame) -> str:
    gaps = []
    for d in analysis.datasets_by_difficulty(df):
        g = analysis.matched_gap(df[df.dataset == d])
        gaps.append(f"{d}: {g.reason}" if g.mean is None else f"{d}: {100 * g.mean:+.2f} pt")
    return "; ".join(gaps)


def _late_gaps(df: pd.DataFrame, th: analysis.Thresholds) -> str:
    gaps = []
    for d in analysis.datasets_by_difficulty(df):
        sub = df[df.dataset == d]
        starts = analysis.starts(sub, plan.LATE)
        if not starts:
            gaps.append(f"{d}: no late-start runs")
            continue
        g = analysis.matched_gap(analysis.from_epoch(sub, plan.LATE, starts[-1]), plan.LATE, plan.SPARSE, th)
        gaps.append(f"{d}: {g.interval.pt() if g.interval else g.reason}")
    return "; ".join(gaps)


# ---------------------------------------------------------------- the figure registry


@dataclass(frozen=True)
class FigureSpec:
    stem: str  # the file name, without extension
    section: str  # the report section it appears in
    title: str  # one line: what it shows
    about: str  # how to read it (the Snakemake report's caption)
    draw: Callable[[pd.DataFrame, Study, analysis.Thresholds], Figure]  # (summary, study, thresholds)
    caption: Callable[[pd.DataFrame, analysis.Thresholds], str]  # the PDF's caption, with the numbers


FIGURES: tuple[FigureSpec, ...] = (
    FigureSpec(
        "accuracy_vs_apl", "Accuracy against APL",
        "Test accuracy against effective depth (normalized APL), per dataset.",
        "One line per arm under the prior (from scratch, post hoc, each late start; mean ± sd over seeds per "
        "λ). Squares and triangles: ReLU baselines of similar depth at their own width and widened to the full "
        "network's parameter count. Black line and diamond: dense network; grey band: the collapse tolerance; "
        "dashed line: the collapse onset computed by ``analysis.collapse_onset``. The accuracy axis starts at a "
        "robust floor; points below it are drawn as " + CLIP_SYMBOL + " at its edge.",
        lambda df, study, th: accuracy_vs_apl(df, th),
        lambda df, th: "Every arm under the prior (one point per λ, mean ± sd over seeds; late starts by the epoch "
        "their prior switches on) against baselines "
        "of similar depth (squares: own width; triangles: widened to the full network's parameter count; "
        "dN = ResNet depth, pN = plain CNN depth). Black line: the dense network; grey band: the tolerance "
        f"({100 * th.tolerance:g} pt, or twice the test set's standard error if larger). Dashed: the collapse "
        "onset, the smallest APL such that it and every "
        f"sparse point of larger APL stay within the tolerance. Onsets: {_onsets(df, th)}.{_clipped(df)}",
    ),
    FigureSpec(
        "core_networks", "Core networks",
        "Nonlinear channels per layer for each λ of the from-scratch sparse runs.",
        "Nonlinear channels per activation layer (numbers) and as a fraction of each layer's width (colour), "
        "one row per λ of the from-scratch sparse runs, read from the study's depth file (results/depth.json); "
        "beside it, the distribution of |1 − a| over the run's channels (10–90% bar, median dot).",
        lambda df, study, th: core_networks(df, study.depths),
        lambda df, th: "Nonlinear channels per activation layer (numbers) and as a fraction of the "
        "layer's width (colour), for each λ of the from-scratch sparse runs (first seed; its normalized APL in "
        "brackets), from the study's depth file. Right: how far the same run's slopes are from linear, |1 − a| "
        "over all its channels (bar: 10–90%, dot: median), with the counting threshold eps (dotted) and the "
        "second threshold depth_eps (dashed) of the summary's *_eps columns: channels left of it are nearly "
        "linear though counted nonlinear.",
    ),
    FigureSpec(
        "core_plateau", "Core networks",
        "Effective depth and total nonlinear width against λ.",
        "The shaded range is the plateau found by ``analysis.core_plateau``; dotted lines mark the dense APL.",
        lambda df, study, th: core_plateau(df, th),
        lambda df, th: "Normalized APL and total nonlinear channels against λ (from-scratch sparse, mean "
        "over seeds). Shaded: the plateau found by the core-network test (spread ≤ "
        f"{th.plateau:.0%}); dotted: the dense APL.",
    ),
    FigureSpec(
        "nonlinear_advantage", "Nonlinear advantage",
        "Post-hoc against from-scratch sparsification at matched APL.",
        "The shaded area is the gap at matched APL (linear interpolation on the common APL range); the bars "
        "give the mean gap per dataset ordered by dense test error.",
        lambda df, study, th: nonlinear_advantage(df),
        lambda df, th: "Post-hoc (dense net, then sparsified) against from-scratch sparse accuracy, mean ± sd "
        "over seeds per λ. Shaded: the gap at matched APL on the interpolation grid. Right: mean gap per dataset, "
        "ordered by "
        f"dense test error. Mean gaps: {_gaps(df)}.",
    ),
    FigureSpec(
        "early_late", "Early versus late",
        "Linearizing early against late in training, at the same budget.",
        "One curve per epoch at which the prior switches on, within the same budget of epochs: 0 is the "
        "from-scratch sparse arm. Mean over seeds, ± sd; black line: the dense network.",
        lambda df, study, th: early_late(df),
        lambda df, th: "Test accuracy against normalized APL for each epoch at which the prior switches on "
        "(0: from scratch), at an equal training budget; mean ± sd over seeds. Later starts above earlier "
        "ones mean linearizing early costs more. Latest start minus from scratch at matched APL: "
        f"{_late_gaps(df, th)}.",
    ),
    FigureSpec(
        "training_curves", "Training curves",
        "Training curves of a representative subset of runs.",
        "Validation accuracy and fraction of nonlinear channels per epoch for the dense run, sparse runs at "
        "the smallest, middle and largest λ, and one post-hoc run.",
        lambda df, study, th: training_curves(df, study.runs),
        lambda df, th: "Validation accuracy and fraction of nonlinear channels per epoch for the dense "
        "run, sparse runs at the smallest, middle and largest λ, and the post-hoc run at the middle λ "
        "(first seed), against epochs since initialization: post-hoc and late runs continue the dense run's.",
    ),
)


# ---------------------------------------------------------------- the stage


def method_settings(df: pd.DataFrame, runs: Path) -> dict:
    """The method choices the runs used, read from their config.yaml (values seen, sorted)."""
    seen: dict[str, set] = {"proximal": set(), "prox_form": set(), "slope_init": set(), "slope_lr_scale": set(),
                            "eps": set(), "epochs": set()}
    for run in df.run:
        path = run_dir(runs, run) / "config.yaml"
        if not path.is_file():
            continue
        config = yaml.safe_load(path.read_text()) or {}
        model = config.get("model") or {}
        if model.get("activation", "prelu") == "prelu":
            seen["slope_init"].add(model.get("slope_init"))
            seen["slope_lr_scale"].add((config.get("optimizer") or {}).get("slope_lr_scale", 1))
            if config.get("lam"):  # a λ = 0 run uses no prox (the plan writes no form for it)
                seen["prox_form"].add(config.get("prox_form", "step"))
        for key in ("proximal", "eps", "epochs"):
            seen[key].add(config.get(key))
    return {k: sorted((v for v in values if v is not None), key=str) for k, values in seen.items()}


def make_figures(summary: Path, runs: Path, depth: Path, out: Path, th: analysis.Thresholds,
                 formats: tuple[str, ...] = ("png",)) -> list[Path]:
    df = analysis.load_summary(summary)
    if not runs.is_dir():
        raise UserError(f"runs directory not found: {runs}")
    study = Study(runs, read_json(depth, "measure the study first (python -m nonlinear_advantage measure)"))
    files = {}
    with matplotlib.rc_context(STYLE):
        for spec in FIGURES:
            files |= _render(spec.draw(df, study, th), spec.stem, list(formats))
    written = [out / name for name in files]
    # The whole directory at once: a failure (a full disk) leaves the previous set, never part of one.
    write_dir(out, files | {METHOD_FILE: json_text(method_settings(df, runs))})
    return written


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("figures", help="draw the report's figures from summary.csv and the runs")
    p.add_argument("--summary", type=Path, required=True, help="results/summary.csv")
    p.add_argument("--runs", type=Path, required=True, help="the runs/ directory")
    p.add_argument("--depth", type=Path, required=True, help="the study's depth file: results/depth.json")
    p.add_argument("--out", type=Path, required=True, help="directory for the figures")
    p.add_argument("--formats", default="png", help="comma-separated: png, pdf, svg (default %(default)s)")
    p.add_argument("--params", type=Path, help="params.yaml: its analysis section sets the thresholds "
                   "(default: the schema's defaults)")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    bad = [f for f in formats if f not in ("png", "pdf", "svg")]
    if bad:
        raise UserError(f"--formats: unknown format(s) {', '.join(bad)}")
    thresholds = analysis.Thresholds.from_file(args.params)
    paths = make_figures(args.summary, args.runs, args.depth, args.out, thresholds, formats)
    print(f"wrote {len(paths)} figures to {args.out}")
    return 0
