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
    "train_seconds", "tokens_per_model",
]


def run_id(kind: str, vocab: int, seq: int, arch: str, precision: str, n: int, seed: int) -> str:
    """A compact, unique, readable id: synthetic:V64:S32:L1-d16:fp32:n128:s0."""
    return f"{kind}:V{vocab}:S{seq}:{arch}:{precision}:n{n}:s{seed}"


TABLES = ("runs", "memorization", "mia", "extraction", "top_samples")


def collect_tables(run_dirs: list[Path], kind: str = "synthetic") -> dict[str, pl.DataFrame]:
    """Read the records of every run folder -> runs, memorization, mia, extraction and
    top_samples (the 20 most memorized training samples of every run)."""
    runs, mem, mia, extraction, tops = [], [], [], [], []
    for d in map(Path, run_dirs):
        r, s = read_json(d / "run.json"), read_json(d / "score.json")
        ev = read_json(d / "evaluation.json")
        arch = f"L{r['n_layer']}-d{r['d_model']}"
        rid = run_id(kind, r["vocab_size"], r["seq_len"], arch, r["precision"], r["n"], r["seed"])
        if ev["run_id"] != rid:
            raise ValueError(f"{d}/evaluation.json belongs to run {ev['run_id']}, not {rid}")
        runs.append({**{k: r.get(k) for k in RUNS_COLUMNS}, "run_id": rid, "kind": kind,
                     "arch": arch, "train_loss": s["train_loss"],
                     "heldout_loss": s["heldout_loss"]})
        mem.append({"run_id": rid, "mem_bits": s["mem_bits"],
                    "mem_bits_unclamped": s["mem_bits_unclamped"],
                    "dataset_bits": s["dataset_bits"],
                    # the paper's H(D) = N·S·log2 V, first tokens included (SCIENCE.md §1)
                    "dataset_entropy_bits": r["n"] * r["seq_len"] * math.log2(r["vocab_size"]),
                    "memorizable_fraction": s["mem_bits"] / s["dataset_bits"],
                    "bits_per_param": s["mem_bits"] / r["params"],
                    "tfidf_mem_spearman": ev["tfidf_mem_spearman"],
                    "capacity_ratio": None})
        mia += ev["mia"]
        extraction += ev["extraction"]
        tops.append(pl.read_parquet(d / "top_samples.parquet"))
    runs_df = pl.DataFrame(runs).select(RUNS_COLUMNS).sort("kind", "arch", "precision", "n", "seed")
    return {"runs": runs_df, "memorization": pl.DataFrame(mem), "mia": pl.DataFrame(mia),
            "extraction": pl.DataFrame(extraction), "top_samples": pl.concat(tops)}


def with_capacity_ratio(memorization: pl.DataFrame, runs: pl.DataFrame,
                        laws: pl.DataFrame) -> pl.DataFrame:
    """Dataset-to-capacity ratio H_ref(D) / (α·P) per run, α of the run's kind and precision
    (SCIENCE.md §1); null where no α was fitted."""
    alpha = (laws.filter((pl.col("law") == "capacity") & (pl.col("parameter") == "alpha"))
             .select("kind", "precision", alpha="value"))
    return (memorization.drop("capacity_ratio")
            .join(runs.select("run_id", "kind", "precision", "params"), on="run_id")
            .join(alpha, on=["kind", "precision"], how="left")
            .with_columns(capacity_ratio=pl.col("dataset_bits")
                          / (pl.col("alpha") * pl.col("params")))
            .drop("kind", "precision", "params", "alpha"))


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
