# Grid helpers shared by the stage files. Paths come from memcap.paths (one template each);
# model stages get their cell (memcap.cell.Cell) as one JSON value, built here from the config.
import json
import os
import shlex
from pathlib import Path

from memcap.cell import Runtime, build_cell
from memcap.config import KINDS, arch_shape, architecture, cells, shape
from memcap.corpus import ARTIFACTS
from memcap.memory import cell_request_mb, compact_bytes, request_mb
from memcap.paths import (AUDIT_TABLES, AUDIT_TARGET, BRACKET, CELL, COLLECTED,
                          COLLECTED_MEMORIZATION, DATA, DATABASE, DOCS, FIGURES, FIGURES_DIR,
                          FITTED, ORACLE, ORACLE_RECORD, POOL, QUANTIZED, REGISTRY, REPORT, RUN,
                          SAME_ARCH, SAME_ARCH_RECORD, TABLES, TABLES_DIR, TEXT_STATS,
                          TOKENIZER, VERIFY_TABLE, table)
from memcap.tokens import count_rows

# conda environment of every job (--sdm conda): a CUDA build of PyTorch when the config asks
# for CUDA, solved the same on a submit host without a GPU (CONDA_OVERRIDE_CUDA, see README)
ENV = "../envs/memcap-cuda.yaml" if config["device"] == "cuda" else "../envs/memcap.yaml"
SEEDS = config["seeds"]
SYN = config["synthetic"]
TEXT = config["text"]
VERIFY = config["verify"]
AUDIT_CFG = config["audit"]
# the training grid (synthetic and text); an audit-only config has none
GRID = SYN["enabled"] or TEXT["enabled"]

# Execution settings that change no result (device, threads, progress and checkpoint
# intervals, scoring batch, compile, CUDA graphs) reach the model stages as resources, not
# params, so editing them reruns nothing. Every rule that runs a model (train, score,
# evaluate, the text references) asks for one GPU exactly when the config says device: cuda,
# whatever machine plans the DAG (a cluster's login node has none); auto never asks for one.
# The default profile caps GPU jobs at one at a time.
RUNTIME = Runtime.from_config(config)
MODEL_RESOURCES = {"gpu": int(config["device"] == "cuda"), **RUNTIME.resources()}
RUNTIME_ARGS = Runtime.shell_args()


wildcard_constraints:
    artifact="|".join(ARTIFACTS),
    kind="synthetic|text",
    vocab=r"\d+",
    seq=r"\d+",
    seed=r"\d+",
    n=r"\d+",
    split="train|heldout",
    arch=r"((llama|mamba)-)?L\d+-d\d+(-[a-z]+\d*)*",
    precision="bf16|fp32",
    scheme=r"bf16|(gptq-)?int[2-8](-g\d+)?",


def cell_of(wc):
    """The cell named by a rule's wildcards."""
    return build_cell(config, wc.kind, wc.arch, wc.precision, int(wc.n))


def cell_json(wc):
    """The cell as a shell-quoted JSON value: a model rule's params (its rerun trigger)."""
    return shlex.quote(cell_of(wc).to_json())


def model_mem_mb(stage):
    """Resource function: a model rule's mem_mb from its cell's shape (memcap.memory)."""
    return lambda wc: cell_mem_mb(stage, cell_of(wc), wc.kind)


def cell_mem_mb(stage, cell, kind):
    batch = cell.spec.batch if stage == "train" else RUNTIME.score_batch_size
    return cell_request_mb(stage, cell, heldout=config[kind]["heldout"], batch=batch,
                           extraction_samples=config["evaluate"]["extraction_samples"])


def reference_mem_mb(wc, input):
    """Resource function: a text reference's mem_mb from its pool's size (0 samples while
    the pool does not exist yet, in a dry run)."""
    pool = count_rows(input.pool) if os.path.exists(input.pool) else 0
    return request_mb(compact_bytes("reference", vocab_size=TEXT_V, seq_len=TEXT_S, n=0,
                                    seeds=1, heldout=0, params=0,
                                    batch=RUNTIME.score_batch_size, pool=pool))


def run_files(name):
    """Input/output function: `name` inside the run folder of every seed of a cell."""
    return lambda wc: [f"{d}/{name}" for d in cell_of(wc).run_dirs]


def all_run_dirs():
    return [RUN.format(**cell, seed=s) for kind in KINDS for cell in cells(config, kind)
            for s in SEEDS]


def all_quantized_dirs():
    """Every trained run's folder under every scheme of quantize.schemes (rules/quantize.smk)."""
    return [QUANTIZED.format(**cell, scheme=scheme, seed=s) for kind in KINDS
            for cell in cells(config, kind) for scheme in config["quantize"]["schemes"]
            for s in SEEDS]


def verify_evaluations(wc):
    """Evaluation records of the runs the verify plan (a checkpoint) asks for."""
    with open(checkpoints.verify_plan.get().output[0]) as fh:
        planned = json.load(fh)
    cell = {"kind": "synthetic", "vocab": SYN["vocab_size"], "seq": SYN["seq_len"],
            "arch": VERIFY["arch"], "precision": VERIFY["precision"]}
    return [f"{RUN.format(**cell, n=c['n'], seed=s)}/evaluation.json"
            for c in planned["cells"] if c["n"] is not None for s in SEEDS]


# Text: the largest text dataset (the same-arch reference trains on it) and the records
TEXT_V, TEXT_S = shape(config, "text")
TEXT_WHERE = {"vocab": TEXT_V, "seq": TEXT_S}
TEXT_NMAX = max(TEXT.get("dataset_sizes", [0]))


def text_source():
    """The source settings the documents depend on (the rule's params)."""
    keys = {"registry": ["corpora"], "local": ["local_path"], "huggingface": ["huggingface"]}
    return {"source": TEXT["source"], **{k: TEXT[k] for k in keys[TEXT["source"]]}}


def registry_records(names):
    return [f"{REGISTRY}/{name}.json" for name in names]


def reference_run(wc):
    """The same-arch reference run of a text cell's architecture and precision."""
    return RUN.format(kind="text", vocab=wc.vocab, seq=wc.seq, arch=wc.arch,
                      precision=wc.precision, n=TEXT_NMAX, seed=SEEDS[0])


def text_run_dirs():
    return [RUN.format(**c, seed=s) for c in cells(config, "text") for s in SEEDS]


def text_records():
    """Reference records and pool statistics of the text part (none without one)."""
    if not TEXT["enabled"]:
        return {"references": [], "stats": []}
    refs = [SAME_ARCH_RECORD.format(**TEXT_WHERE, arch=c["arch"], precision=c["precision"])
            for c in cells(config, "text") if c["n"] == TEXT_NMAX]
    refs.append(ORACLE_RECORD.format(**TEXT_WHERE))
    return {"references": refs, "stats": [TEXT_STATS.format(**TEXT_WHERE)]}


# The audit (rules/audit.smk): each target's rows of the database tables and its score file
# (audit.quantize: each target once more per scheme, as <name>+<scheme>)
AUDITED = [f"{t}{suffix}" for t in AUDIT_CFG.get("targets", {})
           for suffix in ["", *(f"+{s}" for s in AUDIT_CFG["quantize"])]
           ] if AUDIT_CFG["enabled"] else []
# the reference models: audit.reference, or one per tokenizer group (audit.references)
AUDIT_REFERENCES = ([AUDIT_CFG["reference"]] if "reference" in AUDIT_CFG
                    else AUDIT_CFG.get("references", []))


def audit_files():
    """Every audited target's table files (appended to the database) and score file; a
    target without a reference writes its memorization and top samples tables empty."""
    return {"tables": [f"{AUDIT_TARGET.format(target=t)}/tables/{name}.parquet"
                       for t in AUDITED for name in AUDIT_TABLES],
            "samples": [f"{AUDIT_TARGET.format(target=t)}/scores.parquet" for t in AUDITED]}


def existing_files(path):
    """The files under a configured path that exist (their edits rerun the audit); a missing
    path gives none, and the job then stops naming it and what it expected."""
    if os.path.isfile(path):
        return [path]
    return sorted(str(p) for p in Path(path).rglob("*") if p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(path).parts))


def audit_model(wc):
    """(folder, config key, quantization scheme or '') of an audit model wildcard:
    reference=<index in AUDIT_REFERENCES> or target=<name>[+<scheme>]."""
    if wc.model.startswith("reference="):
        index = int(wc.model.removeprefix("reference="))
        key = "audit.reference" if "reference" in AUDIT_CFG else f"audit.references[{index}]"
        return AUDIT_REFERENCES[index], key, ""
    name, _, scheme = wc.model.removeprefix("target=").partition("+")
    return AUDIT_CFG["targets"][name], f"audit.targets.{name}", scheme
