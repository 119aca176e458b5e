# memcap: how many bits of its training data does a language model memorize?
# The DAG: data -> train (one job per cell, all seeds) -> score -> evaluate (and per
#          quantization scheme: quantize -> its score and evaluation) -> collect -> laws -> database
#          -> figures -> report. Each stage lives in rules/<stage>.smk; the code in src/memcap.
import os
import sys
from pathlib import Path

# Jobs run the package from this checkout, whichever environment runs them (a venv with
# `pip install -e .`, or --sdm conda with envs/memcap.yaml); jobs inherit this variable.
SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)
os.environ["PYTHONPATH"] = SRC
from memcap.config import ConfigError, validate_config  # noqa: E402


configfile: "config.yaml"


try:
    config.update(validate_config(config))
except ConfigError as err:
    raise WorkflowError(f"invalid config: {err}") from None


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/text.smk"
include: "rules/train.smk"
include: "rules/score.smk"
include: "rules/evaluate.smk"
include: "rules/quantize.smk"
include: "rules/aggregate.smk"
include: "rules/figures.smk"
include: "rules/verify.smk"
include: "rules/audit.smk"


rule all:
    input:
        DATABASE,
        REPORT,
