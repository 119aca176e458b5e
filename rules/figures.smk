# Figures (Altair: standalone HTML + PNG) and the HTML report, both read from the database.
FIGURES = ["memorization_vs_n", "capacity_vs_params", "bits_per_param"]


rule figures:
    input:
        "results/memcap.duckdb",
    output:
        html=expand("results/figures/{name}.html", name=FIGURES),
        png=expand("results/figures/{name}.png", name=FIGURES),
    log:
        "results/logs/figures.log",
    shell:
        MEMCAP + " figures --db {input} --out-dir results/figures > {log} 2>&1"


rule report:
    input:
        db="results/memcap.duckdb",
        figures=rules.figures.output.png,
    output:
        "results/report.html",
    log:
        "results/logs/report.log",
    shell:
        MEMCAP + " report --db {input.db} --figures-dir results/figures --out {output} > {log} 2>&1"
