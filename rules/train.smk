# Training: one job per cell (kind, architecture, precision, N) trains all seeds as one packed
# model. Resumes from results/checkpoints/<cell>/state.pt when a previous attempt was killed.


rule train:
    input:
        train_data,
    output:
        models=expand(f"{RUN}/model.safetensors", seed=SEEDS, allow_missing=True),
        logs=expand(f"{RUN}/train_log.parquet", seed=SEEDS, allow_missing=True),
        records=expand(f"{RUN}/run.json", seed=SEEDS, allow_missing=True),
    params:
        spec=spec_json,
        seeds=",".join(map(str, SEEDS)),
        dirs=run_dirs,
        checkpoint=lambda wc: f"results/checkpoints/{CELL.format(**cell_keys(wc))}/state.pt",
    conda:
        ENV
    log:
        f"results/logs/train/{CELL}.log",
    benchmark:
        f"results/benchmarks/train/{CELL}.tsv"
    threads: RT["threads"]
    resources:
        gpu=1 if USE_GPU else 0,
        device=config["device"],
        log_every=RT["log_every"],
        checkpoint_every=RT["checkpoint_every"],
        compile=str(RT["compile"]).lower(),
        cuda_graph=int(RT["cuda_graphs"]),
    shell:
        "python -m memcap train --spec {params.spec} --seeds {params.seeds} --data {input}"
        " --run-dirs {params.dirs} --checkpoint {params.checkpoint}"
        " --device {resources.device} --threads {threads}"
        " --log-every {resources.log_every}"
        " --checkpoint-every {resources.checkpoint_every} --compile {resources.compile}"
        " --cuda-graph {resources.cuda_graph}"
        " --label '{wildcards.kind} {wildcards.arch} {wildcards.precision} n={wildcards.n}'"
        " > {log} 2>&1"
