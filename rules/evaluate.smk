# Evaluation: membership inference (loss, reference-calibrated, zlib and Min-K% attacks on
# members and non-members drawn alike), greedy extraction from prefixes, and the most memorized
# samples; one job per cell.


rule evaluate:
    input:
        models=run_files("model.safetensors"),
        scores=run_files("scores.parquet"),
        train=lambda wc: cell_of(wc).train_data,
        heldout=lambda wc: cell_of(wc).heldout_data,
        tokenizer=lambda wc: [f"{TOKENIZER}/manifest.json"] if wc.kind == "text" else [],
    output:
        records=expand(f"{RUN}/evaluation.json", seed=SEEDS, allow_missing=True),
        top=expand(f"{RUN}/top_samples.parquet", seed=SEEDS, allow_missing=True),
        sets=expand(f"{RUN}/mia_sets.parquet", seed=SEEDS, allow_missing=True),
    params:
        cell=cell_json,
        settings=shlex.quote(json.dumps(config["evaluate"], sort_keys=True)),
    conda:
        ENV
    log:
        f"results/logs/evaluate/{CELL}.log",
    benchmark:
        f"results/benchmarks/evaluate/{CELL}.tsv"
    threads: RUNTIME.threads
    resources:
        **MODEL_RESOURCES,
        mem_mb=model_mem_mb("evaluate"),
    shell:
        "python -m memcap evaluate --cell {params.cell} --settings {params.settings}"
        f" {RUNTIME_ARGS} > {{log}} 2>&1"
