# Aggregation: run records -> tables (runs, memorization, mia, extraction, top_samples) ->
# capacity and the fitted laws -> one DuckDB file (built under a temporary name, then renamed).
COLLECTED = ["runs", "memorization", "memorization_by_reference", "mia", "extraction",
             "top_samples", "reference_models", "text_datasets"]


rule collect:
    input:
        runs=lambda wc: [f"{d}/run.json" for d in all_run_dirs()],
        scores=lambda wc: [f"{d}/score.json" for d in all_run_dirs()],
        evaluations=lambda wc: [f"{d}/evaluation.json" for d in all_run_dirs()],
        top=lambda wc: [f"{d}/top_samples.parquet" for d in all_run_dirs()],
        references=text_records()["references"],
        stats=text_records()["stats"],
    output:
        expand("results/tables/{name}.parquet", name=COLLECTED),
    params:
        dirs=lambda wc: all_run_dirs(),
        references=lambda wc, input: " ".join(["--references", *input.references])
        if input.references else "",
        stats=lambda wc, input: " ".join(["--text-stats", *input.stats]) if input.stats else "",
    conda:
        ENV
    log:
        "results/logs/collect.log",
    shell:
        "python -m memcap collect --run-dirs {params.dirs} --out-dir results/tables"
        " {params.references} {params.stats} > {log} 2>&1"


rule laws:
    input:
        runs="results/tables/runs.parquet",
        memorization="results/tables/memorization.parquet",
        mia="results/tables/mia.parquet",
    output:
        capacity="results/tables/capacity.parquet",
        laws="results/tables/laws.parquet",
        double_descent="results/tables/double_descent.parquet",
    params:
        bootstrap=config["laws"]["bootstrap"],
        ci=config["laws"]["ci"],
        seed=config["laws"]["seed"],
    conda:
        ENV
    log:
        "results/logs/laws.log",
    shell:
        "python -m memcap laws --runs {input.runs} --memorization {input.memorization}"
        " --mia {input.mia} --capacity-out {output.capacity} --laws-out {output.laws}"
        " --double-descent-out {output.double_descent}"
        " --bootstrap {params.bootstrap} --ci {params.ci} --seed {params.seed} > {log} 2>&1"


rule database:
    input:
        tables=expand("results/tables/{name}.parquet", name=COLLECTED + ["capacity", "laws", "double_descent"]),
        samples=lambda wc: [f"{d}/scores.parquet" for d in all_run_dirs()],
    output:
        "results/memcap.duckdb",
    conda:
        ENV
    log:
        "results/logs/database.log",
    shell:
        "python -m memcap database --tables {input.tables} --samples {input.samples}"
        " --out {output} > {log} 2>&1"
