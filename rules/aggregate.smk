# Aggregation: run records -> tables (collect) -> capacity, the fitted laws and memorization
# with its capacity ratio (laws) -> one DuckDB file (built under a temporary name, renamed).

# Small jobs over the collected tables run where Snakemake runs, even on a cluster.
localrules:
    collect,
    laws,
    database,
    bracket,


rule collect:
    input:
        runs=lambda wc: [f"{d}/run.json" for d in all_run_dirs()],
        scores=lambda wc: [f"{d}/score.json" for d in all_run_dirs()],
        evaluations=lambda wc: [f"{d}/evaluation.json" for d in all_run_dirs()],
        top=lambda wc: [f"{d}/top_samples.parquet" for d in all_run_dirs()],
        # the plateau estimate of each run is fitted to its training log
        logs=lambda wc: [f"{d}/train_log.parquet" for d in all_run_dirs()],
        # the false-positive floor and the reference's quality come from the samples
        samples=lambda wc: [f"{d}/scores.parquet" for d in all_run_dirs()],
        quantized=lambda wc: [f"{d}/{name}" for d in all_quantized_dirs()
                              for name in ("quant.json", "score.json", "evaluation.json")],
        references=text_records()["references"],
        stats=text_records()["stats"],
    output:
        tables=[table(name) for name in COLLECTED],
        memorization=COLLECTED_MEMORIZATION,
    params:
        dirs=lambda wc: all_run_dirs(),
        quantized=lambda wc: all_quantized_dirs(),
    conda:
        ENV
    log:
        "results/logs/collect.log",
    shell:
        "python -m memcap collect --run-dirs {params.dirs} --references {input.references}"
        f" --text-stats {{input.stats}} --tables-dir {TABLES_DIR}"
        " --quantized-dirs {params.quantized}"
        " --memorization {output.memorization} > {log} 2>&1"


rule laws:
    input:
        runs=table("runs"),
        memorization=COLLECTED_MEMORIZATION,
        mia=table("mia"),
        quantized_runs=table("quantized_runs"),
        quantized_mia=table("quantized_mia"),
    output:
        [table(name) for name in FITTED],
    params:
        settings=shlex.quote(json.dumps(config["laws"], sort_keys=True)),
    conda:
        ENV
    log:
        "results/logs/laws.log",
    shell:
        "python -m memcap laws --runs {input.runs} --memorization {input.memorization}"
        " --mia {input.mia} --quantized-runs {input.quantized_runs}"
        " --quantized-mia {input.quantized_mia} --out {output} --settings {params.settings}"
        " > {log} 2>&1"


rule database:
    input:
        # verify.enabled: the predict-then-verify table joins the database and the report
        tables=([table(name) for name in TABLES] + [VERIFY_TABLE] * VERIFY["enabled"])
        if GRID else [],
        samples=lambda wc: [f"{d}/scores.parquet" for d in all_run_dirs()],
        quantized_samples=lambda wc: [f"{d}/scores.parquet" for d in all_quantized_dirs()],
        audit_tables=audit_files()["tables"],
        audit_samples=audit_files()["samples"],
    output:
        DATABASE,
    conda:
        ENV
    log:
        "results/logs/database.log",
    shell:
        "python -m memcap database --tables {input.tables} --samples {input.samples}"
        " --quantized-samples {input.quantized_samples}"
        " --audit-tables {input.audit_tables} --audit-samples {input.audit_samples}"
        " --out {output} > {log} 2>&1"


# `snakemake --cores 2 bracket` (with the run's --configfile): a config overlay adding, per
# synthetic architecture whose maximum the grid does not bracket, the next N
# (capacity.bracket_next_n; docs/science.md#bracketing). Rerun with it as the last
# --configfile: only the new cells train, score and evaluate.
rule bracket:
    input:
        DATABASE,
    output:
        BRACKET,
    params:
        grid=shlex.quote(json.dumps({"architectures": config["architectures"],
                                     "dataset_sizes": SYN["dataset_sizes"]}, sort_keys=True)),
    conda:
        ENV
    log:
        "results/logs/bracket.log",
    shell:
        "python -m memcap bracket --grid {params.grid} --database {input} --out {output}"
        " 2>&1 | tee {log}"
