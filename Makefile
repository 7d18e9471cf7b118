# All set-up lives here. `make reproduce` runs the study; `make test` runs the tests.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# The first interpreter on PATH that the pins support (pyproject: requires-python >= 3.11);
# a bare python3 is often older or newer than the one you want: name it with PYTHON=...
SUPPORTED := import sys; sys.exit(sys.version_info[:2] < (3, 11))
PYTHON ?= $(shell for p in python3.11 python3.12 python3.13 python3.14 python3; do \
	$$p -c '$(SUPPORTED)' 2>/dev/null && { echo $$p; break; }; done)
CORES ?= $(shell nproc)
export DVC_NO_ANALYTICS := 1
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup system-deps test lint reproduce clean-results bench

setup: $(VENV)/.installed system-deps

# The virtual environment, rebuilt when the package's pins change.
$(VENV)/.installed: pyproject.toml
	@test -n "$(PYTHON)" || { echo "make: no Python 3.11 or newer on PATH (tried python3.11 ... python3.14, python3);" \
		"install one, or name it: make PYTHON=/path/to/python3.x"; exit 2; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,cluster]'
	touch $@

# Debian packages: Fashion-MNIST offline, and poppler to read the PDF report back.
system-deps:
	@bash workflow/scripts/system_deps.sh

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

# The whole study on params.yaml (the demo) on all cores. Paper scale: see README.
reproduce: setup
	snakemake --profile profiles/default --cores $(CORES)
	@echo "results: results/summary.csv (one row per run; per-run files under runs/)"
	@echo "figures: reports/figures/    report: reports/report.pdf"

# Everything the pipeline made except the prepared data.
clean-results:
	rm -rf runs results logs reports/figures reports/report.pdf

bench: setup
	$(PY) benchmarks/bench_apl.py
	$(PY) benchmarks/bench_prepare.py
