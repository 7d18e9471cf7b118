"""The study on a real (single-node, throw-away) Slurm, through `--executor slurm`.

The cluster comes from workflow/scripts/slurm_cluster.sh (munge, MariaDB + slurmdbd,
slurmctld, slurmd; Debian packages; state under a temp dir). It needs root and apt-get,
so it runs in CI and is skipped elsewhere with the reason stated.

Each test runs the real pipeline (Snakefile, workflow/) in its own copy of the repository
with tests/fixtures/tiny_params.yaml as params.yaml, as test_pipeline.py does, through
`snakemake --profile tests/profiles/slurm-test` (or profiles/slurm). Every job that
goes through Slurm costs about 12 s of the plugin's status-check latency on top of its own
run time, so the local work a test needs but does not test (the reference run, data for the
fault case) runs outside Slurm. The whole module takes about 3.5 minutes on 2 cores.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from nonlinear_advantage import architectures, compute, plan
from repo_copy import ENV, TINY, copy_repo, sh

REPO = Path(__file__).resolve().parents[1]
CLUSTER_SH = REPO / "workflow" / "scripts" / "slurm_cluster.sh"
# Relative: each test runs in a copy of the repository, which holds both profiles.
PROFILE = Path("profiles") / "slurm"
TEST_PROFILE = Path("tests") / "profiles" / "slurm-test"
TRAIN_RULES = {"train", "train_states"}  # one rule trains every arm (a copy of it the runs that keep states)


def _load(profile: Path) -> dict:
    return yaml.safe_load((REPO / profile / "config.yaml").read_text())


# --- the profiles themselves (no cluster needed) ---------------------------------------


def test_profile_asks_a_gpu_for_every_training_rule():
    cfg = _load(PROFILE)
    assert cfg["executor"] == "slurm"
    assert {"mem_mb", "runtime", "slurm_partition"} <= set(cfg["default-resources"])
    assert {r for r, res in cfg["set-resources"].items() if res.get("gpu") == 1} == TRAIN_RULES
    assert cfg["retries"] >= 1 and cfg["latency-wait"] >= 10 and cfg["jobs"] >= 1


def test_test_profile_stays_in_step_with_the_real_one():
    real, test = _load(PROFILE), _load(TEST_PROFILE)
    # Profiles do not inherit: every key of the real profile is repeated in the test one.
    assert set(real) <= set(test)
    assert set(real["default-resources"]) <= set(test["default-resources"])
    # The local node has no GPU: the test profile takes the gpu request back.
    assert {r for r, res in test["set-resources"].items() if res.get("gpu") == 0} == TRAIN_RULES
    # The short first status check is for tests only.
    assert "slurm-init-seconds-before-status-checks" not in real
    assert test["slurm-init-seconds-before-status-checks"] <= 5
    # sacct's "CANCELLED by <uid>" hangs plugin 2.8.0 forever; both poll with squeue.
    assert real["slurm-status-command"] == test["slurm-status-command"] == "squeue"
    # The same calibration keys (the test's costs differ), a cost for every architecture.
    assert set(real["config"]) == set(test["config"]) == {compute.CONFIG_KEY}
    for cfg in (real, test):
        cal = compute.Calibration.from_config(cfg["config"][compute.CONFIG_KEY])
        assert set(cal.seconds_per_image) == set(architectures.ARCHITECTURES)


def test_training_time_limits_follow_the_plan():
    """The real profile's calibration: a training job's limit grows with its epochs and images."""
    cal = compute.Calibration.from_config(_load(PROFILE)["config"][compute.CONFIG_KEY])
    paper = plan.load_params(REPO / "config" / "paper.yaml")
    minutes = {run: compute.train_minutes(paper, run, cal) for run in plan.run_ids(paper)}
    dense, late = minutes["cifar10/dense/s0"], minutes["cifar10/late/at0.25-shift1.0-s0"]
    assert dense > minutes["fashion_mnist/dense/s0"] and dense > late > cal.min_minutes
    # a job that continues the dense state trains its own epochs only: 120 of a late start, P = 10 post hoc
    assert late > minutes["cifar10/posthoc/shift1.0-s0"] >= cal.min_minutes
    assert compute.train_minutes(paper, "cifar10/dense/s0", cal, attempt=2) == 2 * dense  # a retry
    assert min(minutes.values()) >= cal.min_minutes


# --- the cluster -----------------------------------------------------------------------


def _skip_reason() -> str | None:
    if os.name != "posix" or os.geteuid() != 0:
        return "needs root: the local Slurm starts system daemons (runs in CI)"
    if shutil.which("apt-get") is None:
        return "needs apt-get (Debian) to install Slurm, munge and MariaDB"
    if os.path.isfile("/etc/slurm/slurm.conf") and not os.path.islink("/etc/slurm/slurm.conf"):
        return "this machine has a real /etc/slurm/slurm.conf; not standing up a test cluster over it"
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return "snakemake-executor-plugin-slurm missing: pip install -e '.[cluster]'"
    return None


needs_cluster = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")


def _cluster(action: str, state: Path) -> None:
    proc = subprocess.run(
        ["bash", str(CLUSTER_SH), action, str(state)], capture_output=True, text=True, timeout=300
    )
    sys.stderr.write(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"slurm_cluster.sh {action} failed ({proc.returncode}):\n{proc.stderr}")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A running single-node Slurm; always torn down, whatever the tests did."""
    state = tmp_path_factory.mktemp("slurm")
    t0 = time.monotonic()
    try:
        _cluster("up", state)
    except BaseException:
        _cluster("down", state)
        raise
    sys.stderr.write(f"slurm cluster up in {time.monotonic() - t0:.1f} s\n")
    try:
        yield {"conf": state / "etc" / "slurm.conf", "state": state}
    finally:
        _cluster("down", state)


def _env(slurm) -> dict:
    return {**ENV, "SLURM_CONF": str(slurm["conf"])}


def _local_env() -> dict:
    """For snakemake runs that must not see Slurm (the local reference run)."""
    return {k: v for k, v in ENV.items() if not k.startswith("SLURM_")}


def _snakemake_on_slurm_cmd(profile: Path, extra_args=()) -> list[str]:
    # As users run it: profiles/default is loaded on top as the workflow profile, and must not
    # drop the Slurm profile's default-resources (the real-profile test checks -t 120).
    return [sys.executable, "-m", "snakemake", "--profile", str(profile), *extra_args]


def run_snakemake_on_slurm(workdir: Path, profile: Path, extra_args=(), *, env, timeout=240):
    """Run `snakemake --profile PROFILE` in WORKDIR; return (CompletedProcess, run id).

    Output is combined stdout+stderr in `.stdout`. The run id is the sbatch job name the
    plugin gives every job of this run (so `sacct --name RUN_ID` lists exactly them).
    """
    proc = subprocess.run(_snakemake_on_slurm_cmd(profile, extra_args), cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    proc.stdout = proc.stdout + proc.stderr
    return proc, _run_id(proc.stdout)


def _run_id(output: str) -> str | None:
    m = re.search(r"SLURM run ID: (\S+)", output)
    return m.group(1) if m else None


def sacct_jobs(run_id: str, env) -> list[dict]:
    """The jobs of one plugin run as sacct records them: job id, rule, state, time limit in minutes."""
    out = subprocess.run(
        ["sacct", "-a", "-X", "-n", "-P", "--name", run_id, "--starttime", "now-1days",
         "--format=JobID,Comment,State,Timelimit"],
        env=env, capture_output=True, text=True, check=True, timeout=30,
    ).stdout
    jobs = []
    for line in out.splitlines():
        jobid, comment, state, limit = line.split("|")
        # the plugin's comment is rule_<name> or rule_<name>_wildcards_<...>
        rule = re.sub(r"_wildcards_.*$", "", comment.removeprefix("rule_"))
        jobs.append({"jobid": jobid, "rule": rule, "state": state.split()[0], "minutes": _minutes(limit)})
    return jobs


def _minutes(limit: str) -> int | None:
    """sacct's Timelimit ([D-]HH:MM:SS) in minutes; None for UNLIMITED and the like."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d+):(\d+)", limit.strip())
    return None if not m else int(m[1] or 0) * 1440 + int(m[2]) * 60 + int(m[3]) + (int(m[4]) > 0)


def _finished_rules(output: str) -> Counter:
    """Rule -> number of jobs that snakemake's log reports finished."""
    return Counter(re.findall(r"^Finished jobid: \d+ \(Rule: (\w+)\)", output, re.M))


# --- the tiny study, locally and on Slurm ----------------------------------------------


@needs_cluster
@pytest.mark.slow
def test_the_tiny_study_runs_as_slurm_jobs_and_matches_the_local_run(slurm, tmp_path):
    env = _env(slurm)
    local, work = copy_repo(tmp_path / "local"), copy_repo(tmp_path / "cluster")
    # The reference run goes alongside the Slurm one, which mostly waits for status checks,
    # but niced: a Slurm job slowed past ~11 s waits a whole status-check round more (+21 s).
    with open(tmp_path / "local.log", "w") as log:
        local_proc = subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "2"], cwd=local,
                                      env=_local_env(), stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, preexec_fn=lambda: os.nice(19))
    try:
        proc, run_id = run_snakemake_on_slurm(work, TEST_PROFILE, env=env)
        local_rc = local_proc.wait(timeout=240)
    finally:
        if local_proc.poll() is None:
            local_proc.kill()
            local_proc.wait(timeout=30)
    local_out = (tmp_path / "local.log").read_text()
    assert local_rc == 0, local_out[-4000:]
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert run_id, proc.stdout[-4000:]

    # Every job the local run ran is one Slurm job of this run, and all completed.
    # (`all` only gathers the targets: no command, no job.)
    ran_locally = _finished_rules(local_out)
    del ran_locally["all"]
    n_runs = len(plan.run_ids(plan.load_params(TINY)))  # every arm of the tiny study: 10 runs
    assert ran_locally["train"] + ran_locally["train_states"] == n_runs and ran_locally["measure"] == 1, ran_locally
    jobs = sacct_jobs(run_id, env)
    assert Counter(j["rule"] for j in jobs) == ran_locally, jobs
    assert all(j["state"] == "COMPLETED" for j in jobs), jobs
    # Each training job's time limit is the plan's: its epochs x images x its architecture's
    # cost in the test profile's calibration (2 or 3 minutes here); the others get the default.
    cal = compute.Calibration.from_config(_load(TEST_PROFILE)["config"][compute.CONFIG_KEY])
    tiny = plan.load_params(TINY)
    planned = Counter(compute.train_minutes(tiny, run, cal) for run in plan.run_ids(tiny))
    assert len(planned) > 1, planned  # the test tells runs apart
    assert Counter(j["minutes"] for j in jobs if j["rule"] in TRAIN_RULES) == planned, jobs
    assert {j["minutes"] for j in jobs if j["rule"] not in TRAIN_RULES} == {
        _load(TEST_PROFILE)["default-resources"]["runtime"]}

    summary = (work / "results" / "summary.csv").read_bytes()
    assert summary == (local / "results" / "summary.csv").read_bytes()
    assert summary.count(b"\n") == 1 + n_runs
    assert (work / "reports" / "report.pdf").stat().st_size > 0


# --- a training job cancelled mid-run, then resumed -------------------------------------

# Tiny digits runs with this many epochs: each is ~0.4 s here, long enough to cancel the job
# after epoch 2, short enough that the rerun's rest fits in one ~12 s status-check round.
FAULT_EPOCHS = 20
FAULT_TARGET = "runs/digits/dense/s0/metrics.json"  # the dense run's train job: plan.train_outputs
FAULT_RULE = "train_states"  # the dense run keeps a state for the late start
FAULT_LOG = "logs/train/digits/dense/s0.log"  # its log: (the rule's log:)


def _wait_for(pred, timeout: float, what: str, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"snakemake exited ({proc.returncode}) while waiting for {what}")
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _submitted_jobid(output: str, rule: str) -> str | None:
    """The Slurm job id of RULE's job, from the plugin's submission line in snakemake's log."""
    m = re.search(rf"submitted with SLURM jobid (\d+) \(log: \S*/rule_{rule}/", output)
    return m.group(1) if m else None


def _squeue_state(jobid: str, env) -> str:
    return subprocess.run(["squeue", "-h", "-j", jobid, "-o", "%T"], env=env, capture_output=True,
                          text=True, timeout=30).stdout.strip()


def _resume_epoch(run_dir: Path) -> int:
    """The last epoch in the trainer's hidden `.resume.pt` (0 when there is none yet)."""
    import torch

    try:
        return int(torch.load(run_dir / ".resume.pt", map_location="cpu", weights_only=True)["epoch"])
    except (FileNotFoundError, RuntimeError, EOFError):
        return 0


@needs_cluster
@pytest.mark.slow
def test_cancelled_training_job_fails_the_run_and_a_rerun_resumes(slurm, tmp_path):
    env = _env(slurm)
    params = yaml.safe_load(TINY.read_text())
    params["datasets"]["digits"]["epochs"] = FAULT_EPOCHS
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    work = copy_repo(tmp_path / "fault", tmp_path / "params.yaml")
    # Its data locally: two Slurm jobs fewer to wait for.
    sh(work, "snakemake", "--cores", "2", "data/prepared/digits.pt")
    run_dir = work / "runs" / "digits" / "dense" / "s0"

    log = tmp_path / "first.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(_snakemake_on_slurm_cmd(TEST_PROFILE, ["--", FAULT_TARGET]), cwd=work, env=env,
                                stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        jobid = _wait_for(lambda: _submitted_jobid(log.read_text(), FAULT_RULE), 60,
                          "the dense run's train job to be submitted", proc)
        # Cancel it mid-run: running, and past its second epoch's checkpoint.
        _wait_for(lambda: _resume_epoch(run_dir) >= 2 and _squeue_state(jobid, env) == "RUNNING", 120,
                  "the dense run to train two epochs", proc)
        subprocess.run(["scancel", jobid], env=env, check=True, timeout=30)
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:  # the test failed while snakemake still ran: stop it and its jobs
            run_id = _run_id(log.read_text())
            if run_id:
                subprocess.run(["scancel", "--name", run_id], env=env, timeout=30)
            proc.kill()  # SIGTERM would wait for the running jobs
            proc.wait(timeout=30)
    out = log.read_text()
    assert rc != 0, out[-4000:]
    assert f"Error in rule {FAULT_RULE}" in out, out[-4000:]
    assert re.search(rf"SLURM-job '{jobid}' failed, SLURM status is: 'CANCELLED", out), out[-4000:]
    # Snakemake removed the failed job's outputs; the trainer's hidden link to the last
    # checkpoint stays.
    assert not (work / FAULT_TARGET).exists() and not (run_dir / "checkpoint.pt").exists()
    stopped_at = _resume_epoch(run_dir)
    assert 2 <= stopped_at < FAULT_EPOCHS

    # The same command again picks the run up from the checkpoint and completes.
    proc2, run_id2 = run_snakemake_on_slurm(work, TEST_PROFILE, ["--", FAULT_TARGET], env=env)
    assert proc2.returncode == 0, proc2.stdout[-4000:]
    train_log = (work / FAULT_LOG).read_text()
    m = re.search(r"resuming from \S*\.resume\.pt after epoch (\d+)", train_log)
    assert m and int(m.group(1)) == stopped_at, train_log[-2000:]
    assert f"epoch {FAULT_EPOCHS}:" in train_log and (work / FAULT_TARGET).exists()
    assert not (run_dir / ".resume.pt").exists()
    assert [(j["rule"], j["state"]) for j in sacct_jobs(run_id2, env)] == [(FAULT_RULE, "COMPLETED")]


# --- the real profile -------------------------------------------------------------------


@needs_cluster
@pytest.mark.slow
def test_real_profile_asks_slurm_for_a_gpu_per_training_job(slurm, tmp_path):
    """profiles/slurm as users get it: its default resources and partition, and `--gpus=1` on
    training jobs (which this GPU-less node rejects at submission: hence the test profile's override)."""
    env = _env(slurm)
    work = copy_repo(tmp_path / "real")
    sh(work, "snakemake", "--cores", "2", "data/raw/digits")  # locally: one Slurm job fewer
    args = ["--slurm-init-seconds-before-status-checks", "1", "--verbose", "--"]
    proc, _ = run_snakemake_on_slurm(work, PROFILE, [*args, "data/prepared/digits.pt"], env=env)
    assert proc.returncode == 0, proc.stdout[-4000:]
    # the profile's runtime (profiles/default, loaded on top, must not drop it)
    # and the cluster's default partition
    assert re.search(r"sbatch call: sbatch .*--comment rule_prepare_wildcards_digits .* -p debug .*-t 120 ",
                     proc.stdout), proc.stdout[-4000:]
    proc, _ = run_snakemake_on_slurm(work, PROFILE, [*args, "runs/digits/dense/s0/metrics.json"], env=env)
    assert proc.returncode != 0
    assert re.search(r"sbatch call: sbatch .*--comment rule_train_states_wildcards_digits_dense_s0 .*--gpus=1",
                     proc.stdout), proc.stdout[-4000:]
    # its time limit from the profile's calibration, not the 120-minute default
    cal = compute.Calibration.from_config(_load(PROFILE)["config"][compute.CONFIG_KEY])
    limit = compute.train_minutes(plan.load_params(TINY), "digits/dense/s0", cal)
    assert re.search(rf"sbatch call: sbatch .*--comment rule_train_states_wildcards_digits_dense_s0 .*-t {limit} ",
                     proc.stdout), proc.stdout[-4000:]
    assert "Invalid generic resource (gres) specification" in proc.stdout
