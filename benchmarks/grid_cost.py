"""Projected GPU-hours of a config's training grid: the budget as configured (every cell's step
cap, resolved by memcap.config.train_spec exactly as the workflow resolves it) against the
paper's fixed budget (10^6 steps for every cell, cosine).

    python benchmarks/grid_cost.py                                    # configs/paper-synthetic.yaml
    python benchmarks/grid_cost.py --config configs/gpu-small.yaml --out cost.json

Throughput per training token of a packed cell follows two measured regimes on one H200
(docs/benchmarks.md, "The GPU path"): small models are bound by the loss and the launch of
kernels, at most R_MAX tokens/s for all packed seeds together (8 packed L2-d128, compiled +
CUDA graph: 18.0 M); larger ones by their matmul FLOPs at the utilisation measured there
(bf16: 7.5 % of the dense peak with 8 packed models; strict fp32: 18.5 % of the FP32 peak).
tokens/s = min(R_MAX, utilisation · peak / train_flops_per_token). Larger matrices use a GPU
better than L2-d128's, so the hours of the largest architectures are upper bounds.

Under the plateau schedule a cell stops before its cap once memorization plateaus, so the
configured column is an upper bound too: what a run costs when no cell plateaus.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from memcap import config as cfg
from memcap.shapes import PEAK_FLOPS, Shape, train_flops_per_token

R_MAX = 18.0e6  # tokens/s, 8 packed L2-d128, bf16, compiled + CUDA graph (H200)
UTILISATION = {"bf16": 0.075, "fp32": 0.185}  # measured model FLOP utilisation (H200)
PAPER_FIXED = {"steps": 1_000_000, "min_passes": 0, "tokens_per_param": 0, "max_steps": 0,
               "schedule": "cosine"}


def tokens_per_second(shape: Shape, precision: str) -> float:
    flops = train_flops_per_token(shape)
    return min(R_MAX, UTILISATION[precision] * PEAK_FLOPS["H200"][precision] / flops)


def grid_cost(config: dict) -> list[dict]:
    """One row per training cell: its step cap, tokens (all seeds) and projected GPU-hours."""
    rows = []
    seeds = len(config["seeds"])
    for kind in cfg.KINDS:
        for c in cfg.cells(config, kind):
            spec = cfg.train_spec(config, kind, c["arch"], c["precision"], c["n"])
            batch = min(spec["batch_size"], c["n"])
            tokens = spec["steps"] * batch * spec["seq_len"] * seeds
            rate = tokens_per_second(
                cfg.arch_shape(config, kind, cfg.architecture(config, c["arch"], kind)),
                c["precision"])
            rows.append({"kind": kind, "arch": c["arch"], "precision": c["precision"],
                         "n": c["n"], "steps": spec["steps"], "tokens": tokens,
                         "tokens_per_s": rate, "gpu_hours": tokens / rate / 3600})
    return rows


def summary(rows: list[dict]) -> dict:
    return {"cells": len(rows), "steps": sum(r["steps"] for r in rows),
            "tokens": sum(r["tokens"] for r in rows),
            "gpu_hours": sum(r["gpu_hours"] for r in rows)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/paper-synthetic.yaml")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    config = cfg.load_config(args.config)
    fixed = cfg.validate_config({**config, "train": {**config["train"], **PAPER_FIXED},
                                 "verify": {}})
    out = {"config": args.config, "configured": summary(grid_cost(config)),
           "paper_fixed": summary(grid_cost(fixed)),
           "per_arch": {}}
    for label, rows in (("configured", grid_cost(config)), ("paper_fixed", grid_cost(fixed))):
        for r in rows:
            a = out["per_arch"].setdefault(r["arch"], {}).setdefault(
                label, {"steps": 0, "gpu_hours": 0.0})
            a["steps"] += r["steps"]
            a["gpu_hours"] += r["gpu_hours"]
    print(f"{'arch':8} {'configured steps':>17} {'GPU-h':>9} {'fixed steps':>13} {'GPU-h':>9}")
    for arch, a in out["per_arch"].items():
        c, f = a["configured"], a["paper_fixed"]
        print(f"{arch:8} {c['steps']:17,} {c['gpu_hours']:9,.2f} {f['steps']:13,} "
              f"{f['gpu_hours']:9,.2f}")
    c, f = out["configured"], out["paper_fixed"]
    print(f"total: configured {c['tokens']:.3g} tokens, {c['gpu_hours']:,.2f} GPU-hours "
          f"({c['gpu_hours'] * 60:,.1f} minutes); "
          f"paper's fixed budget {f['tokens']:.3g} tokens, {f['gpu_hours']:,.2f} GPU-hours "
          f"({f['gpu_hours'] / c['gpu_hours']:.1f}x)")
    if args.out:
        args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
