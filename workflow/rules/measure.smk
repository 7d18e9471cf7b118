# Depth of every trained run in one job: the APL takes milliseconds a run, and a job per run
# would pay the start-up of torch for each.


rule measure:
    input:
        expand("runs/{run}/{file}", run=RUNS, file=("checkpoint.pt", "config.yaml")),
    output:
        "results/depth.json",
    log:
        "logs/measure.log",
    benchmark:
        f"{compute.BENCHMARKS}/measure.tsv"
    conda:
        "../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        code=plan.code_digest("measure"),
        depth_eps=config["analysis"]["depth_eps"],  # the *_eps columns' threshold: a change measures again
    shell:
        "python -m nonlinear_advantage measure --params $NLA_PARAMS --out {output} runs > {log} 2>&1"
