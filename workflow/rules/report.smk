rule aggregate:
    input:
        expand("runs/{run}/{file}", run=RUNS, file=plan.TRAIN_FILES),
        depth="results/depth.json",
    output:
        summary="results/summary.csv",
        curves="results/curves.csv",
        # Per dataset, a series per arm: what `dvc plots show` draws (dvc.yaml's plots).
        plots=directory("results/plots"),
    log:
        "logs/aggregate.log",
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        code=plan.code_digest("aggregate"),
    shell:
        "python -m nonlinear_advantage aggregate --params $NLA_PARAMS --out {output.summary}"
        " --depth {input.depth} --curves {output.curves} --plots {output.plots} runs > {log} 2>&1"


# The study's dense accuracies, collapse onsets and verdicts: DVC's metrics file (dvc exp show).
rule metrics:
    input:
        summary="results/summary.csv",
    output:
        "results/metrics.json",
    log:
        "logs/metrics.log",
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        analysis=config["analysis"],  # the verdict thresholds: a change recomputes the verdicts
        code=plan.code_digest("metrics"),
    shell:
        "python -m nonlinear_advantage metrics --summary {input.summary} --params $NLA_PARAMS"
        " --out {output} > {log} 2>&1"


rule figures:
    input:
        "results/summary.csv",
        "results/curves.csv",
        "results/depth.json",
        expand("runs/{run}/{file}", run=RUNS, file=("history.csv", "config.yaml")),
    output:
        report(
            directory("reports/figures"),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Figures",
        ),
    log:
        "logs/figures.log",
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        analysis=config["analysis"],  # the verdict thresholds: a change redraws
        code=plan.code_digest("figures"),
    shell:
        "python -m nonlinear_advantage figures --summary results/summary.csv --runs runs"
        " --depth results/depth.json --params $NLA_PARAMS --out {output} > {log} 2>&1"


rule report:
    input:
        summary="results/summary.csv",
        figures=ancient("reports/figures"),  # a directory: see rule prepare
    output:
        report("reports/report.pdf", caption="../report/report.rst", category="Report"),
    log:
        "logs/report.log",
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        analysis=config["analysis"],
        code=plan.code_digest("report"),
        # The training jobs' benchmark files, for the appendix: read, not an input (DVC writes none).
        benchmarks=compute.BENCHMARKS,
    shell:
        "python -m nonlinear_advantage report --summary {input.summary} --figures {input.figures}"
        " --params $NLA_PARAMS --benchmarks {params.benchmarks} --out {output} > {log} 2>&1"
