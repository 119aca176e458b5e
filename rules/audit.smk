# Audit of models trained elsewhere (`audit:` in the config; off without it): check every
# model folder and tokenizer, cut the member and non-member samples once -> score them under
# each target and the reference -> per target: memorization, membership inference,
# extraction, TF-IDF and top samples, whose rows the database rule appends to its tables.
# `snakemake --cores 2 audit` runs the audit alone.
from memcap.paths import AUDIT_MODEL, AUDIT_SAMPLES


wildcard_constraints:
    model=r"reference|target=[A-Za-z0-9_.-]+(\+[a-z0-9-]+)?",
    target=r"[A-Za-z0-9_.-]+(\+[a-z0-9-]+)?",


AUDIT_SAMPLE_FILES = [f"{AUDIT_SAMPLES}/{name}" for name in
                      ("members.parquet", "nonmembers.parquet", "samples.json")]
AUDIT_REFERENCE = [f"{AUDIT_MODEL.format(model='reference')}/score.json"] if (
    "reference" in AUDIT_CFG) else []


rule audit:
    input:
        [f"{AUDIT_TARGET.format(target=t)}/audit.json" for t in AUDITED],


rule audit_samples:
    input:
        [f for path in [*AUDIT_CFG.get("targets", {}).values(), AUDIT_CFG.get("reference"),
                        AUDIT_CFG.get("members"), AUDIT_CFG.get("nonmembers")]
         if path for f in existing_files(path)] if AUDITED else [],
    output:
        AUDIT_SAMPLE_FILES,
    params:
        targets=shlex.quote(json.dumps(AUDIT_CFG.get("targets", {}), sort_keys=True)),
        reference=shlex.quote(AUDIT_CFG.get("reference", "")),
        members=shlex.quote(AUDIT_CFG.get("members", "")),
        nonmembers=shlex.quote(AUDIT_CFG.get("nonmembers", "")),
        seq_len=AUDIT_CFG.get("seq_len"),
        sampling=AUDIT_CFG.get("sampling"),
    conda:
        ENV
    log:
        "results/logs/audit/samples.log",
    threads: RUNTIME.threads
    shell:
        "python -m memcap audit-samples --targets {params.targets}"
        " --reference {params.reference} --members {params.members}"
        " --nonmembers {params.nonmembers} --seq-len {params.seq_len}"
        f" --sampling {{params.sampling}} --out-dir {AUDIT_SAMPLES} > {{log}} 2>&1"


rule audit_score:
    input:
        samples=AUDIT_SAMPLE_FILES,
        model=lambda wc: existing_files(audit_model(wc)[0]),
    output:
        scores=f"{AUDIT_MODEL}/scores.parquet",
        record=f"{AUDIT_MODEL}/score.json",
    params:
        model_dir=lambda wc: shlex.quote(audit_model(wc)[0]),
        key=lambda wc: audit_model(wc)[1],
        scheme=lambda wc: audit_model(wc)[2],
        out_dir=lambda wc, output: os.path.dirname(output.scores),
    conda:
        ENV
    log:
        "results/logs/audit/score-{model}.log",
    benchmark:
        "results/benchmarks/audit/score-{model}.tsv"
    threads: RUNTIME.threads
    resources:
        **MODEL_RESOURCES,
    shell:
        "python -m memcap audit-score --model-dir {params.model_dir} --key {params.key}"
        " --scheme '{params.scheme}'"
        f" --samples-dir {AUDIT_SAMPLES} --out-dir {{params.out_dir}} {RUNTIME_ARGS}"
        " > {log} 2>&1"


rule audit_evaluate:
    input:
        samples=AUDIT_SAMPLE_FILES,
        scores=f"{AUDIT_MODEL.replace('{model}', 'target={target}')}/score.json",
        reference=AUDIT_REFERENCE,
    output:
        scores=f"{AUDIT_TARGET}/scores.parquet",
        record=f"{AUDIT_TARGET}/audit.json",
        tables=[f"{AUDIT_TARGET}/tables/{name}.parquet" for name in AUDIT_TABLE_NAMES],
    params:
        model_dir=lambda wc: shlex.quote(AUDIT_CFG["targets"][wc.target.partition("+")[0]]),
        scores=lambda wc, input: os.path.dirname(input.scores),
        reference=lambda wc, input: (f"--reference-scores {os.path.dirname(input.reference[0])}"
                                     if input.reference else ""),
        out_dir=lambda wc, output: os.path.dirname(output.record),
        settings=shlex.quote(json.dumps(config["evaluate"], sort_keys=True)),
    conda:
        ENV
    log:
        "results/logs/audit/evaluate-{target}.log",
    benchmark:
        "results/benchmarks/audit/evaluate-{target}.tsv"
    threads: RUNTIME.threads
    resources:
        **MODEL_RESOURCES,
    shell:
        "python -m memcap audit-evaluate --target {wildcards.target}"
        f" --model-dir {{params.model_dir}} --samples-dir {AUDIT_SAMPLES}"
        " --scores {params.scores} {params.reference} --out-dir {params.out_dir}"
        f" --settings {{params.settings}} {RUNTIME_ARGS} > {{log}} 2>&1"
