# Evaluation: membership inference (loss and reference-calibrated attacks), greedy extraction
# from prefixes, and the most memorized samples; one job per cell.


rule evaluate:
    input:
        models=run_files("model.safetensors"),
        train=train_data,
        heldout=heldout_data,
        scores=run_files("scores.parquet"),
        tokenizer=lambda wc: [f"{TOKENIZER}/manifest.json"] if wc.kind == "text" else [],
    output:
        records=expand(f"{RUN}/evaluation.json", seed=SEEDS, allow_missing=True),
        top=expand(f"{RUN}/top_samples.parquet", seed=SEEDS, allow_missing=True),
    params:
        spec=spec_json,
        seeds=",".join(map(str, SEEDS)),
        dirs=run_dirs,
        ids=run_ids,
        prefixes=",".join(map(str, EV["extraction_prefixes"])),
        mia_samples=EV["mia_samples"],
        extraction_samples=EV["extraction_samples"],
        tokenizer=lambda wc, input: f"--tokenizer {os.path.dirname(input.tokenizer[0])}"
        if wc.kind == "text" else "",
    conda:
        ENV
    log:
        f"results/logs/evaluate/{CELL}.log",
    benchmark:
        f"results/benchmarks/evaluate/{CELL}.tsv"
    threads: RT["threads"]
    resources:
        gpu=1 if USE_GPU else 0,
        device=config["device"],
    shell:
        "python -m memcap evaluate --spec {params.spec} --seeds {params.seeds}"
        " --models {input.models} --train-data {input.train} --heldout-data {input.heldout}"
        " --scores {input.scores} --run-dirs {params.dirs} --run-ids {params.ids}"
        " --prefixes {params.prefixes} --mia-samples {params.mia_samples}"
        " --extraction-samples {params.extraction_samples} --device {resources.device}"
        " --threads {threads} {params.tokenizer} > {log} 2>&1"
