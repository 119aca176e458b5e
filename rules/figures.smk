# Figures (Altair: standalone HTML + PNG) and the HTML report, both read from the database.
FIGURES = [
    "memorization_vs_n",
    "capacity_vs_params",
    "bits_per_param",
    "mia_roc",
    "mia_histograms",
    "mia_law",
    "extraction_vs_n",
    "double_descent",
]


rule figures:
    input:
        "results/memcap.duckdb",
    output:
        html=expand("results/figures/{name}.html", name=FIGURES),
        png=expand("results/figures/{name}.png", name=FIGURES),
    conda:
        ENV
    log:
        "results/logs/figures.log",
    shell:
        "python -m memcap figures --db {input} --out-dir results/figures > {log} 2>&1"


rule report:
    input:
        db="results/memcap.duckdb",
        figures=rules.figures.output.png,
    output:
        "results/report.html",
    conda:
        ENV
    log:
        "results/logs/report.log",
    shell:
        "python -m memcap report --db {input.db} --figures-dir results/figures --out {output} > {log} 2>&1"
