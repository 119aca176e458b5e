"""Tokens per bit memorized at the paper's V 2048 and S 64: one training lever at a time.

Each lever trains one cell of 2 packed seeds with memcap's own trainer on uniform random
tokens, near the architecture's capacity (L1-d32 at N 512: 354,816 memorizable bits against the
paper's 3.39 x 10^5 fp32 capacity; L1-d16 at N 256), and logs memorization every `eval_every`
steps. From each curve (mean over the seeds): the training tokens per model at which it first
reaches 3.0, 3.5 and 4.0 bits per parameter, the highest value reached, and the final one.

    python benchmarks/token_efficiency.py --out docs/measurements/token_efficiency.json
    python benchmarks/token_efficiency.py --only cosine,muon --arch L1-d32
    python benchmarks/token_efficiency.py --table docs/measurements/token_efficiency.json

Levers run in parallel processes (--jobs, one thread each); results merge into --out, so a
study can be extended a few levers at a time. docs/recipe.md has the table.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import polars as pl
import torch

from memcap.cell import Cell, Runtime, make_spec
from memcap.stages.data import write_seed_datasets
from memcap.stages.train import train_cell

ARCHS = {"L1-d32": {"n_layer": 1, "d_model": 32, "n": 512},
         "L1-d16": {"n_layer": 1, "d_model": 16, "n": 256},
         "L1-d8": {"n_layer": 1, "d_model": 8, "n": 128}}
TARGETS = (3.0, 3.5, 4.0)
# the laptop recipe before this study (configs/laptop.yaml): Adam, lr 0.03, batch 128, the
# plateau schedule; every lever changes one thing from it
BASE = {"vocab_size": 2048, "seq_len": 64, "precision": "fp32", "batch_size": 128, "lr": 0.03,
        "schedule": "plateau", "decay_frac": 0.5, "eval_every": 100, "eval_samples": 512}
LEVERS: dict[str, dict] = {
    "laptop": {},  # plateau schedule, lr 0.03, batch 128
    "cosine": {"schedule": "cosine"},
    "cosine-lr0.01": {"schedule": "cosine", "lr": 0.01},
    "cosine-lr0.06": {"schedule": "cosine", "lr": 0.06},
    "cosine-lr0.1": {"schedule": "cosine", "lr": 0.1},
    "muon": {"schedule": "cosine", "optimizer": "muon"},
    "muon-lr0.01": {"schedule": "cosine", "optimizer": "muon", "lr": 0.01},
    "muon-lr0.1": {"schedule": "cosine", "optimizer": "muon", "lr": 0.1},
    # the same tokens in 4x the steps, or in a quarter (batch 512: all of N at L1-d32)
    "batch32": {"schedule": "cosine", "batch_size": 32, "x_steps": 4},
    "batch512": {"schedule": "cosine", "batch_size": 512, "x_steps": 0.25},
    "batch512-lr0.12": {"schedule": "cosine", "batch_size": 512, "lr": 0.12, "x_steps": 0.25},
}


def run(arch: str, lever: str, steps: int, seeds: list[int], root: str) -> dict:
    """Train one lever on one architecture; its curve and where it crosses the targets."""
    torch.set_num_threads(1)
    overrides = dict(LEVERS[lever])
    scale = overrides.pop("x_steps", 1)
    spec = make_spec(**{**BASE, **ARCHS[arch], **overrides, "steps": int(steps * scale),
                        "eval_every": max(1, int(BASE["eval_every"] * scale))})
    base = Path(root) / f"{arch}-{lever}"
    train, held = write_seed_datasets(base / "data", seeds, spec.n, spec.seq_len,
                                      spec.vocab_size, heldout=1)
    dirs = [base / f"run-{s}" for s in seeds]
    cell = Cell(kind="synthetic", spec=spec, seeds=seeds, train_data=train, heldout_data=held,
                run_dirs=dirs, checkpoint=base / "ck.pt")
    t0 = time.perf_counter()
    records = train_cell(cell, Runtime.defaults(device="cpu", threads=1), echo=lambda _l: None)
    seconds = time.perf_counter() - t0
    logs = pl.concat([pl.read_parquet(d / "train_log.parquet") for d in dirs])
    curve = (logs.group_by("step").agg(pl.col("mem_bits").mean(), pl.col("lr").first())
             .sort("step")
             .with_columns(tokens=pl.col("step") * spec.batch * spec.seq_len,
                           bits_per_param=pl.col("mem_bits") / spec.params))
    return {"arch": arch, "lever": lever, "spec": asdict(spec), "params": spec.params,
            "seconds": seconds, "steps_run": records[0]["steps_run"],
            "per_seed_final_bits_per_param": [r["final_mem_bits_estimate"] / spec.params
                                              for r in records],
            **summary(curve), "curve": curve.select("step", "tokens", "lr",
                                                    "bits_per_param").to_dicts()}


def summary(curve: pl.DataFrame) -> dict:
    out = {"final_bits_per_param": curve["bits_per_param"][-1],
           "max_bits_per_param": curve["bits_per_param"].max(), "tokens": curve["tokens"][-1]}
    for t in TARGETS:
        hit = curve.filter(pl.col("bits_per_param") >= t)
        out[f"tokens_to_{t}"] = hit["tokens"][0] if hit.height else None
    return out


def table(results: list[dict]) -> str:
    def tok(v: int | None) -> str:
        return "—" if v is None else f"{v / 1e6:.1f} M"

    lines = ["| arch | lever | steps | tokens / model | to 3.0 | to 3.5 | to 4.0 | highest | "
             "final | seconds |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(results, key=lambda r: (r["arch"], -r["final_bits_per_param"])):
        lines.append(f"| {r['arch']} | {r['lever']} | {r['steps_run']:,} | {tok(r['tokens'])} | "
                     f"{tok(r['tokens_to_3.0'])} | {tok(r['tokens_to_3.5'])} | "
                     f"{tok(r['tokens_to_4.0'])} | {r['max_bits_per_param']:.3f} | "
                     f"{r['final_bits_per_param']:.3f} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="L1-d32", help=f"comma-separated, of {list(ARCHS)}")
    p.add_argument("--only", help="comma-separated lever names (default: every lever)")
    p.add_argument("--steps", type=int, default=1000, help="steps at batch 128")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("token_efficiency.json"))
    p.add_argument("--table", type=Path, help="only print the table of an existing file")
    a = p.parse_args()
    if a.table:
        print(table(json.loads(a.table.read_text())["results"]))
        return
    levers = a.only.split(",") if a.only else list(LEVERS)
    unknown = [name for name in levers if name not in LEVERS]
    if unknown:
        raise SystemExit(f"unknown lever(s) {unknown}; known: {list(LEVERS)}")
    seeds = [int(s) for s in a.seeds.split(",")]
    jobs = [(arch, lever) for arch in a.arch.split(",") for lever in levers]
    done = json.loads(a.out.read_text())["results"] if a.out.exists() else []
    with tempfile.TemporaryDirectory() as root, ProcessPoolExecutor(a.jobs) as pool:
        futures = [pool.submit(run, arch, lever, a.steps, seeds, root) for arch, lever in jobs]
        for f in futures:
            r = f.result()
            print(f"{r['arch']} {r['lever']}: final {r['final_bits_per_param']:.3f} "
                  f"bits/param after {r['tokens'] / 1e6:.1f} M tokens ({r['seconds']:.0f} s)",
                  flush=True)
            done = [d for d in done if (d["arch"], d["lever"], d["spec"]["steps"]) !=
                    (r["arch"], r["lever"], r["spec"]["steps"])] + [r]
            a.out.write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                                         "torch": torch.__version__, "results": done}, indent=1))
    print(table(done))


if __name__ == "__main__":
    main()
