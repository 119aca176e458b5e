"""Predict-then-verify: invert the fitted membership law for target F1 values, train the cells
it calls for, and compare predicted with observed F1 (the paper's validation, on memcap's own
models)."""

from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np
import polars as pl

from memcap.io import atomic_path, read_json, write_json
from memcap.quantities import (
    LAW_SEQ_LEN,
    invert_mia_f1,
    mia_f1,
    sequences_per_param,
    verify_verdict,
)


def plan(laws: pl.DataFrame, kind: str, precision: str, family: str, params: int,
         seq_len: int, targets: list[float]) -> dict:
    """Dataset sizes N at which the fitted law (of the model's family) predicts each target
    F1 for this model."""
    fit = laws.filter((pl.col("law") == "mia_f1") & (pl.col("kind") == kind)
                      & (pl.col("precision") == precision) & (pl.col("family") == family))
    c = dict(fit.select("parameter", "value").iter_rows())
    if set(c) != {"c1", "c2", "c3"}:
        raise ValueError(f"no fitted membership law for kind {kind}, precision {precision}, "
                         f"family {family}: the grid needs at least 4 cells of the family")
    cells = []
    for target in targets:
        x = invert_mia_f1(target, **c)
        if not math.isfinite(x) or x <= 0:
            cells.append({"target_f1": target, "n": None,
                          "note": "the fitted law never reaches this F1 at positive N"})
            continue
        n = max(1, round(x * params * LAW_SEQ_LEN / seq_len))
        x_n = sequences_per_param(n, seq_len, params)
        cells.append({"target_f1": target, "n": n,
                      "predicted_f1": float(mia_f1(np.array([x_n]), **c)[0]), "note": ""})
    return {"kind": kind, "precision": precision, "params": params, "seq_len": seq_len,
            "law": c, "cells": cells}


def write_plan(out: Path, laws: Path, kind: str, precision: str, family: str, params: int,
               seq_len: int, targets: list[float]) -> str:
    """The plan of the verify target, from the fitted laws (a Parquet file), to `out`."""
    write_json(out, plan(pl.read_parquet(laws), kind, precision, family, params, seq_len,
                         targets))
    return f"wrote {out}"


VERIFY_SCHEMA = {"target_f1": pl.Float64, "n": pl.Int64, "params": pl.Int64,
                 "sequences_per_param": pl.Float64, "predicted_f1": pl.Float64,
                 "observed_f1": pl.Float64, "observed_sd": pl.Float64,
                 "observed_by_seed": pl.List(pl.Float64), "seeds": pl.Int64, "gap": pl.Float64,
                 "tolerance": pl.Float64, "passed": pl.Boolean, "kind": pl.String,
                 "precision": pl.String, "steps": pl.Int64, "note": pl.String}


def summarize(plan_path: Path, evaluation_paths: list[Path], out_table: Path, out_html: Path,
              tolerance: float) -> pl.DataFrame:
    """Observed median-threshold F1 (loss attack) of every planned run beside the prediction:
    per target, the mean and the per-seed values, the gap observed − predicted, and whether
    |gap| ≤ tolerance; with the steps the runs trained for (their run.json)."""
    p = read_json(plan_path)
    observed: dict[int, dict[int, float]] = {}
    steps: dict[int, int] = {}
    for path in map(Path, evaluation_paths):
        ev = read_json(path)
        loss = next(m for m in ev["mia"] if m["attack"] == "loss")
        observed.setdefault(int(ev["n"]), {})[int(ev["seed"])] = loss["f1_median"]
        steps[int(ev["n"])] = read_json(path.parent / "run.json")["steps"]
    rows = []
    for cell in p["cells"]:
        by_seed = observed.get(cell["n"], {}) if cell["n"] is not None else {}
        obs = [by_seed[s] for s in sorted(by_seed)]
        mean = float(np.mean(obs)) if obs else None
        pred = cell.get("predicted_f1")
        gap = mean - pred if mean is not None and pred is not None else None
        rows.append({"target_f1": cell["target_f1"], "n": cell["n"], "params": p["params"],
                     "sequences_per_param": (sequences_per_param(cell["n"], p["seq_len"],
                                                                 p["params"])
                                             if cell["n"] is not None else None),
                     "predicted_f1": pred, "observed_f1": mean,
                     "observed_sd": float(np.std(obs, ddof=1)) if len(obs) > 1 else None,
                     "observed_by_seed": obs, "seeds": len(obs), "gap": gap,
                     "tolerance": tolerance,
                     "passed": None if gap is None else abs(gap) <= tolerance,
                     "kind": p["kind"], "precision": p["precision"],
                     "steps": steps.get(cell["n"]), "note": cell["note"]})
    table = pl.DataFrame(rows, schema=VERIFY_SCHEMA)
    with atomic_path(out_table) as tmp:
        table.write_parquet(tmp)
    with atomic_path(out_html) as tmp:
        tmp.write_text(verify_html(p, table))
    return table


def verify_html(p: dict, table: pl.DataFrame) -> str:
    shown = table.with_columns(observed_by_seed=pl.col("observed_by_seed").list.eval(
        pl.element().round(4).cast(pl.String)).list.join(" / ")).drop("kind", "precision")
    head = "".join(f"<th>{html.escape(c)}</th>" for c in shown.columns)
    body = "".join("<tr>" + "".join(
        f"<td>{'' if v is None else html.escape(f'{v:.4g}' if isinstance(v, float) else str(v))}"
        "</td>" for v in r) + "</tr>" for r in shown.iter_rows())
    c = p["law"]
    return ("<!doctype html><html><head><meta charset='utf-8'><title>memcap: predict then "
            "verify</title></head><body><h1>Predict, then verify</h1>"
            f"<p><b>{html.escape(verify_verdict(table))}</b></p>"
            f"<p>Model: {p['params']:,} parameters ({p['kind']}, {p['precision']}), sequences "
            f"of {p['seq_len']} tokens. Law: F1 = ½(1 + c1·σ(−c2·(N/P − c3))) with c1 "
            f"{c['c1']:.4g}, c2 {c['c2']:.4g}, c3 {c['c3']:.4g}, fitted on the {p['kind']} "
            "grid. N is chosen so that the law predicts each target F1; the observed F1 is the "
            "loss attack's median-threshold F1 of the runs trained on that N (mean, and per "
            "seed), gap = observed − predicted.</p>"
            f"<table border='1'><tr>{head}</tr>{body}</table></body></html>")
