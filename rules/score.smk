# Scoring: per-sample code lengths (bits) of every training and held-out sample under each
# seed's model, with the reference code length and mem_bits; one job per cell. Text cells
# read their references' scores of the pool (rules/text.smk).


rule score:
    input:
        unpack(reference_inputs),
        models=run_files("model.safetensors"),
        train=train_data,
        heldout=heldout_data,
    output:
        scores=expand(f"{RUN}/scores.parquet", seed=SEEDS, allow_missing=True),
        records=expand(f"{RUN}/score.json", seed=SEEDS, allow_missing=True),
    params:
        spec=spec_json,
        seeds=",".join(map(str, SEEDS)),
        dirs=run_dirs,
        ids=run_ids,
        references=reference_args,
    conda:
        ENV
    log:
        f"results/logs/score/{CELL}.log",
    benchmark:
        f"results/benchmarks/score/{CELL}.tsv"
    threads: RT["threads"]
    resources:
        gpu=1 if USE_GPU else 0,
        device=config["device"],
        batch_size=RT["score_batch_size"],
    shell:
        "python -m memcap score --spec {params.spec} --seeds {params.seeds} --models {input.models}"
        " --train-data {input.train} --heldout-data {input.heldout} --run-dirs {params.dirs}"
        " --run-ids {params.ids} --device {resources.device} --threads {threads}"
        " --batch-size {resources.batch_size} --kind {wildcards.kind} {params.references}"
        " > {log} 2>&1"
