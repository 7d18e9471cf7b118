"""The workflow on a real (single-node, throw-away) Slurm, through `--executor slurm`.

The cluster comes from workflow/scripts/slurm_cluster.sh (munge, MariaDB + slurmdbd,
slurmctld, slurmd; Debian packages; state under a temp dir). It needs root and apt-get,
so it runs in CI and is skipped elsewhere with the reason stated.

The workflow under test is, for now, a tiny stand-in written into tmp_path whose rule
names match the real pipeline's training rules. To point the test at the real pipeline,
replace `_write_standin` by a copy of the repository's Snakefile, workflow/ and a tiny
params file, and the `summary.csv` comparison stays as it is (see README of issue 7).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER_SH = REPO / "workflow" / "scripts" / "slurm_cluster.sh"
PROFILE = REPO / "profiles" / "slurm"
TEST_PROFILE = REPO / "tests" / "profiles" / "slurm-test"
TRAIN_RULES = {"train_baseline", "train_dense", "train_sparse", "train_posthoc"}
VENV_BIN = Path(sys.executable).parent


def _load(profile: Path) -> dict:
    return yaml.safe_load((profile / "config.yaml").read_text())


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
    env = dict(os.environ)
    env["SLURM_CONF"] = str(slurm["conf"])
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_snakemake_on_slurm(workdir: Path, profile: Path, extra_args=(), *, env=None, timeout=240):
    """Run `snakemake --profile PROFILE` in WORKDIR; return (CompletedProcess, slurm run id).

    Output is combined stdout+stderr in `.stdout`. The run id is the sbatch job name the
    plugin gives every job of this run (so `sacct --name RUN_ID` lists exactly them).
    """
    cmd = [sys.executable, "-m", "snakemake", "--profile", str(profile), "--directory", str(workdir),
           *extra_args]
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    proc.stdout = proc.stdout + proc.stderr
    return proc, _run_id(proc.stdout)


def _run_id(output: str) -> str | None:
    m = re.search(r"SLURM run ID: (\S+)", output)
    return m.group(1) if m else None


def sacct_jobs(run_id: str, env) -> list[dict]:
    """The jobs of one plugin run as sacct records them: job id, rule, state."""
    out = subprocess.run(
        ["sacct", "-a", "-X", "-n", "-P", "--name", run_id, "--starttime", "now-1days",
         "--format=JobID,Comment,State"],
        env=env, capture_output=True, text=True, check=True, timeout=30,
    ).stdout
    jobs = []
    for line in out.splitlines():
        jobid, comment, state = line.split("|")
        # the plugin's comment is rule_<name> or rule_<name>_wildcards_<...>
        rule = re.sub(r"_wildcards_.*$", "", comment.removeprefix("rule_"))
        jobs.append({"jobid": jobid, "rule": rule, "state": state.split()[0]})
    return jobs


# --- the stand-in workflow -------------------------------------------------------------

STANDIN = textwrap.dedent(
    r"""
    rule all:
        input: "results/summary.csv"

    rule prepare:
        output: "data/n.txt"
        shell: "echo 21 > {output}"

    # Same name and resources shape as a real training rule: the real profile gives it gpu=1,
    # the test profile takes it back (no GPU here). It checkpoints as it goes and resumes.
    rule train_sparse:
        input: "data/n.txt"
        output: "runs/sparse.txt"
        params: steps=config.get("steps", 6)
        threads: 1
        resources: mem_mb=200, runtime=5
        shell:
            '''
            mkdir -p ckpt; step=$(cat ckpt/sparse 2>/dev/null || echo 0); start=$step
            while [ $step -lt {params.steps} ]; do sleep 0.5; step=$((step+1)); echo $step > ckpt/sparse; done
            echo "value=$(( $(cat {input}) * 2 )) resumed_from=$start slurm_job=${{SLURM_JOB_ID:-none}}" > {output}
            '''

    rule summarize:
        input: "runs/sparse.txt"
        output: "results/summary.csv"
        shell:
            "echo rule,value > {output};"
            " echo train_sparse,$(grep -o 'value=[0-9]*' {input} | cut -d= -f2) >> {output}"
    """
)
STANDIN_RULES = {"prepare", "train_sparse", "summarize"}


def _write_standin(workdir: Path) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "Snakefile").write_text(STANDIN)
    return workdir


@needs_cluster
@pytest.mark.slow
def test_workflow_runs_as_slurm_jobs_and_matches_the_local_run(slurm, tmp_path):
    env = _env(slurm)
    local = _write_standin(tmp_path / "local")
    subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "--directory", str(local)],
                   cwd=local, env={**env, "SLURM_JOB_ID": ""}, check=True, capture_output=True, timeout=120)

    work = _write_standin(tmp_path / "cluster")
    proc, run_id = run_snakemake_on_slurm(work, TEST_PROFILE, env=env)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert run_id, proc.stdout[-4000:]

    jobs = sacct_jobs(run_id, env)
    assert {j["rule"] for j in jobs} == STANDIN_RULES, jobs
    assert len(jobs) == len(STANDIN_RULES), jobs
    assert all(j["state"] == "COMPLETED" for j in jobs), jobs
    # the training step saw its own Slurm job
    sparse_job = next(j["jobid"] for j in jobs if j["rule"] == "train_sparse")
    assert f"slurm_job={sparse_job}" in (work / "runs" / "sparse.txt").read_text()

    assert (work / "results" / "summary.csv").read_bytes() == (local / "results" / "summary.csv").read_bytes()
    assert (work / "results" / "summary.csv").read_text() == "rule,value\ntrain_sparse,42\n"


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


@needs_cluster
@pytest.mark.slow
def test_cancelled_training_job_fails_the_run_and_a_rerun_resumes(slurm, tmp_path):
    env = _env(slurm)
    work = _write_standin(tmp_path / "fault")
    # Only the training job: its input is already there.
    (work / "data").mkdir()
    (work / "data" / "n.txt").write_text("21\n")
    args = ["--config", "steps=12", "--", "runs/sparse.txt"]
    cmd = [sys.executable, "-m", "snakemake", "--profile", str(TEST_PROFILE), "--directory", str(work), *args]
    log = work / "first.log"
    ckpt = work / "ckpt" / "sparse"
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        jobid = _wait_for(lambda: _submitted_jobid(log.read_text(), "train_sparse"), 60,
                          "train_sparse to be submitted", proc)
        # Cancel it mid-run: running, and past its second checkpoint.
        _wait_for(lambda: ckpt.exists() and int(ckpt.read_text().strip() or 0) >= 2
                  and _squeue_state(jobid, env) == "RUNNING", 90, "train_sparse to run and checkpoint", proc)
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
    assert "Error in rule train_sparse" in out, out[-4000:]
    assert re.search(rf"SLURM-job '{jobid}' failed, SLURM status is: 'CANCELLED", out), out[-4000:]
    assert not (work / "runs" / "sparse.txt").exists()
    stopped_at = int(ckpt.read_text())
    assert 2 <= stopped_at < 12

    # The same command again picks the run up from the checkpoint and completes.
    proc2, run_id2 = run_snakemake_on_slurm(work, TEST_PROFILE, args, env=env)
    assert proc2.returncode == 0, proc2.stdout[-4000:]
    resumed = int(re.search(r"resumed_from=(\d+)", (work / "runs" / "sparse.txt").read_text()).group(1))
    assert resumed >= stopped_at
    assert [(j["rule"], j["state"]) for j in sacct_jobs(run_id2, env)] == [("train_sparse", "COMPLETED")]


@needs_cluster
@pytest.mark.slow
def test_real_profile_asks_slurm_for_a_gpu_per_training_job(slurm, tmp_path):
    """profiles/slurm as users get it: default partition picked, and `--gpus=1` on training
    jobs (which this GPU-less node rejects at submission: hence the test profile's override)."""
    env = _env(slurm)
    work = _write_standin(tmp_path / "real")
    proc, _ = run_snakemake_on_slurm(work, PROFILE, ["--slurm-init-seconds-before-status-checks", "1",
                                                     "--verbose", "--", "data/n.txt"], env=env)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert re.search(r"sbatch call: sbatch .*--comment rule_prepare .* -p debug ", proc.stdout)
    proc, _ = run_snakemake_on_slurm(work, PROFILE, ["--slurm-init-seconds-before-status-checks", "1",
                                                     "--verbose", "--", "runs/sparse.txt"], env=env)
    assert proc.returncode != 0
    assert re.search(r"sbatch call: sbatch .*--comment rule_train_sparse .*--gpus=1", proc.stdout), proc.stdout[-4000:]
    assert "Invalid generic resource (gres) specification" in proc.stdout
