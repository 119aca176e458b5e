# Predict, then verify (optional target: `snakemake --cores 2 verify`): invert the fitted
# membership law for the target F1 values, train the dataset sizes it calls for with the
# ordinary train/score/evaluate rules, and compare predicted with observed F1.

localrules:
    verify_plan,
    verify,


checkpoint verify_plan:
    input:
        table("laws"),
    output:
        "results/verify/plan.json",
    params:
        precision=VERIFY["precision"],
        seq_len=SYN["seq_len"],
        targets=VERIFY["targets"],
        params=arch_shape(config, "synthetic", architecture(config, VERIFY["arch"])).params,
        family=architecture(config, VERIFY["arch"])["family"],
    conda:
        ENV
    log:
        "results/logs/verify_plan.log",
    shell:
        "python -m memcap verify-plan --laws {input} --precision {params.precision}"
        " --family {params.family}"
        " --params {params.params} --seq-len {params.seq_len} --targets {params.targets}"
        " --out {output} > {log} 2>&1"


rule verify:
    input:
        plan="results/verify/plan.json",
        evaluations=verify_evaluations,
    output:
        table=VERIFY_TABLE,
        html="results/verify/report.html",
    params:
        tolerance=VERIFY["tolerance"],
    conda:
        ENV
    log:
        "results/logs/verify.log",
    shell:
        "python -m memcap verify-summary --plan {input.plan} --evaluations {input.evaluations}"
        " --tolerance {params.tolerance} --out-table {output.table} --out-html {output.html}"
        " > {log} 2>&1"
