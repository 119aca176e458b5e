# Scoring: per-sample code lengths (bits) of every training and held-out sample under each
# seed's model, with the reference code length and mem_bits; one job per cell. Text cells
# read their references' scores of the pool (rules/text.smk).


rule score:
    input:
        unpack(lambda wc: cell_of(wc).references),
        models=run_files("model.safetensors"),
        train=lambda wc: cell_of(wc).train_data,
        heldout=lambda wc: cell_of(wc).heldout_data,
    output:
        scores=expand(f"{RUN}/scores.parquet", seed=SEEDS, allow_missing=True),
        records=expand(f"{RUN}/score.json", seed=SEEDS, allow_missing=True),
    params:
        cell=cell_json,
    conda:
        ENV
    log:
        f"results/logs/score/{CELL}.log",
    benchmark:
        f"results/benchmarks/score/{CELL}.tsv"
    threads: RUNTIME.threads
    resources:
        **MODEL_RESOURCES,
        mem_mb=model_mem_mb("score"),
    shell:
        f"python -m memcap score --cell {{params.cell}} {RUNTIME_ARGS} > {{log}} 2>&1"
