rule measure:
    input:
        checkpoint="runs/{run}/checkpoint.pt",
        config="runs/{run}/config.yaml",
    output:
        "runs/{run}/depth.json",
    log:
        "logs/measure/{run}.log",
    conda:
        "../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        code=plan.code_digest("measure"),
    shell:
        "python -m nonlinear_advantage measure --run runs/{wildcards.run} --out {output} > {log} 2>&1"
