"""The pipeline: Snakemake and DVC run the tiny study in a temporary copy of the repository.

One Snakemake run of tests/fixtures/tiny_params.yaml is shared by the module (it costs about
two minutes on 2 cores); tests that edit params.yaml put it back. DVC runs the same study
from scratch in a second copy.
"""

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from nonlinear_advantage import architectures, plan
from nonlinear_advantage.aggregate import SUMMARY_COLUMNS
from repo_copy import ENV, ROOT, copy_repo, sh


def git_dvc_init(repo: Path) -> None:
    sh(repo, "git", "init", "-q")
    sh(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "init")
    if not (repo / ".dvc" / "config").exists():  # the repository ships .dvc/ already
        sh(repo, "dvc", "init", "-q")


def snakemake(repo, *args, check=True):
    return sh(repo, "snakemake", "--cores", "2", *args, check=check)


def step(rule: str) -> str:
    """The step a job's rule does: Snakemake's train and train_states (the runs that keep states for
    others: a rule's outputs are the same for each job), DVC's train_ARM stages, all train."""
    return re.sub(r"^train_\w+$", "train", rule)


def planned_jobs(repo, *args) -> Counter:
    """Step (rule name) -> count of the jobs a dry run would execute."""
    out = snakemake(repo, "-n", *args).stdout
    return Counter(map(step, re.findall(r"^(?:local)?rule (\w+):", out, re.M)))


# What any change of a run reruns besides its training: the configs, the study's depth, summary,
# figures and report.
STUDY_JOBS = Counter({"configure": 1, "measure": 1, "aggregate": 1, "metrics": 1, "figures": 1, "report": 1,
                      "all": 1})


def read_summary(repo) -> list[dict]:
    with open(repo / "results" / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def assert_same_study(repo, reference) -> None:
    """summary.csv, the depth file, and every run's checkpoint and config, byte for byte
    (history.csv and metrics.json hold timings)."""
    for name in ("summary.csv", "depth.json"):
        assert (repo / "results" / name).read_bytes() == (reference / "results" / name).read_bytes(), name
    for run in plan.run_ids(plan.load_params(repo / "params.yaml")):
        for name in ("checkpoint.pt", "config.yaml"):
            assert (repo / "runs" / run / name).read_bytes() == (reference / "runs" / run / name).read_bytes(), (
                run, name)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The tiny study, run once by Snakemake. Its report is kept as reports/report.pdf of this
    checkout when there is none yet (so CI, on a clean clone, keeps the tiny study's PDF)."""
    repo = copy_repo(tmp_path_factory.mktemp("snakemake"))
    snakemake(repo)
    kept = ROOT / "reports" / "report.pdf"
    if not kept.exists():
        kept.parent.mkdir(exist_ok=True)
        shutil.copy(repo / "reports" / "report.pdf", kept)
    return repo


# ---- static checks: no training ----------------------------------------------------------


def test_lint_is_clean():
    proc = sh(ROOT, "snakemake", "--lint")
    out = proc.stdout + proc.stderr
    assert "Congratulations, your workflow is in a good condition!" in out, out


def test_snakefmt_is_clean():
    sh(ROOT, "snakefmt", "--check", ".")


def snakemake_dag(repo) -> Counter:
    """(rule, command, outputs) of every job of a dry run from nothing."""
    out = snakemake(repo, "-n", "--printshellcmds").stdout
    jobs, job = [], None
    for line in out.splitlines():
        if m := re.match(r"(?:local)?rule (\w+):$", line):
            job = {"rule": step(m[1]), "outputs": ()}
            jobs.append(job)
        elif job and (m := re.match(r"    output: (.*)", line)):
            # The states a run keeps: DVC's one directory (params.yaml says how many), Snakemake's files.
            job["outputs"] = tuple(sorted({re.sub(r"/states/[^/]+\.pt$", "/states", o) for o in m[1].split(", ")}))
        elif job and line.startswith("Shell command: "):
            # The log redirection is Snakemake's own; DVC shows the output on the terminal.
            job["cmd"] = re.sub(r" > logs/\S+ 2>&1$", "", line.removeprefix("Shell command: "))
            job["cmd"] = job["cmd"].replace("$NLA_PARAMS", "params.yaml")  # the Snakefile sets it
    return Counter((j["rule"], j.get("cmd"), j["outputs"]) for j in jobs if j["rule"] != "all")


def dvc_dag(repo) -> Counter:
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc:
        stages = list(dvc.index.stages)
        rows = Counter()
        for stage in stages:
            rule = step(stage.name.split("@")[0])  # one DVC stage per arm
            outputs = tuple(sorted(str(Path(o.fs_path).relative_to(repo)) for o in stage.outs))
            # DVC trains from the config file `configure` resolved, Snakemake from the same config
            # resolved in the job (its params): the same run either way.
            cmd = re.sub(r"train --config configs/(\S+)\.yaml", r"train --params params.yaml --run \1",
                         " ".join(stage.cmd.split()))
            rows[(rule, cmd, outputs)] += 1
    return rows


@pytest.mark.parametrize("params", ["params.yaml", "tests/fixtures/tiny_params.yaml"])
def test_snakemake_and_dvc_have_the_same_dag(tmp_path, params):
    repo = copy_repo(tmp_path, ROOT / params)
    git_dvc_init(repo)
    smk, dvc = snakemake_dag(repo), dvc_dag(repo)
    assert smk == dvc
    # train per run (every arm, the finetune control included), download and prepare per
    # dataset, then configure, measure (one job), aggregate, metrics, figures and report
    planned = plan.load_params(repo / "params.yaml")
    assert len(smk) == len(plan.run_ids(planned)) + 2 * len(planned["datasets"]) + 6
    assert Counter(rule for rule, _, _ in smk.elements())["train"] == len(plan.run_ids(planned))


def test_bad_params_stop_snakemake_before_anything_runs(tmp_path):
    repo = copy_repo(tmp_path)
    text = (repo / "params.yaml").read_text().replace("shifts: [0.2, 1.5]", "shifts: [0.2, -1.5]")
    (repo / "params.yaml").write_text(text)
    proc = snakemake(repo, "-n", check=False)
    assert proc.returncode != 0
    assert "sweep.shifts[1]" in proc.stdout + proc.stderr and "minimum of 0" in proc.stdout + proc.stderr
    proc = sh(repo, sys.executable, "-m", "nonlinear_advantage", "configure", "--params", "params.yaml",
              "--out", "configs", check=False)  # DVC's first stage
    assert proc.returncode == 2 and "sweep.shifts[1]" in proc.stderr
    assert not (repo / "runs").exists() and not (repo / "data").exists() and not (repo / "configs").exists()


def test_config_edits_on_the_command_line_are_refused(tmp_path):
    repo = copy_repo(tmp_path)
    proc = snakemake(repo, "-n", "--config", "data_seed=3", check=False)
    assert proc.returncode != 0 and "differs from params.yaml" in proc.stdout + proc.stderr


def test_configfile_selects_the_paper_study(tmp_path):
    repo = copy_repo(tmp_path)
    jobs = planned_jobs(repo, "--configfile", "config/paper.yaml")
    paper = plan.load_params(ROOT / "config" / "paper.yaml")
    assert jobs["train"] == len(plan.run_ids(paper))
    assert jobs["download"] == 3  # cifar10, cifar100, fashion_mnist: no merge with params.yaml's digits
    out = snakemake(repo, "-n", "--printshellcmds", "--configfile", "config/paper.yaml").stdout
    for run in ("cifar100/sparse/shift0.3-s2", "cifar100/finetune/s2", "cifar100/posthoc/shift0.5-s2",
                "cifar100/late/at0.75-shift2.0-s2", "cifar100/shallow/d2-wide-s2"):
        assert f"train --params $NLA_PARAMS --run {run} " in out, run


# ---- the tiny study under Snakemake --------------------------------------------------------


def test_snakemake_html_report_holds_the_figures_and_the_pdf(study):
    snakemake(study, "--report", "report.html")
    html = (study / "report.html").read_text(errors="replace")
    for name in ("accuracy_vs_apl.png", "core_networks.png", "nonlinear_advantage.png", "report.pdf"):
        assert name in html


def test_summary(study):
    rows = read_summary(study)
    params = plan.load_params(study / "params.yaml")
    assert list(rows[0]) == list(SUMMARY_COLUMNS)
    assert [r["run"] for r in rows] == plan.run_ids(params)
    assert Counter(r["arm"] for r in rows) == {"baseline": 2, "shallow": 2, "dense": 1, "sparse": 2, "finetune": 1,
                                               "posthoc": 1, "late": 1}
    budget, by_id = params["datasets"]["digits"]["epochs"], {r.id: r for r in plan.runs(params)}
    for r in rows:
        # A path meets at most one activation per layer: depth - 1 of them in a ResNet (one after the
        # stem, two per block) and in a plain net (one after each of its depth - 1 convs).
        activations = int(r["depth"]) - 1
        for key in ("apl_normalized", "apl_unnormalized"):
            assert 0 <= float(r[key]) <= activations + 1e-9, (r["run"], key, r[key])
            if r["arm"] == "shallow":  # no skips: every path meets every layer's ReLU
                assert float(r[key]) == pytest.approx(activations), (r["run"], key, r[key])
        assert 0 <= int(r["nonlinear_channels"]) <= int(r["total_channels"])
        assert 0 <= float(r["test_acc"]) <= 1
        if r["arm"] in ("baseline", "shallow"):  # ReLUs are nonlinear everywhere
            assert r["nonlinear_channels"] == r["total_channels"] and r["activation"] == "relu"
        assert r["arch"] == ("plain" if r["arm"] == "shallow" else "resnet")
        # budgets as the trainer counted them (post-hoc and finetune: the dense run's B, then P more)
        assert int(r["budget_epochs"]) == plan.budget_epochs(params, by_id[r["run"]]), r["run"]
        after = r["arm"] in (plan.POSTHOC, plan.FINETUNE)
        assert int(r["budget_epochs"]) == budget + (params["posthoc"]["epochs"] if after else 0), r["run"]
        start = budget if after else 1 if r["arm"] == "late" else 0
        assert int(r["prior_start_epoch"]) == start, r["run"]
        assert (float(r["max_prior_shift"]) > 0) == (float(r["lam"]) > 0), r["run"]
        if plan.ARMS[r["arm"]].prior:  # the plan's λ is the trainer's: its thresholds sum to the shift
            shift = by_id[r["run"]].fields["shift"]
            assert float(r["max_prior_shift"]) == pytest.approx(shift, rel=5e-4), r["run"]
        assert int(r["test_size"]) == params["datasets"]["digits"]["test_size"]
    # widened baselines: the width whose parameter count is nearest the full network's
    dense = next(int(r["params"]) for r in rows if r["arm"] == "dense")
    wide = [r for r in rows if r["widened"] == "True"]
    assert {r["arm"] for r in wide} == {"baseline", "shallow"}
    for r in wide:
        arch, depth, width = r["arch"], int(r["depth"]), int(r["width"])
        assert int(r["params"]) == architectures.parameter_count(arch, depth, width, 1, 10, "relu")
        def off(w, arch=arch, depth=depth):
            return abs(architectures.parameter_count(arch, depth, w, 1, 10, "relu") - dense)

        assert off(width) <= off(width - 1) and off(width) < off(width + 1), r["run"]
    assert (study / "results" / "curves.csv").read_text().startswith("run,dataset,arm,lam,seed,epoch")
    assert (study / "reports" / "report.pdf").stat().st_size > 0


def test_the_late_run_continues_the_dense_run(study):
    """The late run is the dense run up to its prior start: it continues the state the dense run kept
    there (the same rows of history up to it), and trains only the epochs after."""
    late, dense = "digits/late/at0.5-shift1.5-s0", "digits/dense/s0"
    log = (study / "logs" / "train" / f"{late}.log").read_text()
    assert f"continuing run {dense} from runs/{dense}/states/at0.5.pt after epoch 1" in log, log
    assert "epoch 1:" not in log and "epoch 2:" in log
    rows = {run: (study / "runs" / run / "history.csv").read_text().splitlines() for run in (late, dense)}
    assert [r.rsplit(",", 1)[0] for r in rows[late][:2]] == [r.rsplit(",", 1)[0] for r in rows[dense][:2]]
    assert rows[late][2] != rows[dense][2]  # then the prior


def test_nothing_to_do_after_a_full_run(study):
    out = snakemake(study, "-n").stdout
    assert "Nothing to be done" in out, out[-2000:]


def test_the_params_file_name_is_not_a_job_parameter(study):
    """`cp config/paper.yaml params.yaml` after `--configfile config/paper.yaml` must rerun nothing."""
    shutil.copy(study / "params.yaml", study / "same.yaml")
    try:
        out = snakemake(study, "-n", "--configfile", "same.yaml").stdout
        assert "Nothing to be done" in out, out[-2000:]
    finally:
        (study / "same.yaml").unlink()


@pytest.mark.parametrize("old, new, run", [
    # each arm has its own grid of shifts: a change reaches that arm's run alone
    ("sweep:\n  shifts: [0.2, 1.5]", "sweep:\n  shifts: [0.2, 0.5]", "digits/sparse/shift0.5-s0"),
    ("lr: 0.02, shifts: [1.5]", "lr: 0.02, shifts: [0.5]", "digits/posthoc/shift0.5-s0"),
    ("starts: [0.5], shifts: [1.5]", "starts: [0.5], shifts: [0.5]", "digits/late/at0.5-shift0.5-s0"),
])
def test_one_changed_shift_reruns_exactly_its_jobs(study, old, new, run):
    original = (study / "params.yaml").read_text()
    assert original.count(old) == 1
    try:
        (study / "params.yaml").write_text(original.replace(old, new))
        jobs = planned_jobs(study, "--printshellcmds")
        assert jobs == STUDY_JOBS | {"train": 1}
        out = snakemake(study, "-n", "--printshellcmds").stdout
        assert Counter(re.findall(r"--run (\S+)", out)) == {run: 1}
    finally:
        (study / "params.yaml").write_text(original)
    assert "Nothing to be done" in snakemake(study, "-n").stdout


def test_a_changed_run_config_reruns_only_those_runs(study):
    """Snakemake's params trigger: the post-hoc lr and epochs come after the dense run's B, so they
    reach the post-hoc run and its finetune control, not the dense run they continue."""
    original = (study / "params.yaml").read_text()
    try:
        assert original.count("posthoc: {epochs: 1, lr: 0.02,") == 1
        for old, new in (("lr: 0.02,", "lr: 0.03,"), ("posthoc: {epochs: 1", "posthoc: {epochs: 2")):
            (study / "params.yaml").write_text(original.replace(old, new))
            assert planned_jobs(study) == STUDY_JOBS | {"train": 2}
            out = snakemake(study, "-n", "--printshellcmds").stdout
            assert Counter(re.findall(r"--run (\S+)", out)) == {"digits/posthoc/shift1.5-s0": 1,
                                                                "digits/finetune/s0": 1}
    finally:
        (study / "params.yaml").write_text(original)


def test_dvc_checkout_does_not_make_snakemake_rerun(study):
    """dvc checkout rewrites outputs with fresh file times, in no particular order."""
    git_dvc_init(study)
    sh(study, "dvc", "commit", "--force", "--quiet")  # record Snakemake's outputs in dvc.lock
    assert "up to date" in sh(study, "dvc", "status").stdout
    for path in ("configs", "data/prepared", "runs", "results", "reports/figures", "reports/report.pdf"):
        shutil.rmtree(study / path) if (study / path).is_dir() else (study / path).unlink()
    sh(study, "dvc", "checkout", "--quiet")
    assert (study / "results" / "summary.csv").exists()
    assert "Nothing to be done" in snakemake(study, "-n").stdout
    # The worst order: every stage's outputs older than its inputs.
    stages = ["configs", "data/raw", "data/prepared", "runs/**/c*", "runs/**/[mh]*", "results", "reports"]
    now = time.time()
    for age, pattern in enumerate(stages):
        for path in [*study.glob(pattern), *study.glob(f"{pattern}/**/*")]:
            os.utime(path, (now - 60 * age, now - 60 * age))
    assert "Nothing to be done" in snakemake(study, "-n").stdout
    # What the profile's checksums prevent: Snakemake's default of 1 MB leaves checkpoints to file times.
    assert "Nothing to be done" not in snakemake(study, "-n", "--max-checksum-file-size", "0").stdout


def _dvc_changed_stages(repo) -> set[str]:
    out = sh(repo, "dvc", "status", "--json").stdout
    return set(json.loads(out or "{}"))


ALL_TRAIN = {f"train_{arm}" for arm in plan.ARMS}
STUDY_STAGES = {"configure", "measure", "aggregate", "metrics", "figures", "report"}
RETRAIN_JOBS = STUDY_JOBS - Counter(configure=1) + Counter(train=10)
CODE = "src/nonlinear_advantage/"
# An extra arm whose runs differ from every existing run (another seed offset): it must train
# its own runs and leave the others alone.
NEW_ARM = """
ARMS["extra"] = Arm("extra", configure=lambda params, fields, config: config.update(seed=config["seed"] + 100))
"""


@pytest.mark.parametrize("path, edit, snakemake_jobs, dvc_stages", [
    # a stage's own code: the report alone
    ("report.py", "\n# a change\n", {"report": 1, "all": 1}, {"report"}),
    # the code that trains: every run (and the measure job, whose code loads checkpoints with it)
    *[(f, "\n# a change\n", RETRAIN_JOBS, ALL_TRAIN | {"measure"}) for f in ("trainer.py", "prelu.py", "models.py")],
    # a schema: what validates with it
    ("schema_files/run.schema.json", "\n", RETRAIN_JOBS, ALL_TRAIN | {"measure"}),
    ("schema_files/params.schema.json", "\n", STUDY_JOBS, STUDY_STAGES),
    # the plan: the stages that read it (which write what they wrote); no training
    ("plan.py", "\n# a change\n", STUDY_JOBS, STUDY_STAGES),
    # a registry row: only `configure`, which writes the same configs again
    ("datasets.py", '\nDATASETS["extra"] = Dataset(shape=(1, 4, 4), reader="digits", files={})\n',
     {"configure": 1, "all": 1}, {"configure"}),
    ("architectures.py", '\nARCHITECTURES["resnet2"] = ARCHITECTURES["resnet"]\n', {"configure": 1, "all": 1},
     {"configure"}),
    # a new arm: its runs, then what reads every run
    ("plan.py", NEW_ARM, STUDY_JOBS + Counter(train=1), STUDY_STAGES | {"train_extra@digits-0"}),
], ids=["report", "trainer", "prelu", "models", "run-schema", "params-schema", "plan", "dataset-row",
        "architecture-row", "new-arm"])
def test_only_what_changed_reruns_in_both_tools(study, path, edit, snakemake_jobs, dvc_stages):
    """Each stage depends on the code that decides its output (plan.py, "code as a dependency")."""
    if not (study / ".dvc" / "tmp").exists() or "up to date" not in sh(study, "dvc", "status").stdout:
        git_dvc_init(study)
        sh(study, "dvc", "commit", "--force", "--quiet")
    source, dvc_yaml = study / CODE / path, study / "dvc.yaml"
    original, original_dvc = source.read_text(), dvc_yaml.read_text()
    try:
        source.write_text(original + edit)
        # a new arm adds its DVC stage (the copy's package, not this checkout's)
        sh(study, "env", f"PYTHONPATH={study / 'src'}", sys.executable, "-m", "nonlinear_advantage", "generate")
        assert planned_jobs(study) == snakemake_jobs
        # DVC lists a stage once its own deps changed (what follows reruns when it runs).
        assert {re.sub(r"@.*", "", s) if not s.startswith("train_extra") else s
                for s in _dvc_changed_stages(study)} == dvc_stages
    finally:
        source.write_text(original)
        dvc_yaml.write_text(original_dvc)
    assert "Nothing to be done" in snakemake(study, "-n").stdout


# ---- the tiny study under DVC -------------------------------------------------------------


@pytest.mark.slow
def test_dvc_repro_runs_the_study_and_then_is_up_to_date(tmp_path, study):
    repo = copy_repo(tmp_path)
    git_dvc_init(repo)
    sh(repo, "dvc", "repro", "--quiet")
    rows = read_summary(repo)
    assert list(rows[0]) == list(SUMMARY_COLUMNS) and len(rows) == 10
    for r in rows:
        assert 0 <= float(r["apl_normalized"]) <= int(r["depth"]) - 1
    assert [r["run"] for r in rows] == [r["run"] for r in read_summary(study)]
    # The same params give the same bytes from both tools: each trains with the run config's
    # torch threads (train.threads), whatever the tool or the machine's cores.
    assert_same_study(repo, study)
    again = sh(repo, "dvc", "repro")
    assert "Running stage" not in again.stdout and "up to date" in again.stdout
    assert "Data and pipelines are up to date" in sh(repo, "dvc", "status").stdout
    assert "results/metrics.json" in sh(repo, "dvc", "metrics", "show").stdout
    sh(repo, "dvc", "plots", "show", "--out", str(tmp_path / "plots"))
    # `dvc exp run -S` on one λ: exactly its stages rerun, then the ones that read all runs.
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "tiny study")
    # Post-hoc has its own grid (posthoc.shifts), so only the sparse run is new.
    out = sh(repo, "dvc", "exp", "run", "-S", "sweep.shifts=[0.2,0.5]").stdout
    assert set(re.findall(r"Running stage '([^']+)'", out)) == {"train_sparse@digits-0-0.5"} | STUDY_STAGES, out



# ---- a fault: Snakemake killed with kill -9 in the middle of the study ----------------------


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs (zombies do not count); Linux's /proc."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if int(pgrp) == pgid and state != "Z":
            return True
    return False


@pytest.mark.slow
def test_a_study_killed_with_kill_9_ends_with_the_same_bytes(tmp_path, study):
    """docs/running.md, "When a run is killed": the jobs of a kill -9'ed Snakemake run on, so wait for
    them; the lock it leaves stops the next run until `snakemake --unlock`; then the same
    command finishes the study, with the bytes of an uninterrupted run. About 2 minutes on 2 cores."""
    repo = copy_repo(tmp_path)
    proc = subprocess.Popen(["snakemake", "--cores", "2"], cwd=repo, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # its own process group
    deadline = time.time() + 300
    while not list((repo / "runs").glob("*/*/*/checkpoint.pt")):  # once a training run has a checkpoint
        assert proc.poll() is None and time.time() < deadline, "the study ended or never got going"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (repo / "results" / "summary.csv").exists()
    while _group_alive(proc.pid):  # the jobs it started, which kill -9 does not stop
        assert time.time() < deadline
        time.sleep(0.2)
    locked = snakemake(repo, check=False)
    assert locked.returncode != 0 and "cannot be locked" in locked.stdout + locked.stderr
    snakemake(repo, "--unlock")
    snakemake(repo)
    assert_same_study(repo, study)
