#!/usr/bin/env bash
# The CUDA path checked for real, in one command (issue 13), within ~8 minutes on one GPU:
#   1 prepare   the full Fashion-MNIST from raw files carried with the call (download --source-dir, prepare);
#   2 bench     benchmarks/bench_trainer.py on cuda, batch 512, --dataloader: the trainer's images/s
#               against a plain DataLoader loop in the same run (target >= 3.5x);
#   3 train     ResNet-20 width 16, 15 epochs, full Fashion-MNIST, flip + crop 2: test accuracy
#               (target >= 93%) and wall time;
#   4 sizing    one epoch of ResNet-56 width 16 on 45k random 32x32x3 images at batch 128 and 512, and
#               the estimated wall time of config/paper.yaml (benchmarks/gpu_sizing.py);
#   5 pipeline  the tiny study (tests/fixtures/tiny_params.yaml, device cuda) end to end through
#               Snakemake, in a temporary copy of the repository;
#   6 settings  bench_trainer.py --settings: the default (bf16, channels_last, compiled) against NCHW,
#               fp32 and no compile. Last, because it compiles three times: it gets the time left.
# Every log, and summary.txt with one line of figures per step, goes into OUTDIR. A step that fails
# or runs out of time is marked so in summary.txt and the next step still runs; the exit code is
# the number of failed steps.
#
# Usage:  bash benchmarks/gpu_check.sh OUTDIR [--smoke] [--raw DIR] [--wheels DIR] [--budget SECONDS]
#   --smoke    the same steps on the CPU at tiny sizes (a Fashion-MNIST subset, tiny widths, 1-2
#              epochs), about a minute; tests/test_gpu_check.py runs it in `make test`.
#   --raw      the raw Fashion-MNIST .gz files (default .gpu_carry/fashion-mnist; with --smoke, falling
#              back to Debian's /usr/share/datasets/fashion-mnist).
#   --wheels   wheels to install when snakemake/jsonschema/reportlab are missing (default .whl).
#   --budget   seconds for all steps together (default 480; each step also has its own cap).
# Python: $PYTHON (default python3), with torch; the package runs from this checkout's src/.
#
# On a GPU machine that cannot download (its python3 has torch but no Snakemake): first, here,
#   bash benchmarks/gpu_wheels.sh       # stages .whl/ (~13 MiB) and .gpu_carry/fashion-mnist (~30 MiB)
# then carry .whl and .gpu_carry with the call and run `bash benchmarks/gpu_check.sh "$OUT"`.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="" SMOKE=0 RAW="" WHEELS="$ROOT/.whl" BUDGET=480
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) SMOKE=1 ;;
        --raw) RAW="$2"; shift ;;
        --wheels) WHEELS="$2"; shift ;;
        --budget) BUDGET="$2"; shift ;;
        -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) echo "unknown option $1" >&2; exit 64 ;;
        *) OUT="$1" ;;
    esac
    shift
done
[ -n "$OUT" ] || { echo "usage: $0 OUTDIR [--smoke] [--raw DIR] [--wheels DIR] [--budget SECONDS]" >&2; exit 64; }
mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)"
PY="$(command -v "${PYTHON:-python3}")" || { echo "no python: set PYTHON" >&2; exit 64; }
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
export DVC_NO_ANALYTICS=1 PYTHONUNBUFFERED=1 MPLBACKEND=Agg
DEADLINE=$((SECONDS + BUDGET))
FAILED=0
WORK="$(mktemp -d)"  # the data, the installed wheels, the repository copy: big, and not worth bringing back
trap 'rm -rf "$WORK"' EXIT

say() { echo "$*" | tee -a "$SUMMARY"; }
# step NAME CAP_SECONDS COMMAND...: run with its log in OUTDIR/NAME.log, capped by its own limit
# and by what is left of the budget (timeout kills the step's whole process group); record OK,
# FAILED or TIMEOUT and the seconds it took. COMMAND may be a function of this script.
step() {
    local name="$1" cap="$2"; shift 2
    local left=$((DEADLINE - SECONDS)) t0=$EPOCHREALTIME rc took
    [ "$left" -lt "$cap" ] && cap=$left
    if [ "$cap" -lt 5 ]; then say "$name: SKIPPED (out of time)"; FAILED=$((FAILED + 1)); return 1; fi
    echo "== $name (at most ${cap}s): $*" >&2
    if declare -F "$1" >/dev/null; then  # timeout runs programs: hand the function and its variables to bash
        timeout --kill-after=10 "$cap" bash -c "$(declare -p NA SPLIT RAW DATA OUT WORK PY DEVICE ROOT SMOKE);
            $(declare -f "$1"); set -o pipefail; $*" >"$OUT/$name.log" 2>&1
    else
        timeout --kill-after=10 "$cap" "$@" >"$OUT/$name.log" 2>&1
    fi
    rc=$?
    took=$(awk "BEGIN {printf \"%.1f\", $EPOCHREALTIME - $t0}")
    if [ $rc -eq 0 ]; then
        say "$name: OK in ${took}s"
    else
        if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
            say "$name: TIMEOUT after ${took}s"
        else
            say "$name: FAILED (exit $rc) in ${took}s"
        fi
        tail -n 15 "$OUT/$name.log" | sed 's/^/    /' >&2
        FAILED=$((FAILED + 1))
    fi
    return $rc
}

# ---- environment: this checkout's package, the carried wheels, `python` for the rules
if [ $SMOKE -eq 1 ]; then DEVICE=cpu; else DEVICE=cuda; fi
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import snakemake, jsonschema, reportlab" 2>/dev/null; then
    SITE="$WORK/site"
    if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
        echo "installing $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS into $SITE" >&2
        if "$PY" -m pip --version >/dev/null 2>&1; then
            "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$WHEELS"/*.whl \
                >"$OUT/install.log" 2>&1
        else  # no pip: a wheel is a zip laid out for site-packages
            "$PY" -c 'import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]' \
                "$SITE" "$WHEELS"/*.whl >"$OUT/install.log" 2>&1
        fi
        export PYTHONPATH="$PYTHONPATH:$SITE"
    fi
    "$PY" -c "import snakemake, jsonschema, reportlab" >>"$OUT/install.log" 2>&1 ||
        say "install: FAILED: snakemake, jsonschema or reportlab missing (see install.log); run benchmarks/gpu_wheels.sh and carry .whl"
fi
# The rules run `python -m nonlinear_advantage`: make `python` this interpreter (a wrapper, not a
# link, so that a venv's python keeps its site-packages).
mkdir -p "$WORK/bin"
printf '#!/bin/sh\nexec "%s" "$@"\n' "$PY" >"$WORK/bin/python"
chmod +x "$WORK/bin/python"
export PATH="$WORK/bin:$PATH"
{
    echo "date: $(date -Is)  host: $(uname -n)  cores: $(nproc)"
    "$PY" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'device', torch.cuda.get_device_name() if torch.cuda.is_available() else 'none')"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
} >"$OUT/environment.txt" 2>&1
say "mode: $([ $SMOKE -eq 1 ] && echo smoke || echo gpu); $(sed -n 2p "$OUT/environment.txt")"
NA=("$PY" -m nonlinear_advantage)

# ---- 1. prepare Fashion-MNIST from the carried raw files
if [ -z "$RAW" ]; then
    RAW="$ROOT/.gpu_carry/fashion-mnist"
    [ $SMOKE -eq 1 ] && [ ! -d "$RAW" ] && RAW=/usr/share/datasets/fashion-mnist
fi
DATA="$WORK/data/fashion_mnist.pt"
if [ $SMOKE -eq 1 ]; then SPLIT=(--train-size 512 --val-size 128 --test-size 256); else SPLIT=(); fi
prepare() {
    "${NA[@]}" download fashion_mnist --source-dir "$RAW" --out "$WORK/data/raw" &&
        "${NA[@]}" prepare fashion_mnist --raw "$WORK/data/raw" --out "$DATA" "${SPLIT[@]}"
}
FIGURES=("$PY" "$ROOT/benchmarks/gpu_check_figures.py")
step prepare 120 prepare && "${FIGURES[@]}" dataset "$DATA" | tee -a "$SUMMARY"

# ---- 2. the trainer against a plain DataLoader loop (the settings' comparison comes last: step 6)
if [ $SMOKE -eq 1 ]; then
    BENCH=(--device cpu --batch 64 --depth 8 --width 4 --epochs 2 --repeats 1 --workers 0)
else
    BENCH=(--device cuda --batch 512 --epochs 2 --repeats 1 --workers 4)
fi
# perf_hints: torch.compile says there when, and why, it skips CUDA graphs.
TORCH_LOGS=perf_hints step bench 150 "$PY" "$ROOT/benchmarks/bench_trainer.py" --data "$DATA" --dataloader "${BENCH[@]}"
grep -E "^(trainer|DataLoader|bare loop)" "$OUT/bench.log" | sed 's/^/  /' | tee -a "$SUMMARY"

# ---- 3. ResNet-20 width 16, 15 epochs, flip + crop
if [ $SMOKE -eq 1 ]; then EPOCHS=1 DEPTH=8 WIDTH=4 BATCH=64; else EPOCHS=15 DEPTH=20 WIDTH=16 BATCH=512; fi
cat >"$OUT/train.yaml" <<EOF
name: gpu_check/resnet${DEPTH}-w${WIDTH}
data: $DATA
model: {arch: resnet, depth: $DEPTH, width: $WIDTH}
epochs: $EPOCHS
batch_size: ${TRAIN_BATCH:-$BATCH}
optimizer: {lr: ${TRAIN_LR:-0.2}, momentum: 0.9, nesterov: true, weight_decay: 5.0e-4}
schedule: {kind: onecycle, warmup_epochs: 1}
augment: {flip: true, crop: 2}
device: $DEVICE
EOF
step train 180 "${NA[@]}" train --config "$OUT/train.yaml" --out "$OUT/train" &&
    "${FIGURES[@]}" train "$OUT/train" | tee -a "$SUMMARY"

# ---- 4. ResNet-56 epoch times and the paper study's estimate
if [ $SMOKE -eq 1 ]; then
    SIZING=(--device cpu --n 128 --val 32 --test 32 --depth 8 --width 4 --batches 32 64)
else
    SIZING=(--device cuda --batches 128 512)
fi
step sizing 240 "$PY" "$ROOT/benchmarks/gpu_sizing.py" --out "$OUT/sizing" --params "$ROOT/config/paper.yaml" "${SIZING[@]}"
grep -E "^(epoch at|estimate|plan)" "$OUT/sizing.log" | sed 's/^/  /' | tee -a "$SUMMARY"

# ---- 5. the tiny study end to end through Snakemake, in a copy of the repository
pipeline() {
    local work="$WORK/repo"
    mkdir -p "$work"
    # The checkout without what is big, ignored or this run's own output (OUTDIR may lie inside).
    # (git is not needed: the GPU machine gets a copy of the working tree without .git.)
    tar -C "$ROOT" --exclude=./.git --exclude=./.venv --exclude=./.whl --exclude=./.gpu_carry \
        --exclude=./data --exclude=./runs --exclude=./results --exclude=./logs --exclude=./.snakemake \
        --exclude=./reports/figures --exclude=./reports/report.pdf --exclude=./.dvc/cache --exclude=./.dvc/tmp \
        --exclude="./${OUT#"$ROOT"/}" --exclude='__pycache__' -cf - . | tar -C "$work" -xf - || return 1
    "$PY" - "$ROOT/tests/fixtures/tiny_params.yaml" "$work/params.yaml" "$DEVICE" "$SMOKE" <<'EOF' || return 1
import sys, yaml
params = yaml.safe_load(open(sys.argv[1]))
params["train"]["device"] = sys.argv[3]
if sys.argv[3] == "cuda":  # the CUDA defaults (bf16, channels_last); compile stays off: 9 runs x ~30 s
    params["train"].update(precision="auto", channels_last="auto")
if sys.argv[4] == "1":  # smoke: one run per arm (4 runs, 13 jobs), to stay within a minute on 2 cores
    params["sweep"]["shifts"] = params["sweep"]["shifts"][-1:]
    params["baseline"].update(depths=params["baseline"]["depths"][:1], widths=["own"])
open(sys.argv[2], "w").write(yaml.safe_dump(params, sort_keys=False))
EOF
    (cd "$work" && "$PY" -m snakemake --cores "$(nproc)" --scheduler greedy)
    local rc=$?
    if [ $rc -ne 0 ]; then  # the failing jobs' own logs say why
        grep -rlE "Traceback|[Ee]rror" "$work/logs" 2>/dev/null | head -n 3 | while read -r log; do
            echo "---- ${log#"$work"/}"; tail -n 15 "$log"
        done
    fi
    mkdir -p "$OUT/pipeline"
    cp -r "$work/results" "$work/logs" "$work/reports" "$work/params.yaml" "$OUT/pipeline/" 2>/dev/null
    return $rc
}
step pipeline 200 pipeline && "${FIGURES[@]}" pipeline "$OUT/pipeline" "$DEVICE" | tee -a "$SUMMARY"

# ---- 6. the settings' effects (bench_trainer --settings): last, as it compiles most; gets what time is left
if [ $SMOKE -eq 1 ]; then SETTINGS=(--settings nchw); else SETTINGS=(--settings); fi
TORCH_LOGS=perf_hints step settings 200 "$PY" "$ROOT/benchmarks/bench_trainer.py" --data "$DATA" "${BENCH[@]}" "${SETTINGS[@]}"
grep -E "^[A-Za-z0-9. ]{14} .*(images/s|failed)" "$OUT/settings.log" | sed 's/^/  /' | tee -a "$SUMMARY"

say "done: $FAILED step(s) failed; logs in $OUT"
exit $FAILED
