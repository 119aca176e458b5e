"""The laws stage: capacity per architecture, the bits-per-parameter law, the membership law,
the dataset-to-capacity ratio and double descent (docs/science.md#capacity and after).

capacity C(arch, precision) = max over N of the mean over seeds of M(D_N, θ̂)
α = least-squares slope of C against P through the origin, per (kind, precision)
CIs: percentile bootstrap over seeds (seed s sets data and initialisation, so a bootstrap
sample redraws whole seeds, the same draw for every architecture and N).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl

from memcap.io import atomic_path
from memcap.paper import PAPER_ALPHA_BF16
from memcap.quantities import (
    MIN_CI_SEEDS,
    capacity_ratio,
    memorizable_bits,
    mia_f1,
    sequences_per_param,
)
from memcap.schemes import TRAINED

LAW_SCHEMA = {"law": pl.String, "kind": pl.String, "family": pl.String,
              "precision": pl.String, "parameter": pl.String, "value": pl.Float64,
              "ci_low": pl.Float64, "ci_high": pl.Float64, "n_archs": pl.Int64, "n_seeds": pl.Int64,
              "lower_bound": pl.Boolean, "note": pl.String}

# A dataset counts as data-limited when the model memorized at least this share of its
# memorizable bits: then the capacity may lie above the measured maximum.
DATA_LIMITED_FRACTION = 0.95


def capacity_table(runs: pl.DataFrame, memorization: pl.DataFrame) -> pl.DataFrame:
    """One row per (kind, arch, precision): capacity, where it sits, whether the grid brackets
    it, and whether it is a plateau (docs/science.md#capacity).

    bracketed = the grid holds a smaller and a larger N than n_at_max (its neighbours, which
    hold no more than the maximum by its definition), and every run at the three N passed
    the saturation rule (trained to its plateau); bracket_status says what is missing
    otherwise.
    saturated = bracketed AND every run at n_at_max saturated AND the maximum is a plateau
    (a larger N exists and the runs at n_at_max are not data-limited). Otherwise the
    capacity is a lower bound (`lower_bound` = not saturated).

    With the runs' plateau estimates (runs.mem_bits_plateau, memcap.plateau), the capacity
    computed from them as well: the same maximum over N of the means over seeds, labelled
    an estimate.
    """
    df = runs.join(memorization, on="run_id")
    has_estimate = "mem_bits_plateau" in df.columns
    # an N's estimate needs every seed's (a mean over some seeds is another quantity)
    estimate = ([pl.when(pl.col(c).null_count() == 0).then(pl.col(c).mean()).alias(f"mean_{c}")
                 for c in PLATEAU_COLUMNS] if has_estimate else [])
    per_n = (df.group_by("kind", "arch", "family", "n_layer", "d_model", "precision", "params",
                         "n")
             .agg(*estimate, mean_mem=pl.col("mem_bits").mean(),
                  std_mem=pl.col("mem_bits").std(), n_seeds=pl.len(),
                  all_saturated=pl.col("saturated").all(),
                  frac=pl.col("memorizable_fraction").mean()))
    keys = ["kind", "arch", "precision"]
    n_range = per_n.group_by(keys).agg(n_max=pl.col("n").max(), n_min=pl.col("n").min(),
                                        n_sizes=pl.len())
    best = (per_n.sort(["mean_mem", "n"], descending=[True, False])  # ties: smallest N
            .group_by(keys, maintain_order=True).first()
            .join(n_range, on=keys))
    table = (best.select(
        *keys, "family", "n_layer", "d_model", "params",
        capacity_bits="mean_mem", capacity_seed_std="std_mem", n_seeds="n_seeds",
        n_at_max="n", n_max="n_max", n_min="n_min",
        bits_per_param=pl.col("mean_mem") / pl.col("params"),
        memorized_fraction_at_max="frac",
        training_saturated="all_saturated",
        plateau_reached=(pl.col("n") < pl.col("n_max")) & (pl.col("frac") < DATA_LIMITED_FRACTION),
    ).join(bracket_table(per_n, best), on=keys)
     .with_columns(saturated=pl.col("training_saturated") & pl.col("plateau_reached")
                   & pl.col("bracketed"))
     .with_columns(lower_bound=~pl.col("saturated")))
    return (table.join(_capacity_estimate(per_n, has_estimate), on=keys, how="left")
            .sort("kind", "precision", "params"))


# the per-run plateau estimate and its CI (runs table, memcap.plateau)
PLATEAU_COLUMNS = ("mem_bits_plateau", "mem_bits_plateau_ci_low", "mem_bits_plateau_ci_high")

BRACKET_SCHEMA = {"kind": pl.String, "arch": pl.String, "precision": pl.String,
                  "bracket_n_below": pl.Int64, "bracket_n_above": pl.Int64,
                  "bracketed": pl.Boolean, "bracket_status": pl.String}


def bracket_table(per_n: pl.DataFrame, best: pl.DataFrame) -> pl.DataFrame:
    """Per (kind, arch, precision): the neighbours of the maximum in the grid of N and whether
    they bracket it (docs/science.md#bracketing). per_n: one row per N with mean_mem and
    all_saturated; best: the row of the maximum (n, mean_mem, all_saturated).

    bracket_n_below / bracket_n_above: the next smaller / larger N of the grid (null at an
    end); both hold less than the maximum (ties go to the smallest N, so the N above may hold
    as much: a flat plateau). bracket_status: "bracketed", or every reason it is not, joined
    by "; ": "max at the largest N", "max at the smallest N", "max at the only N", "runs at
    the maximum not saturated", "N below not saturated", "N above not saturated"."""
    keys = ["kind", "arch", "precision"]
    rows = []
    for key, grid in per_n.sort("n").group_by(keys, maintain_order=True):
        at = best.filter(*[pl.col(k) == v for k, v in zip(keys, key, strict=True)]).row(
            0, named=True)
        sizes = grid["n"].to_list()
        i = sizes.index(at["n"])
        below = grid.row(i - 1, named=True) if i > 0 else None
        above = grid.row(i + 1, named=True) if i + 1 < len(sizes) else None
        reasons = []
        if below is None and above is None:
            reasons.append("max at the only N")
        elif above is None:
            reasons.append("max at the largest N")
        elif below is None:
            reasons.append("max at the smallest N")
        if not at["all_saturated"]:
            reasons.append("runs at the maximum not saturated")
        for side, row in (("below", below), ("above", above)):
            if row is not None and not row["all_saturated"]:
                reasons.append(f"N {side} not saturated")
        rows.append({**dict(zip(keys, key, strict=True)),
                     "bracket_n_below": None if below is None else below["n"],
                     "bracket_n_above": None if above is None else above["n"],
                     "bracketed": not reasons,
                     "bracket_status": "; ".join(reasons) or "bracketed"})
    return pl.DataFrame(rows, schema=BRACKET_SCHEMA)


ESTIMATE_SCHEMA = {"kind": pl.String, "arch": pl.String, "precision": pl.String,
                   "capacity_bits_estimate": pl.Float64,
                   "capacity_bits_estimate_ci_low": pl.Float64,
                   "capacity_bits_estimate_ci_high": pl.Float64,
                   "n_at_max_estimate": pl.Int64, "bits_per_param_estimate": pl.Float64}


def _capacity_estimate(per_n: pl.DataFrame, has_estimate: bool) -> pl.DataFrame:
    """Capacity from the runs' plateau estimates: the maximum over N of the mean over seeds
    of mem_bits_plateau, with the same maximum of the means of each run's CI bounds (the
    fits' uncertainty, not the seeds' spread), over the N where every run has an estimate
    (null where none has)."""
    keys = ["kind", "arch", "precision"]
    if not has_estimate:
        return pl.DataFrame(schema=ESTIMATE_SCHEMA)
    est = per_n.filter(pl.col("mean_mem_bits_plateau").is_not_null())
    best = (est.sort(["mean_mem_bits_plateau", "n"], descending=[True, False])
            .group_by(keys, maintain_order=True).first())
    bounds = est.group_by(keys).agg(lo=pl.col("mean_mem_bits_plateau_ci_low").max(),
                                    hi=pl.col("mean_mem_bits_plateau_ci_high").max())
    return (best.join(bounds, on=keys).select(
        *keys, capacity_bits_estimate="mean_mem_bits_plateau",
        capacity_bits_estimate_ci_low="lo", capacity_bits_estimate_ci_high="hi",
        n_at_max_estimate="n",
        bits_per_param_estimate=pl.col("mean_mem_bits_plateau") / pl.col("params"))
        .cast(ESTIMATE_SCHEMA))


def slope_through_origin(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares slope of y = a·x along the last axis."""
    return (x * y).sum(-1) / (x * x).sum(-1)


def _seed_tensor(runs: pl.DataFrame, memorization: pl.DataFrame, kind: str, family: str,
                 precision: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(arch ids, params (A,), mem bits (A, n sizes, seeds)) of one family's runs, with NaN
    for missing runs."""
    df = (runs.filter((pl.col("kind") == kind) & (pl.col("precision") == precision)
                      & (pl.col("family") == family))
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
                      *, bootstrap: int, ci: float, seed: int) -> pl.DataFrame:
    """Rows of the `laws` table for law 'capacity': alpha (slope through the origin) and
    mean_bits_per_param (mean of per-architecture C/P), with seed-bootstrap CIs, one fit per
    (kind, family, precision).

    lower_bound is set, with its reason, when a capacity behind the fit is a lower bound or
    when any run behind it trained on a CPU (short runs: docs/science.md#what-a-cpu-can-show)."""
    rows = []
    lo_q, hi_q = (1 - ci) / 2, 1 - (1 - ci) / 2
    # capacity is measured on synthetic data, where the reference is the true distribution;
    # on text, memorization against a learned reference is no capacity measurement
    synthetic = capacity.filter(pl.col("kind") == "synthetic")
    for (kind, family, precision), cap in synthetic.group_by("kind", "family", "precision",
                                                             maintain_order=True):
        archs, params, mem = _seed_tensor(runs, memorization, kind, family, precision)
        c_by_arch = dict(zip(cap["arch"], cap["capacity_bits"], strict=True))
        c = np.array([c_by_arch[a] for a in archs])
        boot = bootstrap_capacity(mem, bootstrap, np.random.default_rng(seed))
        fit_runs = runs.filter((pl.col("kind") == kind) & (pl.col("precision") == precision)
                               & (pl.col("family") == family))
        reasons = []
        if cap["lower_bound"].any():
            reasons.append("capacity not saturated for " + ", ".join(
                cap.filter(pl.col("lower_bound"))["arch"].to_list()))
        if "device" in fit_runs.columns and (fit_runs["device"] == "cpu").any():
            reasons.append("CPU-sized training budget (docs/science.md#what-a-cpu-can-show)")
        estimates = {
            "alpha": (slope_through_origin(params, c), slope_through_origin(params, boot)),
            "mean_bits_per_param": ((c / params).mean(), (boot / params).mean(-1)),
        }
        for name, (value, dist) in estimates.items():
            rows.append({"law": "capacity", "kind": kind, "family": family,
                         "precision": precision,
                         "parameter": name, "value": float(value),
                         "ci_low": float(np.quantile(dist, lo_q)),
                         "ci_high": float(np.quantile(dist, hi_q)),
                         "n_archs": len(archs), "n_seeds": mem.shape[-1],
                         "lower_bound": bool(reasons), "note": "; ".join(reasons)})
    return pl.DataFrame(rows, schema=LAW_SCHEMA)


# --- membership inference law (docs/science.md#membership-law) ---------------------------

def fit_mia_curve(x: np.ndarray, y: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
    """Least-squares (c1, c2, c3): a coarse grid picks the start (unless given), then a
    bounded curve_fit refines it."""
    from scipy.optimize import curve_fit

    x, y = np.asarray(x, float), np.asarray(y, float)
    if start is None:
        c3 = np.quantile(x, np.linspace(0.05, 0.95, 10))[:, None, None]
        c2 = (np.geomspace(0.3, 300, 13) / max(float(np.median(x)), 1e-9))[None, :, None]
        c1 = np.array([0.8, 1.0, 1.34])[None, None, :]
        pred = mia_f1(x[:, None, None, None], c1, c2, c3)  # (points, c3, c2, c1)
        err = ((pred - y[:, None, None, None]) ** 2).sum(0)
        i3, i2, i1 = np.unravel_index(np.argmin(err), err.shape)
        start = np.array([c1.ravel()[i1], c2.ravel()[i2], c3.ravel()[i3]])
    try:
        popt, _ = curve_fit(mia_f1, x, y, p0=start, maxfev=20000,
                            bounds=([0.0, 1e-6, -10.0], [4.0, 1e6, 10.0]))
    except (RuntimeError, ValueError):
        popt = np.asarray(start, float)
    return popt


def fit_mia_law(runs: pl.DataFrame, mia: pl.DataFrame, *, bootstrap: int, ci: float, seed: int,
                attack: str = "loss") -> pl.DataFrame:
    """Rows of `laws` for law 'mia_f1': c1, c2, c3 fitted on cell means of the median-threshold
    F1 of `attack`, with a seed-bootstrap CI; one fit per (kind, family, precision)."""
    df = (runs.join(mia.filter(pl.col("attack") == attack), on="run_id")
          .with_columns(x=sequences_per_param(pl.col("n"), pl.col("seq_len"), pl.col("params"))))
    rows = []
    lo_q, hi_q = (1 - ci) / 2, 1 - (1 - ci) / 2
    rng = np.random.default_rng(seed)
    for (kind, family, precision), part in df.group_by("kind", "family", "precision",
                                                       maintain_order=True):
        cells = part.select("arch", "n").unique().sort("arch", "n")
        if cells.height < 4:
            continue
        seeds = sorted(part["seed"].unique().to_list())
        table = part.pivot(on="seed", index=["arch", "n", "x"], values="f1_median").sort(
            "arch", "n")
        x = table["x"].to_numpy()
        f1 = table.select([str(s) for s in seeds]).to_numpy()  # (cells, seeds)
        point = fit_mia_curve(x, np.nanmean(f1, axis=1))
        fits: dict[tuple[int, ...], np.ndarray] = {}  # a resample is a multiset of seeds
        boot = []
        for _ in range(bootstrap):
            draw = tuple(sorted(rng.integers(0, len(seeds), len(seeds))))
            if draw not in fits:
                fits[draw] = fit_mia_curve(x, np.nanmean(f1[:, list(draw)], axis=1), point)
            boot.append(fits[draw])
        boot = np.array(boot)
        resid = float(np.sqrt(np.mean((mia_f1(x, *point) - np.nanmean(f1, axis=1)) ** 2)))
        for i, name in enumerate(("c1", "c2", "c3")):
            rows.append({"law": "mia_f1", "kind": kind, "family": family,
                         "precision": precision,
                         "parameter": name, "value": float(point[i]),
                         "ci_low": float(np.quantile(boot[:, i], lo_q)),
                         "ci_high": float(np.quantile(boot[:, i], hi_q)),
                         "n_archs": part["arch"].n_unique(), "n_seeds": len(seeds),
                         "lower_bound": False,
                         "note": f"{attack} attack, {x.size} cells, "
                                               f"rms residual {resid:.4f}"})
    return pl.DataFrame(rows, schema=LAW_SCHEMA)


# --- dataset-to-capacity ratio and double descent (docs/science.md#dataset-to-capacity-ratio)

def synthetic_alpha(laws: pl.DataFrame) -> pl.DataFrame:
    """The synthetic α of each (family, precision)."""
    return (laws.filter((pl.col("law") == "capacity") & (pl.col("parameter") == "alpha")
                        & (pl.col("kind") == "synthetic"))
            .select("family", "precision", alpha="value"))


def with_capacity_ratio(memorization: pl.DataFrame, runs: pl.DataFrame,
                        laws: pl.DataFrame) -> pl.DataFrame:
    """Dataset-to-capacity ratio H_ref(D) / (α·P) per run, with α the synthetic
    bits-per-parameter slope of the run's family and precision (capacity is a property of the
    architecture, measured on synthetic data), or the paper's α where the experiment fitted
    none (a text-only config); `alpha_source` says which."""
    return (memorization.join(runs.select("run_id", "family", "precision", "params"),
                              on="run_id")
            .join(synthetic_alpha(laws), on=["family", "precision"], how="left")
            .with_columns(alpha_source=pl.when(pl.col("alpha").is_null())
                          .then(pl.lit(f"paper ({PAPER_ALPHA_BF16})"))
                          .otherwise(pl.lit("synthetic fit")),
                          alpha=pl.col("alpha").fill_null(PAPER_ALPHA_BF16))
            .with_columns(capacity_ratio=capacity_ratio(pl.col("dataset_bits"), pl.col("alpha"),
                                                        pl.col("params")))
            .drop("family", "precision", "params", "alpha"))



DOUBLE_DESCENT_SCHEMA = {
    "kind": pl.String, "arch": pl.String, "precision": pl.String, "params": pl.Int64,
    "peak_n": pl.Int64, "peak_ratio": pl.Float64, "peak_heldout_loss": pl.Float64,
    "min_n": pl.Int64, "max_n": pl.Int64, "ratio_at_min_n": pl.Float64,
    "ratio_at_max_n": pl.Float64, "peak_interior": pl.Boolean, "n_sizes": pl.Int64}


def double_descent(runs: pl.DataFrame, memorization: pl.DataFrame) -> pl.DataFrame:
    """Per text architecture and precision: where the held-out loss (mean over seeds) peaks
    along the grid of N, and the dataset-to-capacity ratio there (memorization must carry
    capacity_ratio). peak_interior is False when the peak sits at the grid's edge: then the
    grid does not bracket the peak and the ratio is a bound, not a location."""
    df = (runs.filter(pl.col("kind") == "text")
          .join(memorization.select("run_id", "capacity_ratio"), on="run_id"))
    if df.is_empty():
        return pl.DataFrame(schema=DOUBLE_DESCENT_SCHEMA)
    keys = ["kind", "arch", "precision", "params"]
    per_n = (df.group_by(*keys, "n")
             .agg(loss=pl.col("heldout_loss").mean(), ratio=pl.col("capacity_ratio").mean())
             .sort(*keys, "n"))
    rows = []
    for key, part in per_n.group_by(keys, maintain_order=True):
        peak = part.row(int(part["loss"].arg_max()), named=True)
        rows.append({**dict(zip(keys, key, strict=True)), "peak_n": peak["n"],
                     "peak_ratio": peak["ratio"], "peak_heldout_loss": peak["loss"],
                     "min_n": part["n"].min(), "max_n": part["n"].max(),
                     "ratio_at_min_n": part["ratio"][0], "ratio_at_max_n": part["ratio"][-1],
                     "peak_interior": part["n"].min() < peak["n"] < part["n"].max(),
                     "n_sizes": part.height})
    return pl.DataFrame(rows, schema=DOUBLE_DESCENT_SCHEMA).sort("precision", "params")


# --- extending the grid to bracket the maximum (docs/science.md#bracketing) ---------------

def next_bracket_n(n_at_max: int, n_min: int, n_max: int, predicted_n: float,
                   n_above: int | None = None, data_limited: bool = False) -> int | None:
    """The N to add so that the grid brackets its maximum; None when no N would help.

    At the largest N: n_max·2^k, at the smallest: n_min/2^k (at least 1), with k ≥ 1 the
    fewest doublings that reach the predicted capacity `predicted_n` (sequences of α·P bits;
    past it a run holds less than at capacity). So the grid doubles until the prediction,
    and a prediction inside the grid adds the neighbouring power of two. A data-limited
    maximum (its runs memorized nearly all their data) with a larger N beside it has the
    capacity between the two: the N halfway between them on a log scale is added instead."""
    if data_limited and n_above is not None:
        mid = round(math.sqrt(n_at_max * n_above))
        return mid if n_at_max < mid < n_above else None
    if n_min < n_at_max < n_max or not math.isfinite(predicted_n) or predicted_n <= 0:
        return None
    if n_at_max == n_max:
        k = max(1, math.ceil(math.log2(predicted_n / n_max)))
        return int(n_max * 2 ** k)
    k = max(1, math.ceil(math.log2(n_min / predicted_n)))
    below = n_min // 2 ** k
    return below if below >= 1 and n_min > 1 else None


def with_next_bracket_n(capacity: pl.DataFrame, runs: pl.DataFrame,
                        laws: pl.DataFrame) -> pl.DataFrame:
    """Add `bracket_next_n`: the N the grid needs next to bracket each synthetic
    architecture's maximum (next_bracket_n), with the predicted capacity α·P / ((S−1)·log2 V)
    sequences from the synthetic α of its family and precision (the paper's where none was
    fitted).
    Null where no N would help (a maximum inside the grid, not data-limited) and for text
    (its N are shared by every architecture)."""
    alpha = {(f, p): a for f, p, a in synthetic_alpha(laws).iter_rows()}
    shapes = runs.filter(pl.col("kind") == "synthetic").select("vocab_size", "seq_len").unique()
    bits_per_seq = (memorizable_bits(1, shapes["seq_len"][0], shapes["vocab_size"][0])
                    if shapes.height == 1 else float("nan"))
    nxt = [next_bracket_n(r["n_at_max"], r["n_min"], r["n_max"],
                          alpha.get((r["family"], r["precision"]), PAPER_ALPHA_BF16)
                          * r["params"] / bits_per_seq,
                          r["bracket_n_above"],
                          r["memorized_fraction_at_max"] >= DATA_LIMITED_FRACTION)
           if r["kind"] == "synthetic" else None for r in capacity.iter_rows(named=True)]
    return capacity.with_columns(bracket_next_n=pl.Series(nxt, dtype=pl.Int64))


# --- quantization (docs/science.md#quantization)

# the trained weights as stored (model.safetensors in fp32): bits per parameter
TRAINED_STORED_BITS = 32.0


def quantization_table(runs: pl.DataFrame, memorization: pl.DataFrame, capacity: pl.DataFrame,
                       mia: pl.DataFrame, quantized: pl.DataFrame,
                       quantized_mia: pl.DataFrame) -> pl.DataFrame:
    """One row per (kind, arch, precision, scheme), the trained weights as scheme 'none':
    the capacity under the scheme (the maximum over N of the mean over seeds, as for the
    trained weights), its bits per parameter and per stored bit (capacity / the weights'
    stored bits), the share of the trained capacity it keeps, and at the trained capacity's
    N: the memorization and the loss attack's AUC (mean over seeds).
    trained_lower_bound: the trained capacity is a lower bound (capacity_table)."""
    keys = ["kind", "arch", "precision"]
    cols = [*keys, "params", "n", "seed", "run_id", "mem_bits", "scheme", "stored_bits_per_param"]
    trained = (runs.join(memorization.select("run_id", "mem_bits"), on="run_id")
               .with_columns(scheme=pl.lit(TRAINED),
                             stored_bits_per_param=pl.lit(TRAINED_STORED_BITS)).select(cols))
    loss_auc = (pl.concat([mia.select("run_id", "attack", "auc"),
                           quantized_mia.select("run_id", "attack", "auc")])
                .filter(pl.col("attack") == "loss").select("run_id", "auc"))
    rows = (pl.concat([trained, quantized.select(cols)])
            .join(loss_auc, on="run_id", how="left"))
    per_n = rows.group_by(*keys, "params", "scheme", "n").agg(
        mean_mem=pl.col("mem_bits").mean(), stored=pl.col("stored_bits_per_param").mean(),
        auc=pl.col("auc").mean())
    best = (per_n.sort(["mean_mem", "n"], descending=[True, False])  # ties: smallest N
            .group_by(*keys, "scheme", maintain_order=True).first())
    trained_cap = capacity.select(*keys, trained_capacity_bits="capacity_bits",
                                  trained_n_at_max="n_at_max",
                                  trained_lower_bound="lower_bound")
    at_trained_n = (per_n.join(trained_cap, on=keys)
                    .filter(pl.col("n") == pl.col("trained_n_at_max"))
                    .select(*keys, "scheme", mem_bits_at_trained_n="mean_mem",
                            mia_auc_at_trained_n="auc"))
    stored = pl.col("stored") * pl.col("params")
    return (best.join(trained_cap, on=keys).join(at_trained_n, on=[*keys, "scheme"], how="left")
            .select(*keys, "scheme", "params", stored_bits_per_param="stored",
                    stored_bits=stored, capacity_bits="mean_mem", n_at_max="n",
                    bits_per_param=pl.col("mean_mem") / pl.col("params"),
                    bits_per_stored_bit=pl.col("mean_mem") / stored,
                    capacity_kept=pl.col("mean_mem") / pl.col("trained_capacity_bits"),
                    mem_bits_at_trained_n="mem_bits_at_trained_n",
                    kept_at_trained_n=(pl.col("mem_bits_at_trained_n")
                                       / pl.col("trained_capacity_bits")),
                    mia_auc_at_trained_n="mia_auc_at_trained_n",
                    trained_n_at_max="trained_n_at_max",
                    trained_lower_bound="trained_lower_bound")
            .sort(["kind", "precision", "params", "stored_bits_per_param"],
                  descending=[False, False, False, True]))


def fit_laws(runs: Path, memorization: Path, mia: Path, out: dict[str, Path], *,
             quantized_runs: Path, quantized_mia: Path, bootstrap: int, ci: float,
             seed: int) -> pl.DataFrame:
    """Read the collected tables; write `capacity`, `laws`, `double_descent`, `quantization`
    and `memorization` (with its capacity ratio) to the paths in `out` (the config's `laws:`
    settings: bootstrap resamples, CI level, bootstrap seed). Returns the laws."""
    runs_df, mem = pl.read_parquet(runs), pl.read_parquet(memorization)
    cap = capacity_table(runs_df, mem)
    laws = pl.concat([
        fit_capacity_laws(runs_df, mem, cap, bootstrap=bootstrap, ci=ci, seed=seed),
        fit_mia_law(runs_df, pl.read_parquet(mia), bootstrap=bootstrap, ci=ci, seed=seed),
    ]).with_columns(ci_few_seeds=pl.col("n_seeds") < MIN_CI_SEEDS)
    cap = with_next_bracket_n(cap, runs_df, laws)
    mem = with_capacity_ratio(mem, runs_df, laws)
    mia_df = pl.read_parquet(mia)
    tables = {"capacity": cap, "laws": laws, "double_descent": double_descent(runs_df, mem),
              "memorization": mem,
              "quantization": quantization_table(runs_df, mem, cap, mia_df,
                                                 pl.read_parquet(quantized_runs),
                                                 pl.read_parquet(quantized_mia))}
    for name, frame in tables.items():
        with atomic_path(out[name]) as tmp:
            frame.write_parquet(tmp)
    return laws
