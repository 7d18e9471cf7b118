wildcard_constraints:
    dataset="[a-z0-9_]+",


rule download:
    output:
        directory("data/raw/{dataset}"),
    log:
        "logs/download/{dataset}.log",
    conda:
        "../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        row=lambda wildcards: plan.dataset_row(wildcards.dataset),
        code=plan.code_digest("data"),
    shell:
        "python -m nonlinear_advantage download {wildcards.dataset} --out {output} > {log} 2>&1"


rule prepare:
    input:
        # ancient(): a directory has no checksum, and a file time alone (dvc checkout/pull
        # sets fresh ones) must not rerun the study; the raw files are checksummed anyway.
        ancient("data/raw/{dataset}"),
    output:
        "data/prepared/{dataset}.pt",
    log:
        "logs/prepare/{dataset}.log",
    conda:
        "../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        split=lambda wildcards: plan.prepare_args(config, wildcards.dataset),
        row=lambda wildcards: plan.dataset_row(wildcards.dataset),
        code=plan.code_digest("data"),
    shell:
        "python -m nonlinear_advantage prepare {wildcards.dataset} --raw {input} --out {output} {params.split} > {log} 2>&1"
