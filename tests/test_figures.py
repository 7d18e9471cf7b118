"""figures on the synthetic study: every format, the page's width, an accuracy axis no outlier squashes."""

from __future__ import annotations

import json

import pytest
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import cm, inch

from nonlinear_advantage import analysis, figures, plan
from synthetic_study import write_study


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    summary = write_study(root, seeds=(0, 1))
    depths = json.loads((root / "results" / "depth.json").read_text())
    return dict(root=root, summary=summary, df=analysis.load_summary(summary),
                study=figures.Study(root / "runs", depths))


def test_every_format_is_written_with_fixed_metadata(study, tmp_path):
    """--formats svg once crashed: the PNG writer's Software key is no SVG key."""
    th = analysis.Thresholds.from_params()
    root = study["root"]
    args = (study["summary"], root / "runs", root / "results" / "depth.json")
    written = figures.make_figures(*args, tmp_path / "a", th, formats=("svg", "pdf"))
    assert sorted(p.suffix for p in written) == sorted([".svg", ".pdf"] * len(figures.FIGURES))
    again = figures.make_figures(*args, tmp_path / "b", th, formats=("svg",))
    for path in again:
        assert path.read_bytes() == (tmp_path / "a" / path.name).read_bytes()  # no date, fixed ids


def test_figures_are_drawn_at_the_report_frames_width(study):
    frame = (A4[0] - 4 * cm) / inch  # report.build_story's width
    assert figures.PAGE_WIDTH_IN == pytest.approx(frame)
    for spec in figures.FIGURES:
        fig = spec.draw(study["df"], study["study"], analysis.Thresholds.from_params())
        assert fig.get_figwidth() == pytest.approx(frame), spec.stem


def test_accuracy_vs_apl_shows_every_prior_arm_and_clips_an_outlier(study):
    df = study["df"].copy()
    th = analysis.Thresholds.from_params()
    fig = figures.accuracy_vs_apl(df, th)
    labels = {t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()}
    prior = {analysis.curve_label(a, s) for a, spec in plan.ARMS.items() if spec.prior
             for s in analysis.starts(df[df.dataset == "digits"], a)}
    assert prior and prior <= labels
    # one collapsed λ (every seed near zero) must not squash the rest into a line
    worst = df[(df.dataset == "digits") & (df.arm == plan.SPARSE)].lam.max()
    df.loc[(df.dataset == "digits") & (df.arm == plan.SPARSE) & (df.lam == worst), "test_acc"] = 0.02
    digits = df[df.dataset == "digits"]
    floor = figures.accuracy_floor(digits)
    assert floor is not None and floor > 0.5
    ax = figures.accuracy_vs_apl(df, th).axes[0]
    assert ax.get_title().startswith("digits") and ax.get_ylim()[0] == pytest.approx(floor)
    below = int((figures._plotted_accuracies(digits) < floor).sum())  # the collapsed λ and the shallowest baselines
    assert below >= 1
    notes = [t for t in ax.texts if t.get_text().startswith(figures.CLIP_SYMBOL)]
    assert [t.get_text() for t in notes] == [
        f"{figures.CLIP_SYMBOL} {below} point{'s' * (below != 1)}\nbelow {100 * floor:.1f}%"]
    edge = [c for c in ax.collections if len(c.get_offsets()) and (c.get_offsets()[:, 1] == floor).all()]
    assert sum(len(c.get_offsets()) for c in edge) == below  # each drawn at the edge
    caption = next(spec for spec in figures.FIGURES if spec.stem == "accuracy_vs_apl").caption(df, th)
    assert f"digits: {below} point{'s' * (below != 1)} below {100 * floor:.1f}%" in caption
    # a post-hoc net collapsed at APL 0 puts a ▼ at the left edge of a narrower panel
    last = df[(df.dataset == "digits") & (df.arm == plan.POSTHOC)].lam.max()
    df.loc[(df.dataset == "digits") & (df.arm == plan.POSTHOC) & (df.lam == last), "test_acc"] = 0.02
    # each note inside its panel, over no ▼
    for fig in (figures.accuracy_vs_apl(df, th), figures.nonlinear_advantage(df)):
        fig.canvas.draw()
        clip_notes = [(a, t) for a in fig.axes for t in a.texts if t.get_text().startswith(figures.CLIP_SYMBOL)]
        assert clip_notes
        for a, t in clip_notes:
            box = t.get_window_extent()
            assert box.x0 >= a.get_window_extent().x0, t.get_text()
            marks = [c.get_transform().transform(c.get_offsets()) for c in a.collections
                     if len(c.get_offsets()) and (c.get_offsets()[:, 1] == a.get_ylim()[0]).all()]
            assert marks and not any(box.x0 <= x <= box.x1 for m in marks for x, _ in m), t.get_text()


def test_core_networks_show_the_slope_quantiles(study):
    fig = figures.core_networks(study["df"], study["study"].depths)
    slopes = [ax for ax in fig.axes if ax.get_title() == "slopes per λ"]
    assert len(slopes) == study["df"].dataset.nunique()
    assert all(ax.collections and ax.lines for ax in slopes)  # the 10–90% bars, the medians and thresholds


def _overlapping_tick_labels(fig, ax) -> list[tuple[str, str]]:
    renderer = fig.canvas.get_renderer()
    labels = [t for t in ax.get_xticklabels() if t.get_text() and t.get_visible()]
    lo, hi = ax.get_xlim()
    labels = [t for t in labels if lo <= t.get_position()[0] <= hi]
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in labels]
    return [(a, b) for (a, box_a), (b, box_b) in zip(boxes, boxes[1:], strict=False)
            if box_a.overlaps(box_b)]


@pytest.mark.parametrize("decades", [1.5, 4.0])
def test_lambda_tick_labels_do_not_collide_over_a_wide_grid(study, decades):
    """A grid from almost nothing linearized spans four decades of λ: 1-2-5 labels ran into each other."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    df = study["df"].copy()
    prior = df.lam > 0
    lams = sorted(df.loc[prior, "lam"].unique())
    spread = {lam: 10 ** (decades * i / (len(lams) - 1)) * 1e-3 for i, lam in enumerate(lams)}
    df.loc[prior, "lam"] = df.loc[prior, "lam"].map(spread)
    fig = figures.core_plateau(df, analysis.Thresholds.from_params())
    FigureCanvasAgg(fig)
    fig.canvas.draw()
    for ax in fig.axes:
        assert len([t for t in ax.get_xticklabels() if t.get_text()]) >= 2
        assert not _overlapping_tick_labels(fig, ax), ax.get_title()
