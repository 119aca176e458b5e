# Training: one job per cell (kind, architecture, precision, N) trains all seeds as one packed
# model. Resumes from the cell's checkpoint when a previous attempt was killed.


rule train:
    input:
        lambda wc: cell_of(wc).train_data,
    output:
        models=expand(f"{RUN}/model.safetensors", seed=SEEDS, allow_missing=True),
        logs=expand(f"{RUN}/train_log.parquet", seed=SEEDS, allow_missing=True),
        records=expand(f"{RUN}/run.json", seed=SEEDS, allow_missing=True),
    params:
        cell=cell_json,
    conda:
        ENV
    log:
        f"results/logs/train/{CELL}.log",
    benchmark:
        f"results/benchmarks/train/{CELL}.tsv"
    threads: RUNTIME.threads
    resources:
        **MODEL_RESOURCES,
        mem_mb=model_mem_mb("train"),
    shell:
        f"python -m memcap train --cell {{params.cell}} {RUNTIME_ARGS} > {{log}} 2>&1"
