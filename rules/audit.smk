# Audit of models trained elsewhere (`audit:` in the config; off without it): check every
# model folder, group the targets by what their tokenizers do to the documents, cut each
# group's member and non-member samples once (a checkpoint: the groups are known only then)
# -> score them under each target and its group's reference -> per target: memorization with
# its false-positive floor, membership inference, extraction, TF-IDF and top samples, whose
# rows the database rule appends to its tables. `snakemake --cores 2 audit` runs it alone.
from memcap.paths import AUDIT_MODEL, AUDIT_SAMPLES


wildcard_constraints:
    model=r"reference=\d+|target=[A-Za-z0-9_.-]+(\+[a-z0-9-]+)?",
    target=r"[A-Za-z0-9_.-]+(\+[a-z0-9-]+)?",


rule audit:
    input:
        [f"{AUDIT_TARGET.format(target=t)}/audit.json" for t in AUDITED],


checkpoint audit_samples:
    input:
        [f for path in [*AUDIT_CFG.get("targets", {}).values(), *AUDIT_REFERENCES,
                        AUDIT_CFG.get("members"), AUDIT_CFG.get("nonmembers")]
         if path for f in existing_files(path)] if AUDITED else [],
    output:
        directory(AUDIT_SAMPLES),
    params:
        targets=shlex.quote(json.dumps(AUDIT_CFG.get("targets", {}), sort_keys=True)),
        references=shlex.quote(json.dumps(AUDIT_REFERENCES)),
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
        " --references {params.references} --members {params.members}"
        " --nonmembers {params.nonmembers} --seq-len {params.seq_len}"
        " --sampling {params.sampling} --out-dir {output} > {log} 2>&1"


def audit_groups():
    """groups.json of the cut samples (after the checkpoint): each group's targets and
    reference index, and each target's group."""
    out = checkpoints.audit_samples.get().output[0]
    with open(f"{out}/groups.json") as fh:
        return json.load(fh)


def group_dir(group):
    return f"{AUDIT_SAMPLES}/group={group}"


def model_group(wc):
    """The samples folder of an audit model wildcard's tokenizer group."""
    groups = audit_groups()
    if wc.model.startswith("reference="):
        index = int(wc.model.removeprefix("reference="))
        return group_dir(next(g for g, p in groups["groups"].items()
                              if p["reference_index"] == index))
    name = wc.model.removeprefix("target=").partition("+")[0]
    return group_dir(groups["target_group"][name])


def target_inputs(wc):
    """A target's samples, its scores and its group's reference's scores (none: no file)."""
    groups = audit_groups()
    group = groups["target_group"][wc.target.partition("+")[0]]
    index = groups["groups"][group]["reference_index"]
    ref = ([f"{AUDIT_MODEL.format(model=f'reference={index}')}/score.json"]
           if index is not None else [])
    return {"samples": f"{group_dir(group)}/samples.json",
            "scores": f"{AUDIT_MODEL.format(model=f'target={wc.target}')}/score.json",
            "reference": ref}


rule audit_score:
    input:
        samples=lambda wc: f"{model_group(wc)}/samples.json",
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
        " --scheme '{params.scheme}' --samples-dir $(dirname {input.samples})"
        f" --out-dir {{params.out_dir}} {RUNTIME_ARGS} > {{log}} 2>&1"


rule audit_evaluate:
    input:
        unpack(target_inputs),
    output:
        scores=f"{AUDIT_TARGET}/scores.parquet",
        record=f"{AUDIT_TARGET}/audit.json",
        tables=[f"{AUDIT_TARGET}/tables/{name}.parquet" for name in AUDIT_TABLES],
    params:
        model_dir=lambda wc: shlex.quote(AUDIT_CFG["targets"][wc.target.partition("+")[0]]),
        out_dir=lambda wc, output: os.path.dirname(output.record),
        settings=shlex.quote(json.dumps(config["evaluate"], sort_keys=True)),
        strict="--require-good-reference" if AUDIT_CFG["require_good_reference"] else "",
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
        " --model-dir {params.model_dir} --samples-dir $(dirname {input.samples})"
        " --scores $(dirname {input.scores}) --reference-scores '{input.reference}'"
        " --out-dir {params.out_dir}"
        f" --settings {{params.settings}} {{params.strict}} {RUNTIME_ARGS} > {{log}} 2>&1"
