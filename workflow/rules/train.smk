# Every arm of the plan's arm table trains through this one rule (train_states, at the end, is it
# with more outputs). A training job depends on its resolved run config, its data, the file it
# starts from and the trainer's code, not on the plan: a new arm or registry row leaves existing
# runs alone. The config travels as the rule's params (Snakemake's params trigger compares it);
# DVC tracks the same config as the file its `configure` stage writes. $NLA_PARAMS: see the
# Snakefile.


# The resolved configs DVC's stages depend on, written here too so that `dvc commit` can adopt
# a Snakemake run. No job reads them: a job after one that runs is not checked for changed
# params in the same invocation, so the train rule takes its config from its params instead.
rule configure:
    output:
        directory("configs"),
    log:
        "logs/configure.log",
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        configs=plan.configs_digest(config),
        code=plan.code_digest("plan"),
    shell:
        "python -m nonlinear_advantage configure --params $NLA_PARAMS --out {output} > {log} 2>&1"


# The runs that keep states for the runs that continue them (the dense runs: one state per late
# start, which each late run reads) train through train_states, this rule with those files as
# outputs too: a rule has the same outputs for each of its jobs.
KEEPERS, KEPT = plan.state_keepers(config)


rule train:
    input:
        unpack(lambda wildcards: plan.run_inputs(config, wildcards.run)),
    output:
        **plan.train_outputs("{run}"),
    log:
        "logs/train/{run}.log",
    # Wall-clock, memory and CPU time of the job: the report's appendix sums them per arm.
    benchmark:
        f"{compute.BENCHMARKS}/train/{{run}}.tsv"
    wildcard_constraints:
        run=plan.one_of(run for run in RUNS if run not in KEEPERS),
    conda:
        "../envs/train.yaml"
    # The run config's threads (params.yaml train.threads): the trainer sets torch to exactly
    # that many, whatever Snakemake grants, so both tools give the same bytes on any machine.
    threads: lambda wildcards: plan.run_config(config, wildcards.run)["threads"]
    # mem_mb from the run's data, and with the profile's calibration a runtime from its epochs,
    # images and architecture (compute.py); --set-resources in a profile overrides either.
    resources:
        **compute.train_resources(config, COMPUTE),
        gpu=1,
    params:
        # A function of the wildcards only: Snakemake's params trigger ignores ones of the output.
        config=lambda wildcards: plan.run_config(config, wildcards.run),
        code=plan.code_digest("trainer"),
    shell:
        "python -m nonlinear_advantage train --params $NLA_PARAMS --run {wildcards.run}"
        " --out runs/{wildcards.run} > {log} 2>&1"


use rule train as train_states with:
    output:
        **plan.train_outputs("{run}", KEPT),
    wildcard_constraints:
        run=plan.one_of(KEEPERS),
