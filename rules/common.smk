# Paths and grid helpers shared by the stage files. Grid coordinates live in the paths as
# key=value folders, so DuckDB (hive_partitioning) and users read them back as columns.
import json
import os
import shlex
import shutil

from memcap.aggregate import run_id
from memcap.config import KINDS, architecture, cells, shape, train_spec
from memcap.corpus import ARTIFACTS
from memcap.shapes import param_count

ENV = "../envs/memcap.yaml"  # conda environment of every rule (--sdm conda)
SEEDS = config["seeds"]
SYN = config["synthetic"]
TEXT = config["text"]
RT = config["runtime"]
EV = config["evaluate"]
VERIFY = config["verify"]
DATA = "results/data/kind={kind}/vocab={vocab}/seq={seq}/seed={seed}/split={split}/n={n}/data.parquet"
CELL = "kind={kind}/vocab={vocab}/seq={seq}/arch={arch}/precision={precision}/n={n}"
RUN = f"results/runs/{CELL}/seed={{seed}}"
HELDOUT = {"synthetic": SYN["heldout"], "text": TEXT["heldout"]}

# Training and scoring ask for one GPU when they will run on CUDA (the default profile caps
# them). Execution settings that change no result (device, progress and checkpoint intervals,
# batch size of scoring) reach the jobs as resources, not params, so editing them reruns nothing.
USE_GPU = config["device"] == "cuda" or (config["device"] == "auto" and shutil.which("nvidia-smi"))


wildcard_constraints:
    artifact="|".join(ARTIFACTS),
    kind="synthetic|text",
    vocab=r"\d+",
    seq=r"\d+",
    seed=r"\d+",
    n=r"\d+",
    split="train|heldout",
    arch=r"L\d+-d\d+",
    precision="bf16|fp32",


def cell_keys(wc):
    return {k: getattr(wc, k) for k in ("kind", "vocab", "seq", "arch", "precision", "n")}


def run_dirs(wc):
    """The run folder of every seed of the cell named by wildcards `wc`."""
    return [RUN.format(**cell_keys(wc), seed=s) for s in SEEDS]


def run_files(name):
    """Input/output function: `name` inside the run folder of every seed of a cell."""
    return lambda wc: [f"{d}/{name}" for d in run_dirs(wc)]


def run_ids(wc):
    k = cell_keys(wc)
    return [run_id(k["kind"], k["vocab"], k["seq"], k["arch"], k["precision"], k["n"], s)
            for s in SEEDS]


def train_data(wc):
    return [DATA.format(kind=wc.kind, vocab=wc.vocab, seq=wc.seq, seed=s, split="train", n=wc.n)
            for s in SEEDS]


def heldout_data(wc):
    return [DATA.format(kind=wc.kind, vocab=wc.vocab, seq=wc.seq, seed=s, split="heldout",
                        n=HELDOUT[wc.kind]) for s in SEEDS]


def spec_json(wc):
    """The cell's effective training settings, shell-quoted: its params (rerun trigger)."""
    return shlex.quote(json.dumps(train_spec(config, wc.kind, wc.arch, wc.precision, int(wc.n)),
                                  sort_keys=True))


def all_run_dirs():
    return [RUN.format(**cell, seed=s) for kind in KINDS for cell in cells(config, kind)
            for s in SEEDS]


def verify_evaluations(wc):
    """Evaluation records of the runs the verify plan (a checkpoint) asks for."""
    with open(checkpoints.verify_plan.get().output[0]) as fh:
        planned = json.load(fh)
    cell = {"kind": "synthetic", "vocab": SYN["vocab_size"], "seq": SYN["seq_len"],
            "arch": VERIFY["arch"], "precision": VERIFY["precision"]}
    return [f"{RUN.format(**cell, n=c['n'], seed=s)}/evaluation.json"
            for c in planned["cells"] if c["n"] is not None for s in SEEDS]


# Text: paths and helpers (rules/text.smk, score.smk, aggregate.smk)
TEXT_V, TEXT_S = shape(config, "text")
TEXT_DIR = f"results/data/kind=text/vocab={TEXT_V}/seq={TEXT_S}"
DOCS = "results/text/documents.parquet"
TOKENIZER = "results/text/tokenizer"
POOL = f"{TEXT_DIR}/pool.parquet"
TEXT_STATS = f"{TEXT_DIR}/text_dataset.json"
REFS = "results/references/kind=text/vocab={vocab}/seq={seq}"
SAME_ARCH = f"{REFS}/reference=same-arch/arch={{arch}}/precision={{precision}}/scores.parquet"
ORACLE = f"{REFS}/reference=oracle/scores.parquet"
ORACLE_RECORD = f"{REFS}/reference=oracle/oracle.json"
TEXT_NMAX = max(TEXT.get("dataset_sizes", [0]))


def text_source():
    """The source settings the documents depend on (the rule's params)."""
    keys = {"registry": ["corpora"], "local": ["local_path"], "huggingface": ["huggingface"]}
    return {"source": TEXT["source"], **{k: TEXT[k] for k in keys[TEXT["source"]]}}


def registry_records(names):
    return [f"results/registry/{name}.json" for name in names]


def reference_run(wc):
    """The same-arch reference run of a text cell's architecture and precision."""
    return RUN.format(kind="text", vocab=wc.vocab, seq=wc.seq, arch=wc.arch,
                      precision=wc.precision, n=TEXT_NMAX, seed=SEEDS[0])


def text_run_dirs():
    return [RUN.format(**c, seed=s) for c in cells(config, "text") for s in SEEDS]


def text_run_ids():
    return [run_id(**{k: c[k] for k in ("kind", "vocab", "seq", "arch", "precision", "n")},
                   seed=s) for c in cells(config, "text") for s in SEEDS]


def reference_inputs(wc):
    if wc.kind != "text":
        return {}
    return {"same_arch": SAME_ARCH.format(vocab=wc.vocab, seq=wc.seq, arch=wc.arch,
                                          precision=wc.precision),
            "oracle": ORACLE.format(vocab=wc.vocab, seq=wc.seq)}


def reference_args(wc, input):
    if wc.kind != "text":
        return ""
    return f"--references same-arch={input.same_arch} oracle={input.oracle}"


def text_records():
    """Reference records and pool statistics of the text part (none without one)."""
    if not TEXT["enabled"]:
        return {"references": [], "stats": []}
    refs = [SAME_ARCH.format(vocab=TEXT_V, seq=TEXT_S, arch=c["arch"],
                             precision=c["precision"]).replace("scores.parquet",
                                                               "reference.json")
            for c in cells(config, "text") if c["n"] == TEXT_NMAX]
    refs.append(ORACLE_RECORD.format(vocab=TEXT_V, seq=TEXT_S))
    return {"references": refs, "stats": [TEXT_STATS]}
