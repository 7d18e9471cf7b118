rule measure:
    input:
        checkpoint="runs/{run}/checkpoint.pt",
        config="runs/{run}/config.yaml",
    output:
        "runs/{run}/depth.json",
    log:
        "logs/measure/{run}.log",
    wildcard_constraints:
        run=r"[a-z0-9_]+/(baseline|dense|sparse|posthoc)/[^/]+",
    conda:
        "../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        "python -m nonlinear_advantage measure --run runs/{wildcards.run} --out {output} > {log} 2>&1"
