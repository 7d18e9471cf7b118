# One rule per arm. Each job's params carry its resolved run config, so Snakemake's params
# trigger reruns exactly the runs whose config changed; params.yaml itself is no input.

TRAIN_CMD = (
    "python -m nonlinear_advantage train --params {params.params_file} --run {params.run} --out runs/{params.run}"
    " > {log} 2>&1"
)


wildcard_constraints:
    seed=r"\d+",
    lam=r"[0-9][0-9.e+-]*",
    depth=r"\d+",
    kind="own|wide",


rule train_baseline:
    input:
        data="data/prepared/{dataset}.pt",
    output:
        **plan.train_outputs(plan.RUN_PATTERNS["baseline"]),
    log:
        "logs/train/{dataset}/baseline/d{depth}-{kind}-s{seed}.log",
    conda:
        "../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        gpu=1,
    params:
        params_file=PARAMS_FILE,
        run=plan.RUN_PATTERNS["baseline"],
        # A function of the wildcards only: Snakemake's params trigger ignores ones of the output.
        config=lambda wildcards: plan.run_config(
            config, plan.RUN_PATTERNS["baseline"].format(**wildcards)
        ),
    shell:
        TRAIN_CMD


rule train_dense:
    input:
        data="data/prepared/{dataset}.pt",
    output:
        **plan.train_outputs(plan.RUN_PATTERNS["dense"]),
    log:
        "logs/train/{dataset}/dense/s{seed}.log",
    conda:
        "../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        gpu=1,
    params:
        params_file=PARAMS_FILE,
        run=plan.RUN_PATTERNS["dense"],
        # A function of the wildcards only: Snakemake's params trigger ignores ones of the output.
        config=lambda wildcards: plan.run_config(
            config, plan.RUN_PATTERNS["dense"].format(**wildcards)
        ),
    shell:
        TRAIN_CMD


rule train_sparse:
    input:
        data="data/prepared/{dataset}.pt",
    output:
        **plan.train_outputs(plan.RUN_PATTERNS["sparse"]),
    log:
        "logs/train/{dataset}/sparse/lam{lam}-s{seed}.log",
    conda:
        "../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        gpu=1,
    params:
        params_file=PARAMS_FILE,
        run=plan.RUN_PATTERNS["sparse"],
        # A function of the wildcards only: Snakemake's params trigger ignores ones of the output.
        config=lambda wildcards: plan.run_config(
            config, plan.RUN_PATTERNS["sparse"].format(**wildcards)
        ),
    shell:
        TRAIN_CMD


rule train_posthoc:
    input:
        data="data/prepared/{dataset}.pt",
        dense="runs/{dataset}/dense/s{seed}/checkpoint.pt",
    output:
        **plan.train_outputs(plan.RUN_PATTERNS["posthoc"]),
    log:
        "logs/train/{dataset}/posthoc/lam{lam}-s{seed}.log",
    conda:
        "../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        gpu=1,
    params:
        params_file=PARAMS_FILE,
        run=plan.RUN_PATTERNS["posthoc"],
        # A function of the wildcards only: Snakemake's params trigger ignores ones of the output.
        config=lambda wildcards: plan.run_config(
            config, plan.RUN_PATTERNS["posthoc"].format(**wildcards)
        ),
    shell:
        TRAIN_CMD
