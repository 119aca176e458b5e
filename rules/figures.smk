# Figures (Altair: standalone HTML + PNG) from the tables and score files, and the HTML report
# from the database.

# Figures from bounded samples and the report run where Snakemake runs, even on a cluster.
localrules:
    figures,
    report,


rule figures:
    input:
        tables=[table(name) for name in TABLES],
        samples=lambda wc: [f"{d}/scores.parquet" for d in all_run_dirs()],
        mia_sets=lambda wc: [f"{d}/mia_sets.parquet" for d in all_run_dirs()],
    output:
        html=expand(f"{FIGURES_DIR}/{{name}}.html", name=FIGURES),
        png=expand(f"{FIGURES_DIR}/{{name}}.png", name=FIGURES),
    conda:
        ENV
    log:
        "results/logs/figures.log",
    shell:
        f"python -m memcap figures --tables-dir {TABLES_DIR} --samples {{input.samples}}"
        f" --mia-sets {{input.mia_sets}} --out-dir {FIGURES_DIR} > {{log}} 2>&1"


rule report:
    input:
        db=DATABASE,
        figures=rules.figures.output.png if GRID else [],
    output:
        REPORT,
    conda:
        ENV
    log:
        "results/logs/report.log",
    shell:
        f"python -m memcap report --db {{input.db}} --figures-dir {FIGURES_DIR} --out {{output}}"
        " > {log} 2>&1"
