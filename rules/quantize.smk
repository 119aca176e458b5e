# Quantization: every trained run's weights under each scheme of `quantize.schemes`
# (memcap.quantization: bf16, int{b}, int{b}-g{G}, gptq-...), then the score and evaluate
# stages on the quantized cell, against the same references: one job per (cell, scheme),
# `memcap quantize` running the three stages in turn in one process (one start-up), so
# adding a scheme runs only its jobs.


rule quantize:
    input:
        unpack(lambda wc: cell_of(wc).references),
        models=run_files("model.safetensors"),
        train=lambda wc: cell_of(wc).train_data,
        heldout=lambda wc: cell_of(wc).heldout_data,
        tokenizer=lambda wc: [f"{TOKENIZER}/manifest.json"] if wc.kind == "text" else [],
    output:
        [expand(f"{QUANTIZED}/{name}", seed=SEEDS, allow_missing=True) for name in
         ("model.safetensors", "quant.json", "scores.parquet", "score.json",
          "evaluation.json", "top_samples.parquet", "mia_sets.parquet")],
    params:
        cell=lambda wc: shlex.quote(cell_of(wc).quantized(wc.scheme).to_json()),
        settings=shlex.quote(json.dumps(config["evaluate"], sort_keys=True)),
        # GPTQ schemes only: a round-to-nearest job does not rerun when it changes
        calibration=lambda wc: (config["quantize"]["calibration_samples"]
                                if wc.scheme.startswith("gptq") else 0),
    conda:
        ENV
    log:
        f"results/logs/quantize/{CELL}/scheme={{scheme}}.log",
    benchmark:
        f"results/benchmarks/quantize/{CELL}/scheme={{scheme}}.tsv"
    threads: RUNTIME.threads
    resources:
        **MODEL_RESOURCES,
        mem_mb=model_mem_mb("evaluate"),
    shell:
        "python -m memcap quantize --cell {params.cell} --settings {params.settings}"
        f" --calibration-samples {{params.calibration}} {RUNTIME_ARGS} > {{log}} 2>&1"
