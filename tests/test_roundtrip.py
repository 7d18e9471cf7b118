"""The DVC round trip a team makes, as a new user would (docs/running.md, "Sharing a study through DVC").

`dvc repro` of the tiny study, `dvc push` to a remote, commit; then `git clone`, `dvc pull`.
The clone must be up to date for both tools: `dvc status` at once, Snakemake after the one
command docs/running.md names (it records every job's provenance, without running any). About
85 s on 2 cores, most of it `dvc repro`.
"""

import os
import re
import shutil
import time

import pytest

from repo_copy import ROOT, copy_repo, sh
from test_pipeline import STUDY_JOBS, git_dvc_init, planned_jobs

# The one step after `dvc pull`, exactly as docs/running.md gives it.
AFTER_PULL = ("snakemake", "--touch", "--forceall")
UP_TO_DATE = "Data and pipelines are up to date"


def commit(repo, message):
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", message)


def assert_nothing_to_do(repo):
    assert UP_TO_DATE in sh(repo, "dvc", "status").stdout
    assert planned_jobs(repo) == {}, sh(repo, "snakemake", "-n").stdout[-3000:]


@pytest.mark.slow
def test_push_clone_pull_leaves_nothing_to_run(tmp_path):
    assert " ".join(AFTER_PULL) in (ROOT / "docs" / "running.md").read_text()
    origin = copy_repo(tmp_path / "origin")
    git_dvc_init(origin)
    sh(origin, "dvc", "remote", "add", "-d", "local", str(tmp_path / "remote"))
    sh(origin, "dvc", "repro", "--quiet")
    sh(origin, "dvc", "push", "--quiet")
    commit(origin, "tiny study")

    sh(tmp_path, "git", "clone", "-q", str(origin), "clone")
    clone = tmp_path / "clone"
    sh(clone, "dvc", "pull", "--quiet")
    assert UP_TO_DATE in sh(clone, "dvc", "status").stdout
    # Every run's files came back, metrics.json included (a cached output, not only in git).
    for run in ("digits/dense/s0", "digits/posthoc/shift1.5-s0", "digits/baseline/d8-wide-s0"):
        for name in ("checkpoint.pt", "metrics.json", "history.csv", "config.yaml"):
            assert (clone / "runs" / run / name).is_file(), (run, name)
    assert (clone / "results" / "depth.json").is_file()
    assert (clone / "configs" / "digits" / "dense" / "s0.yaml").is_file()
    assert "results/metrics.json" in sh(clone, "dvc", "metrics", "show").stdout
    # Without the step Snakemake would rerun the jobs (post-hoc training, measures, ...) whose
    # inputs `dvc pull` happened to write after their outputs: it has no checksums to compare yet.
    sh(clone, *AFTER_PULL)
    assert_nothing_to_do(clone)

    # What the step recorded: input checksums, so a later `dvc checkout` (fresh file times, in
    # no order) reruns nothing either, down to the worst order (every output older than its inputs).
    for path in ("configs", "data/prepared", "runs", "results", "reports/figures", "reports/report.pdf"):
        shutil.rmtree(clone / path) if (clone / path).is_dir() else (clone / path).unlink()
    sh(clone, "dvc", "checkout", "--quiet")
    assert_nothing_to_do(clone)
    now = time.time()
    stages = ["configs", "data/raw", "data/prepared", "runs/**/c*", "runs/**/[mh]*", "results", "reports"]
    for age, pattern in enumerate(stages):
        for path in [*clone.glob(pattern), *clone.glob(f"{pattern}/**/*")]:
            os.utime(path, (now - 60 * age, now - 60 * age))
    assert_nothing_to_do(clone)
    # And a real change still reruns: one shift's run (sweep.shifts: the from-scratch arm's own grid),
    # and what reads every run.
    params = (clone / "params.yaml").read_text()
    (clone / "params.yaml").write_text(re.sub(r"shifts: \[0.2, 1.5\]", "shifts: [0.2, 0.5]", params))
    assert planned_jobs(clone) == STUDY_JOBS | {"train": 1}
