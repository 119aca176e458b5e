"""The aggregate stage: run records -> the tables of the DuckDB contract -> one database.

`collect` reads every run folder's records into Parquet tables (memorization without its
capacity ratio, which needs the fitted α: memcap.stages.laws adds it); `build_database` loads every
table plus the `samples` view over the per-run score files into one DuckDB file, atomically (a
temporary file renamed into place).
"""

from __future__ import annotations

import math
from pathlib import Path

import duckdb
import polars as pl

from memcap.config import KINDS
from memcap.evaluation import memorization_row
from memcap.io import atomic_path, read_json
from memcap.plateau import estimate_plateau
from memcap.quantities import dataset_entropy_bits
from memcap.shapes import DEFAULT_FAMILY

RUNS_COLUMNS = [
    "run_id", "kind", "vocab_size", "seq_len", "n", "seed", "arch", "family", "n_layer", "d_model",
    "params", "precision", "compute_dtype", "steps", "batch_size", "lr", "saturated",
    "mem_growth_last_window", "final_train_loss", "train_loss", "heldout_loss", "device",
    "compiled", "cuda_graph", "train_seconds", "tokens_per_model", "steps_run", "schedule",
    "plateau_step", "plateau_by_rule", "decay_steps", "plateau_mem_bits_estimate",
    "decay_gain_bits_estimate", "compute_saved_frac",
]
# the plateau estimate (memcap.plateau), from each run's training log
PLATEAU_COLUMNS = ["mem_bits_plateau", "mem_bits_plateau_ci_low", "mem_bits_plateau_ci_high",
                   "plateau_fit"]


def _finite_or_none(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def plateau_row(log_path: Path, run: dict, score: dict) -> dict:
    """The plateau estimate of one run, in the units of its measured memorization
    (docs/science.md#the-plateau-estimate). The training log's memorization is against the
    uniform code on the first eval_samples training sequences, scaled to N: for a synthetic
    run the measured one's estimate (equal where N ≤ eval_samples), so the estimate is scaled
    by measured / the log's final value. Text runs get none: their measured memorization is
    against a learned reference, which the log does not know."""
    empty = dict.fromkeys(PLATEAU_COLUMNS[:3])
    if run["kind"] != "synthetic":
        return {**empty, "plateau_fit": "none: the training log measures against the uniform "
                                        "code, text memorization against its reference"}
    if not Path(log_path).exists():
        return {**empty, "plateau_fit": "none: no training log"}
    log = pl.read_parquet(log_path).sort("step")
    est = estimate_plateau(log["step"].to_numpy(), log["mem_bits"].to_numpy(),
                           log["lr"].to_numpy(), ceiling=score["dataset_bits"])
    if est.value is None:
        return {**empty, "plateau_fit": f"none: {est.fit}"}
    final = float(log["mem_bits"][-1])
    scale = score["mem_bits"] / final if final > 0 else 1.0
    cap = score["dataset_bits"]
    return {"mem_bits_plateau": min(est.value * scale, cap),
            "mem_bits_plateau_ci_low": min(est.ci_low * scale, cap),
            "mem_bits_plateau_ci_high": min(est.ci_high * scale, cap), "plateau_fit": est.fit}


def collect_tables(run_dirs: list[Path]) -> dict[str, pl.DataFrame]:
    """Read the records of every run folder -> runs, memorization (against each run's primary
    reference), memorization_by_reference (every reference), mia, extraction and top_samples
    (the 20 most memorized training samples of every run)."""
    runs, mem, by_ref, mia, extraction, tops = [], [], [], [], [], []
    for d in map(Path, run_dirs):
        r, s = read_json(d / "run.json"), read_json(d / "score.json")
        ev = read_json(d / "evaluation.json")
        rid = r["run_id"]
        for name, other in (("score.json", s), ("evaluation.json", ev)):
            if other["run_id"] != rid:
                raise ValueError(f"{d}/{name} belongs to run {other['run_id']}, not {rid}")
        runs.append({**{k: r.get(k) for k in RUNS_COLUMNS},
                     "family": r.get("family", DEFAULT_FAMILY),  # records before families: gpt2
                     "train_loss": s["train_loss"],
                     "heldout_loss": s["heldout_loss"],
                     **plateau_row(d / "train_log.parquet", r, s)})
        by_ref += [{"run_id": rid, "reference": name, **totals}
                   for name, totals in s["references"].items()]
        # totals, the false-positive floor and the reference's quality, from the samples
        # against the run's primary reference (the audit's memorization rows: the same)
        primary = (pl.scan_parquet(d / "scores.parquet", hive_partitioning=False)
                   .filter(pl.col("primary_reference")).collect())
        mem.append({**memorization_row(rid, primary, seq_len=r["seq_len"],
                                       vocab_size=r["vocab_size"], params=r["params"],
                                       reference=s["reference"]),
                    # the paper's H(D), first tokens included (docs/science.md#code-length)
                    "dataset_entropy_bits": dataset_entropy_bits(r["n"], r["seq_len"],
                                                                 r["vocab_size"]),
                    # NaN (a constant side, e.g. a reference run against itself) -> null,
                    # so SQL averages skip it
                    "tfidf_mem_spearman": _finite_or_none(ev["tfidf_mem_spearman"])})
        mia += ev["mia"]
        extraction += ev["extraction"]
        tops.append(pl.read_parquet(d / "top_samples.parquet"))
    runs_df = (pl.DataFrame(runs, schema_overrides={c: pl.Float64 for c in PLATEAU_COLUMNS[:3]})
               .select(*RUNS_COLUMNS, *PLATEAU_COLUMNS)
               .sort("kind", "arch", "precision", "n", "seed"))
    return {"runs": runs_df, "memorization": pl.DataFrame(mem, schema_overrides={
                "reference_heldout_bits_per_token": pl.Float64, "reference_flag": pl.String,
                "floor_bits_per_sample": pl.Float64, "excess_bits": pl.Float64,
                "excess_bits_se": pl.Float64}),
            "memorization_by_reference": pl.DataFrame(by_ref), "mia": pl.DataFrame(mia),
            "extraction": pl.DataFrame(extraction),
            "top_samples": pl.concat(tops, how="diagonal_relaxed")}


QUANTIZED_RUNS_SCHEMA = {
    "run_id": pl.String, "trained_run_id": pl.String, "scheme": pl.String, "kind": pl.String,
    "vocab_size": pl.Int64, "seq_len": pl.Int64, "n": pl.Int64, "seed": pl.Int64,
    "arch": pl.String, "n_layer": pl.Int64, "d_model": pl.Int64, "params": pl.Int64,
    "precision": pl.String, "bits": pl.Int64, "group_size": pl.Int64, "quantized_params": pl.Int64,
    "stored_bits": pl.Int64, "stored_bits_per_param": pl.Float64,
    "max_error_steps": pl.Float64, "torchao_max_abs_diff": pl.Float64,
    "reference": pl.String, "mem_bits": pl.Float64, "mem_bits_unclamped": pl.Float64,
    "dataset_bits": pl.Float64, "memorizable_fraction": pl.Float64,
    "bits_per_param": pl.Float64, "train_loss": pl.Float64, "heldout_loss": pl.Float64,
    "tfidf_mem_spearman": pl.Float64}


def collect_quantized(quantized_dirs: list[Path]) -> dict[str, pl.DataFrame]:
    """Read every quantized run's records (quant.json, score.json, evaluation.json) ->
    quantized_runs (one row per trained run and scheme: its stored bits, memorization against
    the run's primary reference, losses), quantized_mia and quantized_extraction (the rows
    of mia and extraction, by the quantized run's id)."""
    runs, mia, extraction = [], [], []
    for d in map(Path, quantized_dirs):
        q, s = read_json(d / "quant.json"), read_json(d / "score.json")
        ev = read_json(d / "evaluation.json")
        for name, other in (("score.json", s), ("evaluation.json", ev)):
            if other["run_id"] != q["run_id"]:
                raise ValueError(f"{d}/{name} belongs to run {other['run_id']}, not "
                                 f"{q['run_id']}")
        runs.append({**{k: q.get(k) for k in QUANTIZED_RUNS_SCHEMA},
                     "reference": s["reference"], "mem_bits": s["mem_bits"],
                     "mem_bits_unclamped": s["mem_bits_unclamped"],
                     "dataset_bits": s["dataset_bits"],
                     "memorizable_fraction": s["mem_bits"] / s["dataset_bits"],
                     "bits_per_param": s["mem_bits"] / q["params"],
                     "train_loss": s["train_loss"], "heldout_loss": s["heldout_loss"],
                     "tfidf_mem_spearman": _finite_or_none(ev["tfidf_mem_spearman"])})
        mia += ev["mia"]
        extraction += ev["extraction"]
    return {"quantized_runs": pl.DataFrame(runs, schema=QUANTIZED_RUNS_SCHEMA)
            .sort("kind", "arch", "precision", "scheme", "n", "seed"),
            "quantized_mia": pl.DataFrame(mia, schema=_like(mia, "mia")),
            "quantized_extraction": pl.DataFrame(extraction, schema=_like(extraction,
                                                                          "extraction"))}


# the columns of an empty quantized_mia / quantized_extraction (no scheme configured)
_EMPTY = {"mia": {"run_id": pl.String, "attack": pl.String, "auc": pl.Float64},
          "extraction": {"run_id": pl.String, "prefix_len": pl.Int64, "split": pl.String,
                         "rate": pl.Float64, "n_samples": pl.Int64}}


def _like(rows: list[dict], table: str) -> dict | None:
    return None if rows else _EMPTY[table]


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
        # a reference that codes held-out text worse than the uniform code has memorized
        # rather than learned (trained on too little data): memorization against it is inflated
        uniform = math.log(rec["vocab_size"])
        rows.append({"reference": rec["reference"], "run_id": rec["run_id"], "arch": rec["arch"],
                     "precision": rec["precision"], "heldout_loss": rec["heldout_loss"],
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


def _text_dataset_rows(stats_path: Path) -> pl.DataFrame:
    """One text pool's statistics (text_dataset.json): one row per corpus (and "all") × split."""
    stats = read_json(stats_path)
    return pl.DataFrame(stats["rows"]).with_columns(
        tokenizer=pl.lit(stats["tokenizer"]), vocab_size=pl.lit(stats["vocab_size"]),
        seq_len=pl.lit(stats["seq_len"]), sampling=pl.lit(stats["sampling"]))


def text_datasets_table(stats: list[Path]) -> pl.DataFrame:
    """The `text_datasets` table (empty when the experiment has no text part)."""
    frames = [_text_dataset_rows(p).select(list(TEXT_DATASETS_SCHEMA)) for p in stats]
    return pl.concat(frames).cast(TEXT_DATASETS_SCHEMA) if frames else pl.DataFrame(
        schema=TEXT_DATASETS_SCHEMA)


def collect(run_dirs: list[Path], references: list[Path], text_stats: list[Path],
            tables_dir: Path, memorization_out: Path, quantized_dirs: list[Path] = ()) -> str:
    """Every run folder's records (trained runs, and their quantized runs) -> the collected
    tables in tables_dir, and memorization (still without its capacity ratio) in
    memorization_out."""
    tables = collect_tables(run_dirs) | collect_quantized(quantized_dirs)
    tables["reference_models"] = references_table(references)
    tables["text_datasets"] = text_datasets_table(text_stats)
    for name, frame in tables.items():
        path = Path(memorization_out) if name == "memorization" else (
            Path(tables_dir) / f"{name}.parquet")
        with atomic_path(path) as tmp:
            frame.write_parquet(tmp)
    return (f"collected {tables['runs'].height} runs and {tables['quantized_runs'].height} "
            f"quantized runs into {tables_dir}")


def build_database(db_path: Path, table_files: list[Path], sample_files: list[Path],
                   audit_tables: list[Path] = (), audit_samples: list[Path] = (),
                   quantized_samples: list[Path] = ()) -> str:
    """Load every table (a Parquet file each, named by its stem), append the audits' rows to
    the tables of the same names (by column name; columns an audit lacks stay null), and
    define the `samples` view over the per-run, the quantized runs' (with their `scheme`)
    and the audits' score files.

    The view names the Parquet files by their paths relative to the working directory the
    workflow runs in, so open the database from the project root.
    """
    names = [Path(p).stem for p in table_files]
    with atomic_path(db_path) as tmp:
        con = duckdb.connect(str(tmp))
        try:
            for name, path in [*zip(names, table_files, strict=True),
                               *((Path(p).stem, p) for p in audit_tables)]:
                frame = pl.read_parquet(path)
                if path in audit_tables and not frame.height:
                    continue  # a target without a reference: no memorization rows
                con.register("frame_view", frame.to_arrow())
                exists = con.execute("SELECT count(*) FROM information_schema.tables "
                                     "WHERE table_name = ?", [name]).fetchall()[0][0]
                con.execute(f"INSERT INTO {name} BY NAME SELECT * FROM frame_view" if exists
                            else f"CREATE TABLE {name} AS SELECT * FROM frame_view")
                con.unregister("frame_view")
            # the training grid's runs, audited models apart (the report reads these)
            if "runs" in names:
                kinds = ", ".join(f"'{k}'" for k in KINDS)
                con.execute(f"CREATE VIEW grid_runs AS SELECT * FROM runs WHERE kind IN ({kinds})")
            # run files carry their grid coordinates as hive folders (quantized runs' their
            # scheme too), audit files none: one read per kind, united by column name
            lists = [", ".join(f"'{Path(f).as_posix()}'" for f in files)
                     for files in (sample_files, quantized_samples, audit_samples) if files]
            parts = [f"SELECT * FROM read_parquet([{files}])" for files in lists]
            if parts:
                con.execute("CREATE VIEW samples AS " + " UNION ALL BY NAME ".join(parts))
        finally:
            con.close()
    return (f"wrote {db_path}: {', '.join(names)}, {len(audit_tables)} audit table(s) and view "
            f"samples over {len(sample_files) + len(quantized_samples) + len(audit_samples)} "
            "files")
