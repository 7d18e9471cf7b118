"""Time and peak memory of ``prepare fashion_mnist`` on all 70,000 images (the issue asks < 15 s).

Fetches the raw files (Debian's copy or $NLA_DATA_DIR) into a temporary directory, then runs
``prepare`` twice, each in a fresh process so that its peak RSS is its own, and checks that
both outputs are byte-identical.  Usage: ``python benchmarks/bench_prepare.py [DATASET]``.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nonlinear_advantage.data import download

# Peak RSS from the child's own VmHWM: getrusage's ru_maxrss would count the forking parent's pages.
CHILD = """
import re, sys, time
from nonlinear_advantage.data import prepare
def hwm():
    return int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read())[1]) / 1024
base, t = hwm(), time.perf_counter()
prepare(sys.argv[1], sys.argv[2], sys.argv[3])
print(f"STATS {time.perf_counter() - t:.3f} {base:.0f} {hwm():.0f}", file=sys.stderr)
"""


def main(name: str = "fashion_mnist") -> None:
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        download(name, raw)
        outs = []
        for run in (1, 2):
            out = Path(tmp) / f"{name}{run}.pt"
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", CHILD, name, raw, out], capture_output=True, text=True)
            wall = time.perf_counter() - start
            if proc.returncode:
                sys.exit(f"prepare failed:\n{proc.stderr}")
            secs, base, peak = proc.stderr.split("STATS ")[1].split()
            print(f"run {run}: prepare {name}: {float(secs):.2f} s in prepare(), {wall:.2f} s for the process with"
                  f" its imports; peak RSS {peak} MiB ({base} MiB after imports);"
                  f" output {out.stat().st_size / 2**20:.1f} MiB")
            outs.append(out.read_bytes())
        print(f"byte-identical twice: {outs[0] == outs[1]}")


if __name__ == "__main__":
    main(*sys.argv[1:])
