"""Aggregation: run records and per-sample scores -> the tables of the DuckDB contract.

`collect_tables` builds `runs` and `memorization` (Parquet); `build_database` writes every table
plus the `samples` view into one DuckDB file, atomically (a temporary file renamed into place).
"""

from __future__ import annotations

import math
from pathlib import Path

import duckdb
import polars as pl

from memcap.io import atomic_path, read_json

RUNS_COLUMNS = [
    "run_id", "kind", "vocab_size", "seq_len", "n", "seed", "arch", "n_layer", "d_model",
    "params", "precision", "compute_dtype", "steps", "batch_size", "lr", "saturated",
    "mem_growth_last_window", "final_train_loss", "train_loss", "heldout_loss", "device",
    "compiled", "cuda_graph", "train_seconds", "tokens_per_model", "early_stop", "steps_run",
    "stopped_early", "compute_saved_frac",
]


def run_id(kind: str, vocab: int, seq: int, arch: str, precision: str, n: int, seed: int) -> str:
    """A compact, unique, readable id: synthetic:V64:S32:L1-d16:fp32:n128:s0."""
    return f"{kind}:V{vocab}:S{seq}:{arch}:{precision}:n{n}:s{seed}"


PAPER_ALPHA = 3.64  # the paper's fitted bits per parameter (bf16), SCIENCE.md §3

TABLES = ("runs", "memorization", "memorization_by_reference", "mia", "extraction",
          "top_samples")


def kind_of(run_dir: Path) -> str:
    """The dataset kind from the run folder's `kind=` component (the hive-style path)."""
    for part in Path(run_dir).parts:
        if part.startswith("kind="):
            return part.removeprefix("kind=")
    raise ValueError(f"run folder {run_dir} has no kind=… component")


def _finite_or_none(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def collect_tables(run_dirs: list[Path]) -> dict[str, pl.DataFrame]:
    """Read the records of every run folder -> runs, memorization (against each run's primary
    reference), memorization_by_reference (every reference), mia, extraction and top_samples
    (the 20 most memorized training samples of every run)."""
    runs, mem, by_ref, mia, extraction, tops = [], [], [], [], [], []
    for d in map(Path, run_dirs):
        kind = kind_of(d)
        r, s = read_json(d / "run.json"), read_json(d / "score.json")
        ev = read_json(d / "evaluation.json")
        arch = f"L{r['n_layer']}-d{r['d_model']}"
        rid = run_id(kind, r["vocab_size"], r["seq_len"], arch, r["precision"], r["n"], r["seed"])
        if ev["run_id"] != rid:
            raise ValueError(f"{d}/evaluation.json belongs to run {ev['run_id']}, not {rid}")
        runs.append({**{k: r.get(k) for k in RUNS_COLUMNS}, "run_id": rid, "kind": kind,
                     "arch": arch, "train_loss": s["train_loss"],
                     "heldout_loss": s["heldout_loss"]})
        by_ref += [{"run_id": rid, "reference": name, **totals}
                   for name, totals in s["references"].items()]
        mem.append({"run_id": rid, "reference": s["reference"], "mem_bits": s["mem_bits"],
                    "mem_bits_unclamped": s["mem_bits_unclamped"],
                    "dataset_bits": s["dataset_bits"],
                    # the paper's H(D) = N·S·log2 V, first tokens included (SCIENCE.md §1)
                    "dataset_entropy_bits": r["n"] * r["seq_len"] * math.log2(r["vocab_size"]),
                    "memorizable_fraction": s["mem_bits"] / s["dataset_bits"],
                    "bits_per_param": s["mem_bits"] / r["params"],
                    # NaN (a constant side, e.g. a reference run against itself) -> null,
                    # so SQL averages skip it
                    "tfidf_mem_spearman": _finite_or_none(ev["tfidf_mem_spearman"]),
                    "capacity_ratio": None})
        mia += ev["mia"]
        extraction += ev["extraction"]
        tops.append(pl.read_parquet(d / "top_samples.parquet"))
    runs_df = pl.DataFrame(runs).select(RUNS_COLUMNS).sort("kind", "arch", "precision", "n", "seed")
    return {"runs": runs_df, "memorization": pl.DataFrame(mem),
            "memorization_by_reference": pl.DataFrame(by_ref), "mia": pl.DataFrame(mia),
            "extraction": pl.DataFrame(extraction),
            "top_samples": pl.concat(tops, how="diagonal_relaxed")}


REFERENCE_SCHEMA = {"reference": pl.String, "run_id": pl.String, "arch": pl.String,
                    "precision": pl.String, "heldout_loss": pl.Float64,
                    "chosen_is_lowest": pl.Boolean, "lowest_run_id": pl.String,
                    "named": pl.String, "uniform_loss": pl.Float64,
                    "better_than_uniform": pl.Boolean}


def references_table(records: list[Path]) -> pl.DataFrame:
    """One row per text reference model (reference.json / oracle.json records)."""
    rows = []
    for path in records:
        rec = read_json(path)
        _, vocab, _, arch, precision, *_ = rec["run_id"].split(":")
        # a reference that codes held-out text worse than the uniform code has memorized
        # rather than learned (trained on too little data): memorization against it is inflated
        uniform = math.log(int(vocab.removeprefix("V")))
        rows.append({"reference": rec["reference"], "run_id": rec["run_id"], "arch": arch,
                     "precision": precision, "heldout_loss": rec["heldout_loss"],
                     "chosen_is_lowest": rec.get("chosen_is_lowest"),
                     "lowest_run_id": rec.get("lowest"), "named": rec.get("named"),
                     "uniform_loss": uniform,
                     "better_than_uniform": rec["heldout_loss"] < uniform})
    return pl.DataFrame(rows, schema=REFERENCE_SCHEMA)


TEXT_DATASETS_SCHEMA = {"corpus": pl.String, "split": pl.String, "documents": pl.Int64,
                        "tokens": pl.Int64, "samples_before_dedup": pl.Int64,
                        "samples_after_dedup": pl.Int64, "duplicates": pl.Int64,
                        "duplicate_pct": pl.Float64, "tokenizer": pl.String,
                        "vocab_size": pl.Int64, "seq_len": pl.Int64, "sampling": pl.String}


def text_datasets_table(stats: list[Path]) -> pl.DataFrame:
    """The `text_datasets` table (empty when the experiment has no text part)."""
    from memcap.text import text_datasets_table as one

    frames = [one(p).select(list(TEXT_DATASETS_SCHEMA)) for p in stats]
    return pl.concat(frames).cast(TEXT_DATASETS_SCHEMA) if frames else pl.DataFrame(
        schema=TEXT_DATASETS_SCHEMA)


def with_capacity_ratio(memorization: pl.DataFrame, runs: pl.DataFrame,
                        laws: pl.DataFrame) -> pl.DataFrame:
    """Dataset-to-capacity ratio H_ref(D) / (α·P) per run (SCIENCE.md §1), with α the
    synthetic bits-per-parameter slope of the run's precision (capacity is a property of
    the architecture, measured on synthetic data), or the paper's α where the experiment
    fitted none (a text-only config); `alpha_source` says which."""
    measured = alpha_by_precision(laws)
    return (memorization.drop("capacity_ratio", "alpha_source", strict=False)
            .join(runs.select("run_id", "precision", "params"), on="run_id")
            .join(measured, on="precision", how="left")
            .with_columns(alpha_source=pl.when(pl.col("alpha").is_null())
                          .then(pl.lit(f"paper ({PAPER_ALPHA})"))
                          .otherwise(pl.lit("synthetic fit")),
                          alpha=pl.col("alpha").fill_null(PAPER_ALPHA))
            .with_columns(capacity_ratio=pl.col("dataset_bits")
                          / (pl.col("alpha") * pl.col("params")))
            .drop("precision", "params", "alpha"))


def alpha_by_precision(laws: pl.DataFrame) -> pl.DataFrame:
    return (laws.filter((pl.col("law") == "capacity") & (pl.col("parameter") == "alpha")
                        & (pl.col("kind") == "synthetic"))
            .select("precision", alpha="value"))


def build_database(db_path: Path, tables: dict[str, pl.DataFrame],
                   sample_files: list[Path]) -> None:
    """Write the tables and a `samples` view over the per-run score files into one DuckDB file.

    The view names the Parquet files by their paths relative to the working directory the
    workflow runs in, so open the database from the project root.
    """
    with atomic_path(db_path) as tmp:
        con = duckdb.connect(str(tmp))
        try:
            for name, frame in tables.items():
                con.register("frame_view", frame.to_arrow())
                con.execute(f"CREATE TABLE {name} AS SELECT * FROM frame_view")
                con.unregister("frame_view")
            files = ", ".join(f"'{Path(f).as_posix()}'" for f in sample_files)
            con.execute(f"CREATE VIEW samples AS SELECT * FROM read_parquet([{files}])")
        finally:
            con.close()
