# Synthetic data: one file per (seed, split, size). Sequence i of a stream is a pure function
# of (seed, split, i), so the file for size N never changes when other sizes are added.


rule synthetic_data:
    output:
        DATA.replace("{kind}", "synthetic"),
    conda:
        ENV
    log:
        "results/logs/data/synthetic-vocab={vocab}-seq={seq}-seed={seed}-{split}-n={n}.log",
    shell:
        "python -m memcap data --seed {wildcards.seed} --split {wildcards.split} --n {wildcards.n}"
        " --seq-len {wildcards.seq} --vocab-size {wildcards.vocab} --out {output} > {log} 2>&1"
