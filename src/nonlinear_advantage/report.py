"""``report``: the PDF report, built with reportlab from summary.csv and the figures.

Byte-reproducible: reportlab's invariant mode plus ``SOURCE_DATE_EPOCH`` (the commit time of
HEAD unless already set) fix every timestamp and the document ID, so building twice from the
same inputs gives the same bytes. Text uses DejaVu Sans, which matplotlib ships, so λ and
other symbols render without any system font.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import subprocess
import time
from pathlib import Path
from xml.sax.saxutils import escape

import matplotlib
import numpy as np
import pandas as pd
import yaml
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import cm
from reportlab.lib.utils import ImageReader
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.platypus import (
    Image,
    KeepTogether,
    PageBreak,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from . import analysis, compute, figures, plan
from .errors import UserError
from .fileio import file_sha256, write_bytes

PROJECT = "nonlinear-advantage"
STUDY = ("Mehmeti-Göpel and Disselhoff, “Nonlinear Advantage: Trained Networks Might Not Be As Complex "
         "as You Think” (ICML 2023; arXiv 2211.17180, v1 “Average Path Length: Sparsification of "
         "Nonlinearities Creates Surprisingly Shallow Networks”)")
PENALTY = (
    "minimize loss + λ · mean<sub>c</sub> |1 − a<sub>c</sub>| over all C PReLU channels (no weight decay on "
    "slopes; they step at slope_lr_scale times the learning rate lr), by SGD with momentum μ and, after each "
    "step, the proximal step on a<sub>c</sub> − 1 with threshold lr·λ/(C·(1 − μ)) (lr: the slopes'): its "
    "fixed point is the stationarity condition of that objective, so a channel stays "
    "exactly linear iff |∂L/∂a<sub>c</sub>| ≤ λ/C. A slope moves at most λ·Σlr/(C·(1 − μ)) over a run "
    "(max_prior_shift in each run's metrics): its prior shift. Each arm's grid is given as prior shifts, and "
    "each run's λ is computed from its own steps and learning rates, so that one shift is the same pull in "
    "every arm (a fixed λ pulls far less in a short post-hoc run than from scratch). Faster slopes reach "
    "further at the same λ, so the prior meets the data's pull on a channel before its reach runs out. "
    "Prox form step soft-thresholds the slope after every step: a minibatch whose gradient beats λ/C pulls a "
    "channel off 1 and the next puts it back, so the count of exactly linear channels flickers. Prox form "
    "lazy (dual averaging) soft-thresholds the slope's steps summed since the prior came on by the thresholds' "
    "sum: the same step while a channel is nonlinear, but a linear channel leaves 1 only when its gradients' "
    "lr-weighted mean since the prior came on beats λ/C, and the count settles."
)
BUDGET = (
    "Dense, sparse and late-start runs train the same budget of B epochs since initialization "
    "(budget_epochs in summary.csv); a late-start run is the dense run up to epoch s·B, where its prior "
    "switches on. A post-hoc run continues the fully trained dense run (its optimiser state included) for "
    "P more epochs at a small learning rate with the prior on: budget B + P. Its λ = 0 twin, the post-hoc "
    "control, does the same without the prior, so the nonlinear advantage is measured net of what the "
    "extra epochs alone do (post-hoc − control, against from scratch − dense)."
)
VERDICT_COLORS = {"supported": "#1a7f37", "contradicted": "#b3261e", "inconclusive": "#b35900"}
APL_DEFINITION = (
    "Average path length: the expected number of nonlinear channels on an input-to-output path. "
    "Normalized APL (used throughout) is a random walk that splits evenly at every fork and picks a "
    "channel uniformly within a layer: APL = Σ<sub>l</sub> P(l)·n<sub>l</sub>/w<sub>l</sub>. "
    "Unnormalized APL weights every channel-level path equally. A channel is nonlinear when "
    "|1 − a<sub>c</sub>| &gt; eps."
)
SECTIONS = ("Findings", *dict.fromkeys(spec.section for spec in figures.FIGURES), "Tables")
FONT, BOLD = "DejaVuSans", "DejaVuSans-Bold"
TABLE_COLUMNS = ("arm", "arch", "depth", "width", "λ", "seeds", "test acc % ± sd", "APL", "APL (unnorm.)",
                 "nonlinear / total", "params", "× full")  # the Tables section's, one row per configuration


# ---------------------------------------------------------------- provenance


def _git(*args: str, cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def source_date_epoch(fallback: Path) -> int:
    """SOURCE_DATE_EPOCH if set, else the commit time of HEAD, else ``fallback``'s mtime."""
    if os.environ.get("SOURCE_DATE_EPOCH", "").strip():
        return int(os.environ["SOURCE_DATE_EPOCH"])
    committed = _git("log", "-1", "--format=%ct")
    return int(committed) if committed else int(fallback.stat().st_mtime)


def git_revision() -> str:
    head = _git("rev-parse", "--short=12", "HEAD")
    if head is None:
        return "not a git checkout"
    return head + (" (with uncommitted changes)" if _git("status", "--porcelain", "--untracked-files=no")
                   else "")


@contextlib.contextmanager
def _env(name: str, value: str):
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            del os.environ[name]
        else:
            os.environ[name] = old


def _find_key(tree, key: str) -> list:
    """Every value stored under ``key`` anywhere in a nested params mapping."""
    found = []
    if isinstance(tree, dict):
        for k, v in tree.items():
            found += [v] if k == key and not isinstance(v, dict | list) else _find_key(v, key)
    elif isinstance(tree, list):
        for v in tree:
            found += _find_key(v, key)
    return found


# ---------------------------------------------------------------- styles and helpers


def _styles() -> dict[str, ParagraphStyle]:
    font_dir = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    for name, file in ((FONT, "DejaVuSans.ttf"), (BOLD, "DejaVuSans-Bold.ttf")):
        if name not in pdfmetrics.getRegisteredFontNames():
            pdfmetrics.registerFont(TTFont(name, str(font_dir / file)))
    pdfmetrics.registerFontFamily(FONT, normal=FONT, bold=BOLD, italic=FONT, boldItalic=BOLD)
    base = getSampleStyleSheet()
    s = {name: ParagraphStyle(name, parent=base[name], fontName=FONT)
         for name in ("Normal", "BodyText", "Italic")}
    for name in ("Title", "Heading1", "Heading2", "Heading3"):
        s[name] = ParagraphStyle(name, parent=base[name], fontName=BOLD)
    s["Small"] = ParagraphStyle("Small", parent=s["BodyText"], fontSize=8, leading=10)
    s["Caption"] = ParagraphStyle("Caption", parent=s["Small"], textColor=colors.HexColor("#333333"))
    s["Bullet"] = ParagraphStyle("Bullet", parent=s["Small"], leftIndent=12, bulletIndent=2)
    s["SubBullet"] = ParagraphStyle("SubBullet", parent=s["Small"], leftIndent=24)
    return s


def _table(rows: list[list], widths=None, header: bool = True, font_size: float = 7, padding: float = 6) -> Table:
    table = Table(rows, colWidths=widths, repeatRows=1 if header else 0, hAlign="LEFT")
    style = [
        ("FONT", (0, 0), (-1, -1), FONT, font_size),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("LINEBELOW", (0, -1), (-1, -1), 0.5, colors.grey),
        ("TOPPADDING", (0, 0), (-1, -1), 1.5), ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
        ("LEFTPADDING", (0, 0), (-1, -1), padding), ("RIGHTPADDING", (0, 0), (-1, -1), padding),
    ]
    if header:
        style += [("FONT", (0, 0), (-1, 0), BOLD, font_size),
                  ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8e8e8")),
                  ("LINEBELOW", (0, 0), (-1, 0), 0.5, colors.grey)]
    table.setStyle(TableStyle(style))
    return table


def _figure(path: Path, max_width: float, max_height: float = 16 * cm) -> Image:
    w, h = ImageReader(str(path)).getSize()
    scale = min(max_width / w, max_height / h)
    return Image(str(path), width=w * scale, height=h * scale)


def _pct(x) -> str:
    return "–" if pd.isna(x) else f"{100 * x:.2f}"


# ---------------------------------------------------------------- content


def dataset_table(sub: pd.DataFrame) -> pd.DataFrame:
    """Key numbers of one dataset: one row per configuration, mean (and sd) over seeds, every arm
    of the summary in the arm table's order (one it does not know last)."""
    keys = ["arm", "arch", "depth", "width", "widened", "lam", "prior_start_epoch"]
    g = sub.groupby(keys, sort=False, dropna=False)
    out = g.agg(seeds=("seed", "size"), acc=("test_acc", "mean"), sd=("test_acc", "std"),
                apl=("apl_normalized", "mean"), apl_u=("apl_unnormalized", "mean"),
                nonlinear=("nonlinear_channels", "mean"), total=("total_channels", "mean"),
                params=("params", "mean")).reset_index()
    dense = sub[sub.arm == plan.DENSE].params
    out["ratio"] = out.params / (dense.mean() if len(dense) else np.nan)
    out["_order"] = out.arm.map(analysis.arm_order)
    order = ["_order", "arm", "prior_start_epoch", "lam", "depth", "width", "widened"]
    return out.sort_values(order).drop(columns="_order")


def _table_rows(t: pd.DataFrame) -> list[list[str]]:
    rows = [list(TABLE_COLUMNS)]
    for r in t.itertuples():
        arm = analysis.curve_label(r.arm, r.prior_start_epoch) + (" (wide)" if r.widened else "")
        sd = "" if np.isnan(r.sd) else f" ± {100 * r.sd:.2f}"
        rows.append([arm, r.arch, f"{r.depth}", f"{r.width}", f"{r.lam:g}", f"{r.seeds}", f"{100 * r.acc:.2f}{sd}",
                     f"{r.apl:.2f}", f"{r.apl_u:.2f}", f"{r.nonlinear:.0f} / {r.total:.0f}",
                     f"{r.params:,.0f}", f"{r.ratio:.2f}"])
    return rows


def _architectures(df: pd.DataFrame) -> str:
    parts = []
    for arm in sorted(df.arm.unique(), key=lambda arm: (analysis.arm_order(arm), arm)):
        rows = df[df.arm == arm]
        kinds = sorted({f"{r.arch}-{r.depth} width {r.width} ({r.activation})" for r in rows.itertuples()})
        parts.append(f"<b>{escape(analysis.curve_label(arm))}</b>: {escape(', '.join(kinds))}")
    return "<br/>".join(parts)


def _method(df: pd.DataFrame, figures_dir: Path, params: dict | None) -> dict[str, str]:
    settings = {}
    method_file = figures_dir / figures.METHOD_FILE
    if method_file.is_file():
        settings = json.loads(method_file.read_text())

    def seen(key):
        values = settings.get(key) or (sorted(set(map(str, _find_key(params, key)))) if params else [])
        return ", ".join(str(v) for v in values) if values else "not recorded"

    eps = ", ".join(f"{e:g}" for e in sorted(df.eps.dropna().unique()))
    return {"penalty": PENALTY, "eps": eps or "not recorded", "proximal": seen("proximal"),
            "prox form": seen("prox_form"),
            "slope init": seen("slope_init"), "slope lr scale": seen("slope_lr_scale"), "epochs": seen("epochs"),
            "APL": APL_DEFINITION}


def _title_page(df, s, *, revision, date, params_digest, summary_digest, method, th) -> list:
    datasets = []
    for d in analysis.datasets_by_difficulty(df):
        sub = df[df.dataset == d]
        err = analysis.dense_error(sub)
        datasets.append(f"{d} ({len(sub)} runs; dense test error "
                        f"{'n/a' if err is None else f'{100 * err:.2f}%'})")
    thresholds = (f"collapse tolerance {100 * th.tolerance:g} pt (at least 2 test-set SE); collapse "
                  f"≥ {th.collapse_ratio:g}× steeper below the onset; plateau spread ≤ {th.plateau:.0%} over "
                  f"≥ {th.plateau_min_points} λ with ≤ {th.core_max_fraction:.0%} of channels nonlinear; "
                  f"shallow onset ≤ {th.shallow_fraction:.0%} of dense APL; advantage margin "
                  f"{100 * th.gap_margin:g} pt; vanishing gap ≤ {100 * th.vanish:g} pt; late-start margin "
                  f"{100 * th.late_margin:g} pt; runs settled when ≤ {th.settle:.0%} of channels change over the last "
                  f"epoch; intervals {th.confidence:.0%} (Student's t over seeds, with the test set's binomial "
                  "SE in quadrature)")
    info = [
        ("Project", PROJECT), ("Study reproduced", escape(STUDY)), ("Git revision", revision),
        ("Date", date), ("Params digest", params_digest), ("Summary digest", summary_digest),
        ("Datasets", escape("; ".join(datasets))), ("Architectures", _architectures(df)),
        ("Objective", method["penalty"]), ("Budget", BUDGET), ("eps", method["eps"]),
        ("Proximal step", method["proximal"]), ("Prox form", method["prox form"]),
        ("Slope init", method["slope init"]), ("Slope lr scale", method["slope lr scale"]),
        ("Epochs", method["epochs"]), ("APL", method["APL"]),
        ("Thresholds", escape(thresholds)),
        ("Matched APL", "post-hoc and from-scratch curves (mean over seeds per λ) linearly interpolated "
                        "in APL at every APL of either arm inside their common range; no extrapolation."),
    ]
    rows = [[Paragraph(f"<b>{k}</b>", s["Small"]), Paragraph(v, s["Small"])] for k, v in info]
    return [
        Paragraph(f"{PROJECT}: reproduction report", s["Title"]),
        Paragraph("Sparsified nonlinearities, average path length and the nonlinear advantage", s["Italic"]),
        Spacer(1, 0.6 * cm),
        _table(rows, widths=[3.2 * cm, 13.8 * cm], header=False, font_size=8),
        PageBreak(),
    ]


def _findings_page(df, s, th) -> list:
    story = [Paragraph("1. Findings", s["Heading1"]),
             Paragraph("Each verdict is computed from results/summary.csv against the thresholds on the "
                       "title page: supported when the whole interval (mean over seeds, "
                       f"{th.confidence:.0%}: Student's t over seeds combined with the test set's binomial "
                       "standard error) lies on the claimed side, contradicted when it lies on the other, "
                       "inconclusive otherwise, and inconclusive wherever a check it relies on failed (the "
                       "Checks page). The numbers that decide it follow.", s["Small"])]
    for f in analysis.findings(df, th):
        color = VERDICT_COLORS[f.verdict]
        block = [
            Paragraph(f"Observation {f.number}: {escape(f.title)} — "
                      f"<font color='{color}'>{escape(f.verdict)}</font>", s["Heading3"]),
            Paragraph(f"<i>Study:</i> {escape(f.claim)}", s["Small"]),
            Paragraph(f"<i>Criterion:</i> {escape(f.criterion)}", s["Small"]),
        ]
        block += [Paragraph(escape(e.strip()), s["SubBullet"]) if e.startswith("  ")
                  else Paragraph(escape(e), s["Bullet"], bulletText="–") for e in f.evidence]
        block.append(Paragraph(f"<i>Checks relied on:</i> {escape(_relied_on(f))}", s["Small"]))
        story += [KeepTogether(block), Spacer(1, 0.2 * cm)]
    return story + _grid_span(df, s, th) + [PageBreak()] + _checks_page(df, s, th)


def _relied_on(f: analysis.Finding) -> str:
    """The checks a finding rests on, by name, each failed one named in full."""
    names = ", ".join(dict.fromkeys(c.name for c in f.checks)) or "none"
    failed = [f"{c.name} ({c.dataset}, {c.subject})" for c in f.failed]
    return f"{names}; " + (f"FAILED: {'; '.join(failed)}" if failed else "all passed")


def _checks_page(df, s, th) -> list:
    """Every check behind the verdicts, failed ones first, and the controls against dense."""
    gates = sorted(analysis.checks(df, th), key=lambda c: c.passed)
    failed = sum(not c.passed for c in gates)

    def value(c) -> str:
        """A check's number as its threshold states it: accuracies in pt, channel changes in %."""
        if not isinstance(c.value, float):
            return str(c.value)
        v = 0.0 if abs(c.value) < 5e-7 else c.value  # no "-0.00" for a difference of rounding noise
        if c.name in (analysis.CONTROL, analysis.DENSE_VS_BASELINE):
            return f"{100 * v:+.2f} pt"
        return f"{v:.1%}" if c.name == analysis.SETTLED else f"{v:.4g}"

    rows = [["check", "dataset", "subject", "value", "threshold", "result"]]
    rows += [[c.name, c.dataset, Paragraph(escape(c.subject), s["Small"]), Paragraph(escape(value(c)), s["Small"]),
              Paragraph(escape(c.threshold), s["Small"]), "pass" if c.passed else "FAIL"] for c in gates]
    table = _table(rows, widths=[2.6 * cm, 2.3 * cm, 4 * cm, 2.6 * cm, 4.2 * cm, 1.2 * cm])
    table.setStyle(TableStyle([("TEXTCOLOR", (5, i), (5, i), colors.HexColor(VERDICT_COLORS["contradicted"]))
                               for i, c in enumerate(gates, start=1) if not c.passed]))
    story = [Paragraph("Checks", s["Heading1"]),
             Paragraph(f"The protocol behind each verdict (analysis.checks): {failed} of {len(gates)} checks "
                       "failed, listed first; a verdict resting on a failed one is inconclusive and names it.",
                       s["Small"]), table]
    story += [Paragraph("Failed: " + escape(c.text), s["Bullet"], bulletText="–") for c in gates if not c.passed]
    ctl = analysis.controls(df, th)
    rows = [["arm", "control", "dataset", "control %", "dense %", "control − dense (pt)", "tolerance", "result"]]
    rows += [[analysis.curve_label(r.arm), Paragraph(escape(analysis.curve_label(r.control)), s["Small"]), r.dataset,
              _pct(r.control_acc),
              _pct(r.dense_acc), Paragraph(escape(r.diff.pt() if r.diff else "no value"), s["Small"]),
              f"±{100 * r.tolerance:.2f} pt", "pass" if r.passed else "FAIL"] for r in ctl.itertuples()]
    story += [Paragraph("Controls", s["Heading3"]),
              Paragraph("Each arm that starts from another run or switches the prior on late, against its "
                        "λ = 0 twin: the twin must match the dense run within the collapse tolerance. The "
                        "late-start arm's twin is the dense run itself.", s["Small"]),
              _table(rows, widths=[1.9 * cm, 3 * cm, 2.2 * cm, 1.6 * cm, 1.5 * cm, 3.8 * cm, 1.7 * cm, 1.2 * cm]),
              PageBreak()]
    return story


def _grid_span(df, s, th) -> list:
    """Does each arm's grid of shifts span the APL range? Where it falls short, the report says so."""
    span = analysis.grid_span(df, th)
    rows = [["dataset", "arm", "largest APL", "smallest APL", "in transition", "grid"]]
    rows += [[r.dataset, analysis.curve_label(r.arm, r.start), f"{r.high:.0%}", f"{r.low:.0%}",
              f"{r.transition}", r.note] for r in span.itertuples()]
    short = int((~span.ok).sum()) if len(span) else 0
    return [Paragraph("Grids of prior shifts", s["Heading3"]),
            Paragraph(f"Each arm's grid should reach from at least {th.span_high:.0%} of the dense APL down to at "
                      f"most {th.span_low:.0%}, with at least {th.span_points} points in between. "
                      f"{short} of {len(span)} fall short.", s["Small"]),
            _table(rows)]


def _compute_appendix(df: pd.DataFrame, s, benchmarks: Path | None, params: dict | None) -> list:
    """Compute per arm from the training jobs' Snakemake benchmark files (compute.per_arm)."""
    sizes = {d: v["train_size"] for d, v in ((params or {}).get("datasets") or {}).items()}
    arms = compute.per_arm(df.to_dict("records"), benchmarks, sizes) if benchmarks else []
    story = [Paragraph("Appendix: compute", s["Heading1"])]
    if not arms:
        where = f"in {escape(str(benchmarks))}/train" if benchmarks else "given (report --benchmarks)"
        return story + [Paragraph(f"No benchmark files {where}: Snakemake's train rule writes them, DVC does not.",
                                  s["Small"])]

    def hms(seconds: float) -> str:
        t = round(seconds)
        return f"{t // 3600}:{t % 3600 // 60:02d}:{t % 60:02d}"

    rows = [["arm", "jobs", "wall-clock", "per job", "CPU time", "max memory (MB)", "s per image-epoch"]]
    rows += [[plan.ARMS[a["arm"]].label if a["arm"] in plan.ARMS else a["arm"], f"{a['jobs']}", hms(a["seconds"]),
              hms(a["seconds"] / a["jobs"]), hms(a["cpu_seconds"]), f"{a['max_rss_mb']:,.0f}",
              "–" if a["seconds_per_image"] is None else f"{a['seconds_per_image']:.2e}"] for a in arms]
    measured = compute.read_benchmark(benchmarks / "measure.tsv")
    note = f" Measuring every run's depth took {measured['s']:.0f} s." if measured else ""
    return story + [Paragraph("The training jobs' Snakemake benchmarks (logs/benchmarks/train/RUN.tsv), summed per "
                              "arm; a run that shares another's network is counted once. Seconds per image-epoch "
                              "(wall-clock over epochs × training images) is what the Slurm profile's "
                              f"calibration (config: compute) asks for.{note}", s["Small"]), _table(rows)]


def build_story(df: pd.DataFrame, figures_dir: Path, th: analysis.Thresholds, appendix=(), **title) -> list:
    s = _styles()
    width = A4[0] - 4 * cm
    story = _title_page(df, s, th=th, **title) + _findings_page(df, s, th)
    sections: dict[str, list[figures.FigureSpec]] = {}
    for spec in figures.FIGURES:
        sections.setdefault(spec.section, []).append(spec)
    for number, (section, specs) in enumerate(sections.items(), start=2):
        story.append(Paragraph(f"{number}. {section}", s["Heading1"]))
        for spec in specs:
            story += [_figure(figures_dir / f"{spec.stem}.png", width, 11 * cm), Spacer(1, 0.15 * cm),
                      Paragraph(f"<b>Figure: {escape(spec.title)}</b> {escape(spec.caption(df, th))}",
                                s["Caption"]), Spacer(1, 0.4 * cm)]
        story.append(PageBreak())
    story.append(Paragraph(f"{len(sections) + 2}. Tables", s["Heading1"]))
    story.append(Paragraph("Test accuracy in percent (mean and standard deviation over seeds), APLs and "
                           "nonlinear channels from results/summary.csv.", s["Small"]))
    for d in analysis.datasets_by_difficulty(df):
        # 12 columns and the arm table's labels: they fit A4's frame with narrow padding
        table = _table(_table_rows(dataset_table(df[df.dataset == d])), font_size=6, padding=3)
        story += [Paragraph(escape(d), s["Heading2"]), table]
    return story + list(appendix)


def _footer(canvas, doc) -> None:
    canvas.saveState()
    canvas.setFont(FONT, 7)
    canvas.setFillColor(colors.grey)
    canvas.drawRightString(A4[0] - 2 * cm, 1.2 * cm, f"{PROJECT} report · page {doc.page}")
    canvas.restoreState()


def build_report(summary: Path, figures_dir: Path, out: Path, params: Path | None = None,
                 th: analysis.Thresholds | None = None, benchmarks: Path | None = None) -> Path:
    th = th or analysis.Thresholds.from_file(params)
    df = analysis.load_summary(summary)
    missing = [figures_dir / f"{spec.stem}.png" for spec in figures.FIGURES
               if not (figures_dir / f"{spec.stem}.png").is_file()]
    if missing:
        raise UserError(f"figure not found: {missing[0]} (run the figures stage first)")
    params_tree, params_digest = None, "no params file given"
    if params is not None:
        if not params.is_file():
            raise UserError(f"params file not found: {params}")
        params_digest = f"sha256 {file_sha256(params)} ({params.name})"
        params_tree = yaml.safe_load(params.read_text())
    epoch = source_date_epoch(summary)
    title = dict(
        revision=git_revision(),
        date=dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M UTC") + " (SOURCE_DATE_EPOCH)",
        params_digest=params_digest, summary_digest=f"sha256 {file_sha256(summary)}",
        method=_method(df, figures_dir, params_tree),
    )
    buffer = io.BytesIO()
    with _env("SOURCE_DATE_EPOCH", str(epoch)):
        doc = SimpleDocTemplate(buffer, pagesize=A4, invariant=1, title=f"{PROJECT} report",
                                author=PROJECT, subject="Reproduction of arXiv 2211.17180", creator=PROJECT,
                                leftMargin=2 * cm, rightMargin=2 * cm, topMargin=1.8 * cm, bottomMargin=1.8 * cm)
        appendix = [PageBreak(), *_compute_appendix(df, _styles(), benchmarks, params_tree)]
        doc.build(build_story(df, figures_dir, th, appendix, **title), onFirstPage=_footer, onLaterPages=_footer)
    write_bytes(out, buffer.getvalue())
    return out


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("report", help="build the PDF report from summary.csv and the figures")
    p.add_argument("--summary", type=Path, required=True, help="results/summary.csv")
    p.add_argument("--figures", type=Path, required=True, help="the figures stage's output directory")
    p.add_argument("--out", type=Path, required=True, help="the PDF to write")
    p.add_argument("--params", type=Path, help="params.yaml: its analysis section sets the thresholds, and its "
                   "sha256 goes on the title page")
    p.add_argument("--benchmarks", type=Path, help="the training jobs' Snakemake benchmark files (logs/benchmarks): "
                   "the appendix gives compute per arm from them")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    build_report(args.summary, args.figures, args.out, args.params, benchmarks=args.benchmarks)
    print(f"wrote {args.out} in {time.perf_counter() - start:.1f} s")
    return 0
