#!/usr/bin/env bash
# Stage here what benchmarks/gpu_check.sh needs on a GPU machine that cannot download:
#   .whl/                      wheels of what its python3 lacks (Snakemake, jsonschema, reportlab and
#                              their dependencies) for CPython 3.12 on manylinux x86_64;
#   .gpu_carry/fashion-mnist/  the four raw Fashion-MNIST .gz files.
# Both folders are git-ignored; carry them with the call (`run`'s carry: [".whl", ".gpu_carry"]).
# The GPU machine's python3 already has torch 2.11, torchvision 0.26, numpy, pandas, matplotlib,
# pyyaml, scikit-learn and tqdm (and so their dependencies pillow, jinja2, markupsafe, ...).
# Left out on purpose: pulp (16 MiB of CBC binaries; Snakemake imports it only for its ILP
# scheduler, and gpu_check.sh runs `--scheduler greedy`), pyyaml and pillow (present there),
# dvc (not needed: the check drives the pipeline through Snakemake only).
# Every wheel's Requires-Dist is checked against this list plus what the machine has, and the
# carried total against the 64 MiB limit.
# Usage: bash benchmarks/gpu_wheels.sh [--fmnist-source DIR]   (default /usr/share/datasets/fashion-mnist)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WHL="$ROOT/.whl"
CARRY="$ROOT/.gpu_carry"
SOURCE=/usr/share/datasets/fashion-mnist
[ "${1:-}" = "--fmnist-source" ] && SOURCE="$2"
PIP=(python3 -m pip)

# The pins of pyproject.toml (snakemake, jsonschema, reportlab) and of their dependencies as the
# project's venv resolves them (`pip install --dry-run --report` on those three).
WHEELS=(
    snakemake==9.27.1 jsonschema==4.26.0 reportlab==5.1.0
    # snakemake
    conda-inject==1.3.2 configargparse==1.9.0 docutils==0.22.4 dpath==2.2.0
    gitpython==3.2.1 gitdb==4.0.12 smmap==5.0.3 humanfriendly==10.0 immutables==0.21
    nbformat==5.11.1 fastjsonschema==2.22.3 jupyter-core==5.9.1 traitlets==5.16.1 platformdirs==4.14.8
    psutil==7.2.2 requests==2.34.2 certifi==2026.10.19.post1 charset-normalizer==3.5.3 idna==3.20
    urllib3==2.8.0 smart-open==7.7.1 wrapt==2.5.2 tabulate==0.10.0 tenacity==9.2.1 throttler==1.2.3
    yte==1.9.4 argparse-dataclass==2.0.0
    snakemake-interface-common==1.23.0 snakemake-interface-executor-plugins==9.4.0
    snakemake-interface-logger-plugins==2.1.0 snakemake-interface-report-plugins==1.3.0
    snakemake-interface-scheduler-plugins==2.0.2 snakemake-interface-storage-plugins==4.4.1
    sqlmodel==0.0.37 sqlalchemy==2.0.58 greenlet==3.5.6 pydantic==2.14.4 pydantic-core==2.50.5
    annotated-types==0.8.0 typing-inspection==0.4.5
    # jsonschema
    attrs==26.1.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1
    # small, and torch/matplotlib bring them anyway: carried so that no version there can surprise
    jinja2==3.1.6 markupsafe==3.0.4 packaging==25.0 typing-extensions==4.16.0
)
# Published as a source archive only: built here into a pure-Python wheel.
SDIST_ONLY=(connection-pool==0.0.3)
# On the GPU machine already, or not needed there (see above): Requires-Dist may name these.
PRESENT="pyyaml pillow pulp numpy torch torchvision pandas matplotlib scikit-learn tqdm"

mkdir -p "$WHL"
"${PIP[@]}" download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$WHL" "${WHEELS[@]}"
for spec in "${SDIST_ONLY[@]}"; do
    ls "$WHL"/"$(echo "${spec%%==*}" | tr - _)"-*.whl >/dev/null 2>&1 ||
        "${PIP[@]}" wheel --quiet --no-deps -w "$WHL" "$spec"
done

# Every requirement (for CPython 3.12 on Linux, no extras) is a carried wheel or PRESENT.
python3 - "$WHL" "$PRESENT" <<'EOF'
import re, sys, zipfile
from pathlib import Path
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name as canon

env = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
       "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
       "platform_python_implementation": "CPython", "os_name": "posix", "extra": ""}
wheels = sorted(Path(sys.argv[1]).glob("*.whl"))
have = {canon(w.name.split("-")[0]) for w in wheels} | {canon(n) for n in sys.argv[2].split()}
missing = {}
for w in wheels:
    with zipfile.ZipFile(w) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        for line in z.read(meta).decode().splitlines():
            if line.startswith("Requires-Dist:"):
                req = Requirement(line.split(":", 1)[1].strip())
                if (req.marker is None or req.marker.evaluate(env)) and canon(req.name) not in have:
                    missing.setdefault(canon(req.name), []).append(w.name.split("-")[0])
if missing:
    sys.exit("not carried and not on the GPU machine: " + ", ".join(f"{k} (for {', '.join(v)})" for k, v in missing.items()))
print(f"{len(wheels)} wheels; every Requires-Dist is carried or present there")
EOF

mkdir -p "$CARRY/fashion-mnist"
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    cp -u "$SOURCE/$f.gz" "$CARRY/fashion-mnist/"
done

size() { du -sb "$@" | awk '{s += $1} END {print s}'; }
total=$(size "$WHL" "$CARRY")
printf 'carry: .whl %.1f MiB + .gpu_carry %.1f MiB = %.1f MiB (limit 64 MiB)\n' \
    "$(awk "BEGIN {print $(size "$WHL") / 1048576}")" "$(awk "BEGIN {print $(size "$CARRY") / 1048576}")" \
    "$(awk "BEGIN {print $total / 1048576}")"
[ "$total" -le $((60 * 1048576)) ] || { echo "too big to carry: keep it under 60 MiB" >&2; exit 1; }
