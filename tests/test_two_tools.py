"""Snakemake and DVC refuse to run the study beside each other in one checkout (studylock.py).

The unit tests drive DVC's own lock code (dvc.rwlock, zc.lockfile) against the module; the last
test starts both tools at once on the tiny study (90 s on 2 cores: the tool that goes on, then a
reference run).
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from dvc.fs import localfs
from dvc.lock import LockError
from dvc.rwlock import rwlock

from nonlinear_advantage import studylock
from nonlinear_advantage.errors import UserError
from repo_copy import ENV, copy_repo, sh


@pytest.fixture
def checkout(tmp_path):
    (tmp_path / ".dvc" / "tmp").mkdir(parents=True)
    return tmp_path


def dvc_runs_a_stage(checkout, outs=("runs",)):
    """DVC's check before it removes a stage's outputs and runs it (Stage.run is @rwlocked)."""
    tmp = str(checkout / ".dvc" / "tmp")
    return rwlock(tmp, localfs, "dvc repro", [], [str(checkout / out) for out in outs], False)


@pytest.fixture
def other_process():
    """A live process that is not this one: a pid to hold locks with."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_dvc_refuses_every_stage_while_snakemake_runs_and_runs_once_it_ends(checkout, other_process):
    pid = other_process.pid
    assert studylock.claim(checkout, "Snakemake", pid, "snakemake --cores 2")
    for outs in (["runs"], ["data/prepared/digits.pt"], ["reports/figures"]):
        with pytest.raises(LockError, match=rf"\(PID {pid}\): Snakemake is running this study: snakemake --cores 2"):
            with dvc_runs_a_stage(checkout, outs):
                pytest.fail("DVC ran a stage beside Snakemake")
    studylock.release(checkout, pid)
    with dvc_runs_a_stage(checkout):
        pass
    assert not json.loads((checkout / ".dvc" / "tmp" / "rwlock").read_text()).get("write")  # DVC's entry is gone


def test_snakemake_refuses_while_dvc_runs_a_stage(checkout, other_process):
    """A stage's command runs: DVC has released its repository lock, and its rwlock entry names it."""
    rw = checkout / ".dvc" / "tmp" / "rwlock"
    rw.write_text(json.dumps({"write": {str(checkout / "runs"): {"pid": other_process.pid, "cmd": "dvc repro"}}}))
    with pytest.raises(UserError, match=rf"DVC is running in this checkout \(pid {other_process.pid}: dvc repro\)"):
        studylock.claim(checkout)
    assert list(json.loads(rw.read_text())["write"]) == [str(checkout / "runs")]  # nothing entered


def test_snakemake_refuses_while_dvc_holds_its_lock(checkout):
    """Between stages DVC holds its repository lock (zc.lockfile: an flock, its pid inside)."""
    hold = textwrap.dedent(f"""
        import sys, time, zc.lockfile
        lock = zc.lockfile.LockFile({str(checkout / '.dvc' / 'tmp' / 'lock')!r})
        print("locked", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=rf"DVC is running in this checkout \(pid {proc.pid} holds "):
            studylock.claim(checkout)
    finally:
        proc.kill()
        proc.wait()
    assert studylock.claim(checkout)  # the lock file stays, but no one holds it


def test_stale_entries_of_killed_processes_are_ignored(checkout, capsys):
    gone = dead_pid()
    rw = checkout / ".dvc" / "tmp" / "rwlock"
    rw.write_text(json.dumps({"write": {str(checkout / "runs"): {"pid": gone, "cmd": "dvc repro"}},
                              "read": {str(checkout / "configs"): [{"pid": gone, "cmd": "dvc repro"}]}}))
    assert studylock.claim(checkout)  # a killed dvc repro does not stop Snakemake ...
    assert json.loads(rw.read_text()) == {"write": {str(checkout): {"pid": os.getpid(),
                                                                   "cmd": "Snakemake is running this study"}}}
    studylock.release(checkout)
    assert studylock.claim(checkout, pid=dead_pid())  # ... nor does a kill -9'ed Snakemake stop DVC
    with dvc_runs_a_stage(checkout):
        pass


def test_snakemake_start_exits_2_naming_dvc(checkout, other_process, capsys):
    rw = checkout / ".dvc" / "tmp" / "rwlock"
    rw.write_text(json.dumps({"write": {str(checkout / "runs"): {"pid": other_process.pid, "cmd": "dvc repro"}}}))
    with pytest.raises(SystemExit) as exit_:
        studylock.snakemake_start(checkout)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: DVC is running in this checkout (pid {other_process.pid}")


def test_a_checkout_without_dvc_has_nothing_to_exclude(tmp_path):
    assert not studylock.claim(tmp_path)
    assert not (tmp_path / ".dvc").exists()


@pytest.mark.slow
def test_both_tools_started_together_one_refuses_the_other_finishes(tmp_path):
    """The issue's probe: `dvc repro` and `snakemake` at once in one checkout of the tiny study."""
    race, reference = copy_repo(tmp_path / "race"), copy_repo(tmp_path / "reference")
    sh(race, "git", "init", "-q")
    sh(race, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "init")
    tools = {name: subprocess.Popen(cmd, cwd=race, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True)
             for name, cmd in (("dvc", ["dvc", "repro"]), ("snakemake", ["snakemake", "--cores", "2"]))}
    out = {name: proc.communicate(timeout=900)[0] for name, proc in tools.items()}
    failed = [name for name, proc in tools.items() if proc.returncode]
    assert len(failed) == 1, {name: (proc.returncode, out[name][-2000:]) for name, proc in tools.items()}
    if failed == ["snakemake"]:
        assert tools["snakemake"].returncode == 2, out["snakemake"]
        assert f"error: DVC is running in this checkout (pid {tools['dvc'].pid}" in out["snakemake"]
    else:
        assert f"(PID {tools['snakemake'].pid}): Snakemake is running this study" in out["dvc"], out["dvc"]
        assert not (race / "dvc.lock").exists()  # DVC ran no stage
    sh(reference, "snakemake", "--cores", "2")
    assert (race / "results" / "summary.csv").read_bytes() == (reference / "results" / "summary.csv").read_bytes()
