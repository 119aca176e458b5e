# memcap: how many bits of its training data does a language model memorize?
# The DAG: data -> train (one job per cell, all seeds) -> score -> collect -> laws -> database
#          -> figures -> report. Each stage lives in rules/<stage>.smk; the code in src/memcap.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))
from memcap.config import ConfigError, validate_config  # noqa: E402


configfile: "config.yaml"


try:
    config.update(validate_config(config))
except ConfigError as err:
    raise WorkflowError(f"invalid config: {err}") from None

# Run the package from this checkout, whichever environment (venv or --sdm conda) runs the job.
# (Braces are doubled for Snakemake's shell formatting.)
MEMCAP = "PYTHONPATH='" + workflow.basedir + "/src':${{PYTHONPATH:-}} python -m memcap"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/score.smk"
include: "rules/aggregate.smk"
include: "rules/figures.smk"


rule all:
    input:
        "results/memcap.duckdb",
        "results/report.html",
