"""The report's text read back from the PDF (poppler's pdftotext), for the tests that check it.

Imported as a plain module: pytest puts tests/ on sys.path (rootdir import mode).
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from nonlinear_advantage import report

needs_poppler = pytest.mark.skipif(shutil.which("pdftotext") is None or shutil.which("pdftoppm") is None,
                                   reason="poppler-utils (pdftotext, pdftoppm) is not installed")


def pdftotext(pdf, *options: str) -> str:
    return subprocess.run(["pdftotext", *options, str(pdf), "-"], capture_output=True, text=True, check=True).stdout


def table_rows(pdf) -> list[dict]:
    """The rows of the report's Tables section, read back from the PDF's words and their places:
    one dict per row, its dataset and the text of each column (report.TABLE_COLUMNS), a word
    going to the column whose header starts at or left of it."""
    lines: dict[tuple, list] = {}
    for word in csv.DictReader(io.StringIO(pdftotext(pdf, "-tsv")), delimiter="\t", quoting=csv.QUOTE_NONE):
        if word["level"] == "5":
            lines.setdefault((int(word["page_num"]), float(word["top"])), []).append(word)
    section, dataset, starts, rows = False, None, None, []
    for _, words in sorted(lines.items()):
        texts = [w["text"] for w in sorted(words, key=lambda w: float(w["left"]))]
        lefts = sorted(float(w["left"]) for w in words)
        if re.fullmatch(rf"\d+\. {report.SECTIONS[-1]}", " ".join(texts)):
            section = True
        elif section and len(texts) == 1 and float(words[0]["height"]) > 10:
            dataset = texts[0]  # a dataset's heading
        elif section and " ".join(texts) == " ".join(report.TABLE_COLUMNS):
            counts = np.cumsum([0, *(len(c.split()) for c in report.TABLE_COLUMNS)])[:-1]
            starts = [lefts[i] for i in counts]
        elif section and starts:
            cells = {c: [] for c in report.TABLE_COLUMNS}
            for left, text in zip(lefts, texts, strict=True):
                cells[report.TABLE_COLUMNS[int(np.searchsorted(starts, left + 0.5)) - 1]].append(text)
            if cells["seeds"] and cells["seeds"][0].isdigit():
                rows.append({"dataset": dataset, **{c: " ".join(t) for c, t in cells.items()}})
    return rows


def assert_every_run_in_tables(summary: pd.DataFrame, pdf, labels: dict[str, str]) -> list[dict]:
    """Each summary row counted once in the report's tables, on the row of its configuration
    under its arm's label (``labels``: arm name -> label); the rows read back."""
    rows = table_rows(pdf)
    assert sum(int(r["seeds"]) for r in rows) == len(summary)
    shown = {(r["dataset"], r["arm"], r["arch"], r["depth"], r["width"], r["λ"]) for r in rows}
    for run in summary.itertuples():
        label = labels[run.arm] + (f", prior from epoch {run.prior_start_epoch}" if run.prior_start_epoch else "")
        label += " (wide)" if run.widened else ""
        assert (run.dataset, label, run.arch, f"{run.depth}", f"{run.width}", f"{run.lam:g}") in shown, run.run
    return rows
