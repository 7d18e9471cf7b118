#!/usr/bin/env bash
# The pipeline's overheads and the demo's wall time:
#   1. a no-op `snakemake -n` and a no-op `dvc status` after a full run of the tiny study
#      (tests/fixtures/tiny_params.yaml; target: under 3 s each);
#   2. `make reproduce` on the default params.yaml (target: under 10 minutes on 2 cores).
# Everything runs in temporary copies of the repository; this checkout is left untouched.
#   3. the demo's training share of core time (Σ training wall times / (wall time × cores)).
# Usage: benchmarks/bench_pipeline.sh [--no-reproduce | --only-reproduce]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$ROOT/.venv"
export PATH="$VENV/bin:$PATH" DVC_NO_ANALYTICS=1
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

copy_repo() {  # the files git sees, without .venv
    mkdir -p "$1"
    (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard) |
        (cd "$ROOT" && xargs -0 cp -P --parents -t "$1")
}
seconds() {  # wall time of a command, or FAILED
    local t0=$EPOCHREALTIME
    "$@" >/dev/null 2>&1 || { echo "FAILED: $*"; return 1; }
    echo "$EPOCHREALTIME - $t0" | bc
}

if [ "${1:-}" != "--only-reproduce" ]; then
copy_repo "$WORK/tiny"
cp "$ROOT/tests/fixtures/tiny_params.yaml" "$WORK/tiny/params.yaml"
cd "$WORK/tiny"
git init -q && git -c user.name=b -c user.email=b@b commit -q --allow-empty -m init && dvc init -q
echo "tiny study ($(nproc) cores):"
echo "  full snakemake run:  $(seconds snakemake --cores all) s"
dvc commit --force --quiet  # DVC adopts Snakemake's outputs: both are now up to date
seconds snakemake --cores all -n >/dev/null  # warm the file cache once
echo "  no-op snakemake -n:  $(seconds snakemake --cores all -n) s"
echo "  no-op dvc status:    $(seconds dvc status) s"
fi

if [ "${1:-}" != "--no-reproduce" ]; then
    copy_repo "$WORK/demo"
    cd "$WORK/demo"
    # The set-up is done already: use this checkout's venv and don't remake it.
    echo "make reproduce on params.yaml..."
    t0=$EPOCHREALTIME
    make VENV="$VENV" -o "$VENV/.installed" reproduce >"$WORK/reproduce.log" 2>&1 || { tail -n 30 "$WORK/reproduce.log"; exit 1; }
    wall=$(echo "$EPOCHREALTIME - $t0" | bc)
    echo "  make reproduce:      $wall s"
    tail -n 2 "$WORK/reproduce.log" | sed 's/^/  /'
    # The share of core time spent training: Σ of the runs' own training wall times over
    # wall time × cores. The rest is process start-up, measuring, aggregating and reporting.
    python3 - "$wall" "$(nproc)" <<'PY'
import json, pathlib, sys
wall, cores = float(sys.argv[1]), int(sys.argv[2])
times = [json.loads(p.read_text())["wall_time_s"] for p in pathlib.Path("runs").rglob("metrics.json")]
print(f"  training share:      {sum(times):.0f} s of training in {len(times)} runs / ({wall:.0f} s x {cores} cores)"
      f" = {sum(times) / (wall * cores):.2f}")
PY
    echo "  summary.csv sha256:  $(sha256sum results/summary.csv | cut -d' ' -f1)"
fi
