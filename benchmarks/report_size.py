"""Size of the figures and the report for a grid's plan, before the grid has run.

    python benchmarks/report_size.py --template results [--config configs/paper-synthetic.yaml]

Runs the real laws, database, figures and report stages on collected tables shaped like the
config's synthetic grid (every architecture × precision × N × seed of its plan: 1,920 runs for
the paper grid). The tables' values are copied from the finished synthetic runs of --template
(any results/ tree, e.g. the default run's or the smoke run's), cycled over the grid with the
grid's coordinates and parameter counts: the numbers are not science, only their count and
layout are the grid's. Each seed-0 run gets a score file with mia_samples members and as many
non-members (the rows the ROC figure draws, resampled from the template with jitter, so every
ROC curve has full resolution), so the figures embed what they would at any N. Prints each
figure's size and the report's; the report must stay under --limit-mb.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from memcap.config import arch_id, cells, run_id, validate_config  # noqa: E402
from memcap.paths import COLLECTED, FITTED  # noqa: E402
from memcap.shapes import Shape  # noqa: E402
from memcap.stages.aggregate import build_database, collect_quantized  # noqa: E402
from memcap.stages.figures import write_figures  # noqa: E402
from memcap.stages.laws import fit_laws  # noqa: E402
from memcap.stages.report import write_report  # noqa: E402

PER_RUN = ("memorization_by_reference", "mia", "extraction", "top_samples")


def grid_tables(template: Path, config: dict, out: Path,
                rng: np.random.Generator) -> tuple[list[Path], list[Path]]:
    """The collected tables of the config's synthetic grid, from the template's synthetic
    runs; writes them (and seed-0 score and membership-set files) under out; returns the
    score files and the set files."""
    tdir = template / "tables"
    runs_t = pl.read_parquet(tdir / "runs.parquet").filter(pl.col("kind") == "synthetic")
    mem_t = pl.read_parquet(template / "collected/memorization.parquet")
    per_run = {name: pl.read_parquet(tdir / f"{name}.parquet") for name in PER_RUN}
    templates = runs_t.sort("arch", "n", "seed").to_dicts()
    syn = config["synthetic"]
    V, S, mia_samples = syn["vocab_size"], syn["seq_len"], config["evaluate"]["mia_samples"]
    archs = {arch_id(a): a for a in config["architectures"]}
    rows, mem, tables, score_files, set_files = [], [], {k: [] for k in PER_RUN}, [], []
    plan = [(c, s) for c in cells(config, "synthetic") for s in config["seeds"]]
    for i, (cell, seed) in enumerate(plan):
        t = templates[i % len(templates)]
        a = archs[cell["arch"]]
        rid = run_id("synthetic", V, S, cell["arch"], cell["precision"], cell["n"], seed)
        rows.append({**t, "run_id": rid, "vocab_size": V, "seq_len": S, "n": cell["n"],
                     "seed": seed, "arch": cell["arch"], "n_layer": a["n_layer"],
                     "d_model": a["d_model"], "params": Shape(V, S, a["n_layer"],
                                                                     a["d_model"]).params,
                     "precision": cell["precision"]})
        mem.append(mem_t.filter(pl.col("run_id") == t["run_id"]).with_columns(
            run_id=pl.lit(rid)))
        for name, frame in per_run.items():
            tables[name].append(frame.filter(pl.col("run_id") == t["run_id"]).with_columns(
                run_id=pl.lit(rid)))
        if seed == config["seeds"][0]:
            path = out / "scores" / f"{len(score_files)}.parquet"
            score_files.append(run_file(template, t, "scores.parquet", rid, mia_samples, path,
                                        rng))
            path = out / "sets" / f"{len(set_files)}.parquet"
            set_files.append(run_file(template, t, "mia_sets.parquet", rid, mia_samples, path,
                                      rng))
    collected = {"runs": pl.DataFrame(rows, schema=runs_t.schema),
                 **{k: pl.concat(v) for k, v in tables.items()},
                 "reference_models": pl.read_parquet(tdir / "reference_models.parquet").clear(),
                 "text_datasets": pl.read_parquet(tdir / "text_datasets.parquet").clear(),
                 # the report's size is the grid's: no quantized runs
                 **collect_quantized([])}
    (out / "tables").mkdir(parents=True, exist_ok=True)
    for name in COLLECTED:
        collected[name].write_parquet(out / f"tables/{name}.parquet")
    pl.concat(mem).write_parquet(out / "collected.parquet")
    return score_files, set_files


def run_file(template: Path, t: dict, name: str, rid: str, rows: int, path: Path,
             rng: np.random.Generator) -> Path:
    """A seed-0 run's scores.parquet (its primary reference's rows) or mia_sets.parquet:
    `rows` members and `rows` non-members resampled (with jitter on the scores) from the
    template run's file."""
    src = next(template.glob(f"runs/kind=synthetic/*/*/arch={t['arch']}/"
                             f"precision={t['precision']}/n={t['n']}/seed={t['seed']}/{name}"))
    scores = pl.read_parquet(src, hive_partitioning=False)
    if "primary_reference" in scores.columns:
        scores = scores.filter(pl.col("primary_reference"))
    jittered = [c for c in ("nll_bits", "loss", "reference", "zlib", "min_k")
                if c in scores.columns and scores.schema[c] == pl.Float64]
    parts = []
    for member in (True, False):
        part = scores.filter(pl.col("member") == member)
        pick = part[rng.integers(0, part.height, rows)]
        parts.append(pick.with_columns(
            sample_id=pl.int_range(0, rows, dtype=pl.Int64) + (0 if member else 1 << 40),
            **{c: pl.col(c) + pl.Series(rng.normal(0, 0.5, rows)) for c in jittered}))
    path.parent.mkdir(parents=True, exist_ok=True)
    pl.concat(parts).with_columns(run_id=pl.lit(rid)).write_parquet(path)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--template", type=Path, default=REPO / "results",
                   help="a finished results/ tree with synthetic runs")
    p.add_argument("--config", type=Path, default=REPO / "configs/paper-synthetic.yaml")
    p.add_argument("--limit-mb", type=float, default=10.0)
    p.add_argument("--workdir", type=Path, help="scratch folder (default: a temp dir)")
    args = p.parse_args()
    config = validate_config(yaml.safe_load(args.config.read_text()))
    with tempfile.TemporaryDirectory() as tmp:
        out = args.workdir or Path(tmp)
        score_files, set_files = grid_tables(args.template, config, out,
                                             np.random.default_rng(0))
        tables = out / "tables"
        fit_laws(tables / "runs.parquet", out / "collected.parquet", tables / "mia.parquet",
                 {name: tables / f"{name}.parquet" for name in FITTED},
                 quantized_runs=tables / "quantized_runs.parquet",
                 quantized_mia=tables / "quantized_mia.parquet", **config["laws"])
        table_files = [tables / f"{name}.parquet" for name in COLLECTED + FITTED]
        build_database(out / "memcap.duckdb", table_files, score_files)
        figures = write_figures(tables, score_files, set_files, out / "figures")
        write_report(out / "memcap.duckdb", out / "figures", out / "report.html")
        runs = pl.read_parquet(tables / "runs.parquet").height
        print(f"{args.config.name}: {runs:,} runs, {len(score_files):,} score files")
        for f in figures:
            print(f"  {f.name:28s} {f.stat().st_size / 2**20:7.2f} MiB")
        size = (out / "report.html").stat().st_size / 2**20
        print(f"report.html {size:.2f} MiB (limit {args.limit_mb} MiB)")
        if size > args.limit_mb:
            raise SystemExit(f"the report is {size:.2f} MiB, over {args.limit_mb} MiB")


if __name__ == "__main__":
    main()
