# Training: one job per cell (kind, architecture, precision, N) trains all seeds as one packed
# model. Resumes from results/checkpoints/<cell>/state.pt when a previous attempt was killed.


rule train:
    input:
        train_data,
    output:
        models=expand(RUN + "/model.safetensors", seed=SEEDS, allow_missing=True),
        logs=expand(RUN + "/train_log.parquet", seed=SEEDS, allow_missing=True),
        records=expand(RUN + "/run.json", seed=SEEDS, allow_missing=True),
    params:
        spec=spec_json,
        seeds=",".join(map(str, SEEDS)),
        dirs=run_dirs,
        checkpoint=lambda wc: "results/checkpoints/" + CELL.format(**cell_keys(wc)) + "/state.pt",
    log:
        "results/logs/train/" + CELL + ".log",
    benchmark:
        "results/benchmarks/train/" + CELL + ".tsv"
    threads: RT["threads"]
    resources:
        gpu=1 if USE_GPU else 0,
    shell:
        MEMCAP + " train --spec {params.spec} --seeds {params.seeds} --data {input}"
        " --run-dirs {params.dirs} --checkpoint {params.checkpoint}"
        " --device {config[device]} --threads {threads}"
        " --log-every {config[runtime][log_every]}"
        " --checkpoint-every {config[runtime][checkpoint_every]}"
        " --label '{wildcards.arch} {wildcards.precision} n={wildcards.n}' > {log} 2>&1"
