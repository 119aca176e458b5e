"""The results tree: every artifact path template, in one place (torch- and duckdb-free).

Grid coordinates live in the paths as key=value folders, so DuckDB (hive_partitioning) and
users read them back as columns. The rules format these templates with wildcards; the cell
builder (memcap.cell) formats them with a cell's coordinates. Nothing parses them back.
"""

from __future__ import annotations

RESULTS = "results"
DATA = (f"{RESULTS}/data/kind={{kind}}/vocab={{vocab}}/seq={{seq}}/seed={{seed}}/split={{split}}"
        "/n={n}/data.parquet")
CELL = "kind={kind}/vocab={vocab}/seq={seq}/arch={arch}/precision={precision}/n={n}"
RUN = f"{RESULTS}/runs/{CELL}/seed={{seed}}"
CHECKPOINT = f"{RESULTS}/checkpoints/{CELL}/state.pt"
# a trained run with its weights quantized (memcap.quantization): its own model file, records,
# scores and evaluation, laid out as a run's
QUANTIZED = f"{RESULTS}/quantized/{CELL}/scheme={{scheme}}/seed={{seed}}"

# real text
REGISTRY = f"{RESULTS}/registry"
DOCS = f"{RESULTS}/text/documents.parquet"
TOKENIZER = f"{RESULTS}/text/tokenizer"
TEXT_DIR = f"{RESULTS}/data/kind=text/vocab={{vocab}}/seq={{seq}}"
POOL = f"{TEXT_DIR}/pool.parquet"
TEXT_STATS = f"{TEXT_DIR}/text_dataset.json"
REFS = f"{RESULTS}/references/kind=text/vocab={{vocab}}/seq={{seq}}"
SAME_ARCH = f"{REFS}/reference=same-arch/arch={{arch}}/precision={{precision}}/scores.parquet"
SAME_ARCH_RECORD = SAME_ARCH.replace("scores.parquet", "reference.json")
ORACLE = f"{REFS}/reference=oracle/scores.parquet"
ORACLE_RECORD = f"{REFS}/reference=oracle/oracle.json"

# the audit of models trained elsewhere: samples cut once, each model (a target, or the
# reference) scored once, then every target's evaluation and its rows of the database tables
AUDIT = f"{RESULTS}/audit"
AUDIT_SAMPLES = f"{AUDIT}/samples"
AUDIT_MODEL = f"{AUDIT}/models/{{model}}"
AUDIT_TARGET = f"{AUDIT}/targets/{{target}}"
AUDIT_TABLES = ("runs", "memorization", "mia", "extraction", "top_samples", "audits")

# aggregation: `collect` writes the run tables, `laws` the fitted ones (and memorization with
# its capacity ratio, which needs α); `database` loads every table of TABLES
TABLES_DIR = f"{RESULTS}/tables"
COLLECTED = ("runs", "memorization_by_reference", "mia", "extraction", "top_samples",
             "reference_models", "text_datasets", "quantized_runs", "quantized_mia",
             "quantized_extraction")
COLLECTED_MEMORIZATION = f"{RESULTS}/collected/memorization.parquet"
FITTED = ("memorization", "capacity", "laws", "double_descent", "quantization")
TABLES = COLLECTED + FITTED
DATABASE = f"{RESULTS}/memcap.duckdb"
# the config overlay that extends the grid to bracket each capacity (target `bracket`)
BRACKET = f"{RESULTS}/bracket.yaml"

FIGURES_DIR = f"{RESULTS}/figures"
FIGURES = ("memorization_vs_n", "capacity_vs_params", "bits_per_param", "mia_roc",
           "mia_attacks", "mia_histograms", "mia_law", "extraction_vs_n", "double_descent",
           "quantization")
REPORT = f"{RESULTS}/report.html"
VERIFY_TABLE = f"{RESULTS}/verify/verify.parquet"  # table `verify` when verify.enabled


def table(name: str) -> str:
    return f"{TABLES_DIR}/{name}.parquet"
