# Aggregation: run records -> runs/memorization tables -> capacity and the bits-per-parameter
# law -> one DuckDB file (built under a temporary name, then renamed into place).


rule collect:
    input:
        runs=lambda wc: [f"{d}/run.json" for d in all_run_dirs()],
        scores=lambda wc: [f"{d}/score.json" for d in all_run_dirs()],
    output:
        runs="results/tables/runs.parquet",
        memorization="results/tables/memorization.parquet",
    params:
        dirs=lambda wc: all_run_dirs(),
    conda:
        ENV
    log:
        "results/logs/collect.log",
    shell:
        "python -m memcap collect --run-dirs {params.dirs} --runs-out {output.runs}"
        " --memorization-out {output.memorization} > {log} 2>&1"


rule laws:
    input:
        runs=rules.collect.output.runs,
        memorization=rules.collect.output.memorization,
    output:
        capacity="results/tables/capacity.parquet",
        laws="results/tables/laws.parquet",
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
        " --capacity-out {output.capacity} --laws-out {output.laws}"
        " --bootstrap {params.bootstrap} --ci {params.ci} --seed {params.seed} > {log} 2>&1"


rule database:
    input:
        runs=rules.collect.output.runs,
        memorization=rules.collect.output.memorization,
        capacity=rules.laws.output.capacity,
        laws=rules.laws.output.laws,
        samples=lambda wc: [f"{d}/scores.parquet" for d in all_run_dirs()],
    output:
        "results/memcap.duckdb",
    conda:
        ENV
    log:
        "results/logs/database.log",
    shell:
        "python -m memcap database --runs {input.runs} --memorization {input.memorization}"
        " --capacity {input.capacity} --laws {input.laws} --samples {input.samples}"
        " --out {output} > {log} 2>&1"
