"""One tool at a time in a checkout: Snakemake and DVC refuse to run the study beside each other.

Both run the same commands into the same files, and each deletes what it takes for a failed or
stale output: two at once lose finished runs. The exclusion uses DVC's own records in
``.dvc/tmp``, so DVC needs nothing of this package to keep to it:

* ``lock``: DVC's repository lock (an flock; the file holds its pid), held by ``dvc repro`` and
  ``dvc exp run`` from start to end, except while a stage's command runs;
* ``rwlock``: JSON, the paths that running stages write and read, each with the pid and command
  line of its process; edited under the flock of ``rwlock.lock``. Before DVC removes a stage's
  outputs and runs it, it checks them here and refuses a path that a live process writes. An
  entry whose process is gone is stale: DVC drops it with a warning, and so does this module.

Snakemake's side is :func:`snakemake_start`, the Snakefile's ``onstart`` hook: it runs in the
main process only, when jobs are about to run (not for a dry run; a job, a SLURM one too, runs
with ``--no-hooks``). Under ``rwlock.lock`` it refuses (exit 2, naming DVC's pid) while DVC holds
its lock or has a live entry, and otherwise enters Snakemake (its pid) as the writer of the whole
checkout, so that a ``dvc repro`` started later refuses every stage, naming Snakemake's pid. The
two checks and the entry happen under one flock, and DVC moves between its lock and its entries
only while it holds either, so a start at the same moment cannot slip between them. The entry is
removed when Snakemake ends (``onsuccess``, ``onerror``, or at exit); after a kill -9 its pid is
dead and it is ignored. A checkout without ``.dvc`` has no DVC to exclude. DVC's ``hardlink_lock``
setting (for NFS) uses another kind of flock, which this module does not take.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import UserError

DVC_TMP = Path(".dvc") / "tmp"
WAIT_S = 3.0  # as DVC waits for its own locks


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (what DVC asks too, with psutil)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: it exists
        return True
    return True


@contextlib.contextmanager
def _flocked(path: Path) -> Iterator[None]:
    """The flock DVC's zc.lockfile takes on ``path``, waiting up to WAIT_S for it."""
    with open(path, "a+") as f:
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise UserError(f"{path} stays locked: DVC is editing its lock of running stages") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def repo_lock_holder(tmp: Path) -> int | None:
    """The pid of the process holding DVC's repository lock (0: not recorded); None when it is free."""
    path = tmp / "lock"
    if not path.is_file():
        return None
    with open(path) as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = f.read().strip()
            return int(text) if text.isdigit() else 0
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    return None


def _read(tmp: Path) -> dict:
    path = tmp / "rwlock"
    try:
        lock = json.loads(path.read_text() or "{}")
    except FileNotFoundError:
        return {}
    except ValueError:
        raise UserError(f"{path} is not valid JSON (DVC's record of running stages): delete it if no dvc "
                        "process runs in this checkout") from None
    return lock if isinstance(lock, dict) else {}


def _write(tmp: Path, lock: dict) -> None:
    lock = {mode: entries for mode, entries in lock.items() if entries}  # as DVC leaves it: no empty modes
    (tmp / "rwlock").write_text(json.dumps(lock))


def _entries(lock: dict) -> Iterator[dict]:
    """Every process entry of an rwlock: the one writer of a path, the readers of a path."""
    yield from (lock.get("write") or {}).values()
    for infos in (lock.get("read") or {}).values():
        yield from infos


def _keep(lock: dict, drop) -> dict:
    """``lock`` without the entries ``drop(info)`` says to drop."""
    write = {path: info for path, info in (lock.get("write") or {}).items() if not drop(info)}
    read = {path: kept for path, infos in (lock.get("read") or {}).items()
            if (kept := [info for info in infos if not drop(info)])}
    return {"write": write, "read": read}


def claim(root=".", tool: str = "Snakemake", pid: int | None = None, command: str = "") -> bool:
    """Enter ``tool`` (process ``pid``) in DVC's rwlock as the writer of the whole checkout, or raise a
    UserError naming DVC's pid while DVC runs here. False where the checkout has no DVC."""
    root, pid = Path(root).absolute(), pid or os.getpid()
    if not (root / ".dvc").is_dir():
        return False
    tmp = root / DVC_TMP
    tmp.mkdir(exist_ok=True)
    why = f"{tool} will not run the study beside it: wait for it to end, or stop it"
    with _flocked(tmp / "rwlock.lock"):
        lock = _read(tmp)
        live = [info for info in _entries(lock) if info.get("pid") != pid and _alive(info.get("pid", 0))]
        if live:
            raise UserError(f"DVC is running in this checkout (pid {live[0]['pid']}: {live[0].get('cmd', '?')}); "
                            f"{why}")
        holder = repo_lock_holder(tmp)
        if holder is not None and holder != pid:
            raise UserError(f"DVC is running in this checkout (pid {holder or 'unknown'} holds {tmp / 'lock'}); "
                            f"{why}")
        lock = _keep(lock, lambda info: not _alive(info.get("pid", 0)))  # stale: their process is gone
        entry = {"pid": pid, "cmd": f"{tool} is running this study" + (f": {command}" if command else "")}
        for path in {str(root), os.path.realpath(root)}:
            lock["write"][path] = entry
        _write(tmp, lock)
    return True


def release(root=".", pid: int | None = None) -> None:
    """Remove the entries of process ``pid`` (default: this one) from DVC's rwlock; no error if none."""
    tmp, pid = Path(root).absolute() / DVC_TMP, pid or os.getpid()
    if not (tmp / "rwlock").is_file():
        return
    with _flocked(tmp / "rwlock.lock"):
        lock = _read(tmp)
        if any(info.get("pid") == pid for info in _entries(lock)):
            _write(tmp, _keep(lock, lambda info: info.get("pid") == pid))


def snakemake_start(root=".") -> None:
    """The Snakefile's ``onstart``: claim the checkout for this Snakemake process, or end it with exit 2."""
    command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
    try:
        if claim(root, "Snakemake", os.getpid(), command):
            atexit.register(release, Path(root).absolute(), os.getpid())
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
