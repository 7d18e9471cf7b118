# Every arm of the plan's arm table trains through this one rule. Its inputs (the prepared
# data, and the checkpoint a post-hoc run starts from) come from the plan; its params carry
# the resolved run config and the digest of the code it runs, so a changed run, or a changed
# trainer, reruns exactly what it changes. $NLA_PARAMS: see the Snakefile.


rule train:
    input:
        unpack(lambda wildcards: plan.run_inputs(config, wildcards.run)),
    output:
        **plan.train_outputs("{run}"),
    log:
        "logs/train/{run}.log",
    conda:
        "../envs/train.yaml"
    # The run config's threads (params.yaml train.threads): the trainer sets torch to exactly
    # that many, whatever Snakemake grants, so both tools give the same bytes on any machine.
    threads: lambda wildcards: plan.run_config(config, wildcards.run)["threads"]
    resources:
        mem_mb=4000,
        gpu=1,
    params:
        # A function of the wildcards only: Snakemake's params trigger ignores ones of the output.
        config=lambda wildcards: plan.run_config(config, wildcards.run),
        code=plan.code_digest("trainer"),
    shell:
        "python -m nonlinear_advantage train --params $NLA_PARAMS --run {wildcards.run}"
        " --out runs/{wildcards.run} > {log} 2>&1"
