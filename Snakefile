"""The study as a Snakemake workflow: download -> train -> measure -> aggregate -> figures -> report.

Thin on purpose: the rules live in workflow/rules/, and every rule calls one command of
the package, exactly as dvc.yaml does. Parameters come from params.yaml, or from the one
file given with --configfile (config/paper.yaml); it is checked against the schema.
"""

import os
import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")

# The rules' jobs run `python -m nonlinear_advantage`; make this checkout's package importable
# for them too (a conda env from workflow/envs/ holds the dependencies, not the package).
SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)
os.environ.update(
    PYTHONPATH=os.pathsep.join(filter(None, [SRC, os.getenv("PYTHONPATH")]))
)

from nonlinear_advantage import compute, plan, studylock

# The Slurm profile's calibration of the training jobs' time limits (compute.py): Snakemake
# hands it over as config, beside the params, so it is taken out before they are checked.
COMPUTE = compute.Calibration.from_config(config.pop(compute.CONFIG_KEY, None))

# The trainer and aggregate read the params file themselves, so they must see what Snakemake
# sees: one whole file, never a merge of two (no configfile: directive) nor --config edits.
PARAMS_FILE = plan.params_file(workflow.overwrite_configfiles)
if not config:
    config.update(plan.read_params(PARAMS_FILE))
plan.check_same_as_file(config, PARAMS_FILE)
# The schema's check names the key and the file (sweep.shifts[2]: ...) and fills in defaults.
config.update(plan.validate(config, source=PARAMS_FILE))

RUNS = plan.run_ids(config)


# The commands read the params file from $NLA_PARAMS: its path is neither a param nor part
# of a command's text, so the same params under another file name (--configfile) rerun nothing.
os.environ.update(NLA_PARAMS=PARAMS_FILE)


# {run} is exactly a run of the plan.
wildcard_constraints:
    run=plan.one_of(RUNS),


# One tool at a time: while DVC runs the study here, Snakemake stops (exit 2, naming DVC's pid);
# while Snakemake does, `dvc repro` refuses every stage, naming Snakemake's pid. Hooks run in the
# main process only, when jobs are to run: not for -n, nor in a job (SLURM's run with --no-hooks).
onstart:
    studylock.snakemake_start()


onsuccess:
    studylock.release()


onerror:
    studylock.release()


# `snakemake --report report.html`: the figures and the PDF, with their captions.
report: "workflow/report/workflow.rst"


include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/measure.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        "results/summary.csv",
        "results/metrics.json",
        "reports/figures",
        "reports/report.pdf",
        "configs",
