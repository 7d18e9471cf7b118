# All set-up lives here. `make reproduce` runs the study; `make test` runs the tests.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
CORES ?= $(shell nproc)
export DVC_NO_ANALYTICS := 1
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup system-deps test lint reproduce clean-results bench

setup: $(VENV)/.installed system-deps

# The virtual environment, rebuilt when the package's pins change.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
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
