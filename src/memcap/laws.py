"""Capacity per architecture and the bits-per-parameter law (SCIENCE.md §1).

capacity C(arch, precision) = max over N of the mean over seeds of M(D_N, θ̂)
α = least-squares slope of C against P through the origin, per (kind, precision)
CIs: percentile bootstrap over seeds (seed s sets data and initialisation, so a bootstrap
sample redraws whole seeds, the same draw for every architecture and N).
"""

from __future__ import annotations

import numpy as np
import polars as pl

# A dataset counts as data-limited when the model memorized at least this share of its
# memorizable bits: then the capacity may lie above the measured maximum.
DATA_LIMITED_FRACTION = 0.95


def capacity_table(runs: pl.DataFrame, memorization: pl.DataFrame) -> pl.DataFrame:
    """One row per (kind, arch, precision): capacity, where it sits, and whether it is a plateau.

    saturated = every run at n_at_max passed the training saturation rule AND the maximum is a
    plateau (a larger N exists in the grid and the runs at n_at_max are not data-limited).
    Otherwise the capacity is a lower bound (`lower_bound` = not saturated).
    """
    df = runs.join(memorization, on="run_id")
    per_n = (df.group_by("kind", "arch", "n_layer", "d_model", "precision", "params", "n")
             .agg(mean_mem=pl.col("mem_bits").mean(), std_mem=pl.col("mem_bits").std(),
                  n_seeds=pl.len(), all_saturated=pl.col("saturated").all(),
                  frac=pl.col("memorizable_fraction").mean()))
    keys = ["kind", "arch", "precision"]
    n_max = per_n.group_by(keys).agg(n_max=pl.col("n").max(), n_sizes=pl.len())
    best = (per_n.sort(["mean_mem", "n"], descending=[True, False])  # ties: smallest N
            .group_by(keys, maintain_order=True).first()
            .join(n_max, on=keys))
    return (best.select(
        *keys, "n_layer", "d_model", "params",
        capacity_bits="mean_mem", capacity_seed_std="std_mem", n_seeds="n_seeds",
        n_at_max="n", n_max="n_max",
        bits_per_param=pl.col("mean_mem") / pl.col("params"),
        memorized_fraction_at_max="frac",
        training_saturated="all_saturated",
        plateau_reached=(pl.col("n") < pl.col("n_max")) & (pl.col("frac") < DATA_LIMITED_FRACTION),
    ).with_columns(saturated=pl.col("training_saturated") & pl.col("plateau_reached"))
     .with_columns(lower_bound=~pl.col("saturated"))
     .sort("kind", "precision", "params"))


def slope_through_origin(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares slope of y = a·x along the last axis."""
    return (x * y).sum(-1) / (x * x).sum(-1)


def _seed_tensor(runs: pl.DataFrame, memorization: pl.DataFrame, kind: str, precision: str
                 ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(arch ids, params (A,), mem bits (A, n sizes, seeds)) with NaN for missing runs."""
    df = (runs.filter((pl.col("kind") == kind) & (pl.col("precision") == precision))
          .join(memorization, on="run_id"))
    archs = df.select("arch", "params").unique().sort("params", "arch")
    sizes = sorted(df["n"].unique().to_list())
    seeds = sorted(df["seed"].unique().to_list())
    a_ix = {a: i for i, a in enumerate(archs["arch"])}
    n_ix = {n: i for i, n in enumerate(sizes)}
    s_ix = {s: i for i, s in enumerate(seeds)}
    mem = np.full((len(a_ix), len(sizes), len(seeds)), np.nan)
    for row in df.select("arch", "n", "seed", "mem_bits").iter_rows():
        mem[a_ix[row[0]], n_ix[row[1]], s_ix[row[2]]] = row[3]
    return archs["arch"].to_list(), archs["params"].to_numpy().astype(float), mem


def bootstrap_capacity(mem: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Capacities (n_boot, A) from seed resamples: mean over drawn seeds, then max over N."""
    k = mem.shape[-1]
    draws = rng.integers(0, k, size=(n_boot, k))
    weights = np.stack([np.bincount(d, minlength=k) for d in draws]).astype(float)  # (B, k)
    present = ~np.isnan(mem)
    filled = np.where(present, mem, 0.0)
    num = np.einsum("ank,bk->ban", filled, weights)
    den = np.einsum("ank,bk->ban", present.astype(float), weights)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = num / den
    return np.nanmax(np.where(np.isnan(means), -np.inf, means), axis=-1)


def fit_capacity_laws(runs: pl.DataFrame, memorization: pl.DataFrame, capacity: pl.DataFrame,
                      n_boot: int = 1000, ci: float = 0.95, seed: int = 0) -> pl.DataFrame:
    """Rows of the `laws` table for law 'capacity': alpha (slope through the origin) and
    mean_bits_per_param (mean of per-architecture C/P), with seed-bootstrap CIs.

    lower_bound is set, with its reason, when a capacity behind the fit is a lower bound or
    when any run behind it trained on a CPU (short runs: SCIENCE.md §4)."""
    rows = []
    lo_q, hi_q = (1 - ci) / 2, 1 - (1 - ci) / 2
    for (kind, precision), cap in capacity.group_by("kind", "precision", maintain_order=True):
        archs, params, mem = _seed_tensor(runs, memorization, kind, precision)
        c_by_arch = dict(zip(cap["arch"], cap["capacity_bits"], strict=True))
        c = np.array([c_by_arch[a] for a in archs])
        boot = bootstrap_capacity(mem, n_boot, np.random.default_rng(seed))
        fit_runs = runs.filter((pl.col("kind") == kind) & (pl.col("precision") == precision))
        reasons = []
        if cap["lower_bound"].any():
            reasons.append("capacity not saturated for " + ", ".join(
                cap.filter(pl.col("lower_bound"))["arch"].to_list()))
        if "device" in fit_runs.columns and (fit_runs["device"] == "cpu").any():
            reasons.append("CPU-sized training budget (SCIENCE.md §4)")
        estimates = {
            "alpha": (slope_through_origin(params, c), slope_through_origin(params, boot)),
            "mean_bits_per_param": ((c / params).mean(), (boot / params).mean(-1)),
        }
        for name, (value, dist) in estimates.items():
            rows.append({"law": "capacity", "kind": kind, "precision": precision,
                         "parameter": name, "value": float(value),
                         "ci_low": float(np.quantile(dist, lo_q)),
                         "ci_high": float(np.quantile(dist, hi_q)),
                         "n_archs": len(archs), "n_seeds": mem.shape[-1],
                         "lower_bound": bool(reasons), "lower_bound_reason": "; ".join(reasons)})
    schema = {"law": pl.String, "kind": pl.String, "precision": pl.String,
              "parameter": pl.String, "value": pl.Float64, "ci_low": pl.Float64,
              "ci_high": pl.Float64, "n_archs": pl.Int64, "n_seeds": pl.Int64,
              "lower_bound": pl.Boolean, "lower_bound_reason": pl.String}
    return pl.DataFrame(rows, schema=schema)
