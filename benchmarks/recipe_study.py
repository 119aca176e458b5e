"""Saturation at lower cost: learning rate, schedule, batch size and the plateau schedule against
bits per parameter reached, on CPU-sized models (issue: fast training to saturation).

Every run trains one cell of packed seeds on uniform random tokens with memcap's own trainer
and records memorization at every evaluation, so one run gives bits per parameter against
training tokens. Capacity is a maximum over N, so each recipe runs at several N around the
architecture's capacity and the study reports the best N per recipe.

    python benchmarks/recipe_study.py                   # the study (about 10 minutes, 1 core)
    python benchmarks/recipe_study.py --quick           # a 1-minute subset
    python benchmarks/recipe_study.py --out docs/measurements/recipe_study.json
    python benchmarks/recipe_study.py --optimizer      # Adam settings at the default recipe
    python benchmarks/recipe_study.py --plateau        # the plateau schedule against cosine

Prints one table per stage and writes every curve to the JSON file.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import polars as pl
import torch

from memcap.cell import Cell, Runtime, TrainSpec, make_spec
from memcap.stages.data import write_seed_datasets
from memcap.stages.train import train_cell

BASE = make_spec(vocab_size=64, seq_len=32, n_layer=1, d_model=8, precision="fp32", n=128,
                 steps=1500, batch_size=64, lr=0.03, eval_every=50)
RUNTIME = Runtime.defaults(device="cpu", threads=1)


def run(spec: TrainSpec, seeds: list[int], root: Path) -> dict:
    """Train one packed cell; return its record with the memorization curve (mean over
    seeds) against training tokens."""
    train, held = write_seed_datasets(root / "data", seeds, spec.n, spec.seq_len,
                                      spec.vocab_size, heldout=1)
    tag = f"{spec.d_model}-{spec.n}-{spec.lr}-{spec.schedule}-{spec.batch_size}-{spec.steps}"
    dirs = [root / f"run-{tag}-{s}" for s in seeds]
    cell = Cell(kind="synthetic", spec=spec, seeds=seeds, train_data=train, heldout_data=held,
                run_dirs=dirs, checkpoint=root / f"ck-{tag}.pt")
    t0 = time.perf_counter()
    records = train_cell(cell, RUNTIME, echo=lambda _line: None)
    seconds = time.perf_counter() - t0
    logs = pl.concat([pl.read_parquet(d / "train_log.parquet") for d in dirs])
    curve = (logs.group_by("step").agg(pl.col("mem_bits").mean()).sort("step")
             .with_columns(tokens=pl.col("step") * spec.batch * spec.seq_len,
                           bits_per_param=pl.col("mem_bits") / spec.params))
    final = curve.row(-1, named=True)
    return {
        "spec": asdict(spec), "params": spec.params, "seconds": seconds,
        "final_bits_per_param": final["bits_per_param"], "tokens": final["tokens"],
        "steps_run": records[0]["steps_run"],
        "saturated": all(r["saturated"] for r in records),
        "curve": curve.select("step", "tokens", "bits_per_param").to_dicts(),
    }


def best_over_n(results: list[dict], keys: tuple[str, ...]) -> pl.DataFrame:
    """Per recipe (the `keys` of its spec): the N with the most bits per parameter."""
    rows = [{**{k: r["spec"][k] for k in (*keys, "n")}, "bits_per_param":
             r["final_bits_per_param"], "tokens": r["tokens"], "seconds": r["seconds"],
             "steps_run": r["steps_run"], "saturated": r["saturated"]} for r in results]
    df = pl.DataFrame(rows)
    return (df.sort("bits_per_param", descending=True).group_by(list(keys), maintain_order=True)
            .first().sort("bits_per_param", descending=True))


OPTIMIZER_VARIANTS = {
    "default": {}, "beta1 0.8": {"beta1": 0.8}, "beta2 0.95": {"beta2": 0.95},
    "beta2 0.999": {"beta2": 0.999}, "min_lr_frac 0.1": {"min_lr_frac": 0.1},
    "warmup_frac 0.01": {"warmup_frac": 0.01}, "lr 0.2": {"lr": 0.2},
}


def optimizer_stage(seeds: list[int], root: Path) -> list[dict]:
    """Adam's settings, warmup and the final rate around the default recipe (lr 0.1 cosine,
    1,500 steps × 64) for L1-d8 at N 32, 64 and 128 (its capacity lies near N 32)."""
    results = []
    for (name, overrides), n in itertools.product(OPTIMIZER_VARIANTS.items(), [32, 64, 128]):
        r = run(replace(BASE, **({"lr": 0.1, "n": n, "eval_every": 100} | overrides)), seeds,
                root)
        results.append({"variant": name, **r})
        print(f"{name:18} N {n:4}: {r['final_bits_per_param']:.3f} bits/param "
              f"({r['seconds']:.0f} s)", flush=True)
    return results


def plateau_stage(seeds: list[int], root: Path) -> list[dict]:
    """The plateau schedule against the cosine recipe (lr 0.1, batch 64) for L1-d8 at N 32,
    128, 512 and 2,048, at the default budget (1,500 steps, raised to 100 passes) and at a
    4x cap (6,000 steps): bits per parameter and steps run."""
    results = []
    for n, cap, schedule in itertools.product([32, 128, 512, 2048], ["default", "6000"],
                                              ["cosine", "plateau"]):
        steps = max(1500, -(-100 * n // 64)) if cap == "default" else 6000
        r = run(replace(BASE, lr=0.1, n=n, eval_every=100, steps=steps, schedule=schedule,
                        decay_frac=0.5), seeds, root)
        results.append({"cap": cap, **r})
        print(f"N {n:5} cap {steps:5} {schedule:8}: {r['final_bits_per_param']:.3f} bits/param, "
              f"{r['steps_run']:,} steps ({r['seconds']:.0f} s)", flush=True)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a small subset (CI-sized)")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--optimizer", action="store_true",
                   help="only the Adam-settings probe at the default recipe (about 6 minutes)")
    p.add_argument("--plateau", action="store_true",
                   help="only the plateau schedule against cosine (about 8 minutes)")
    p.add_argument("--out", type=Path, help="write every curve to this JSON file")
    a = p.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in a.seeds.split(",")]
    for flag, stage in (("optimizer", optimizer_stage), ("plateau", plateau_stage)):
        if getattr(a, flag):
            with tempfile.TemporaryDirectory() as tmp:
                results = stage(seeds, Path(tmp))
            if a.out:
                a.out.write_text(json.dumps({"torch": torch.__version__, "seeds": seeds,
                                             flag: results}, indent=1, default=str) + "\n")
            return
    sizes = [128, 256]
    lrs = [0.03, 0.1] if a.quick else [0.01, 0.03, 0.1, 0.3]
    schedules = ["cosine", "constant"] if a.quick else ["cosine", "constant", "linear"]
    out: dict = {"machine": platform.machine(), "processor": platform.processor(),
                 "torch": torch.__version__, "threads": 1, "seeds": seeds,
                 "base": asdict(BASE), "stages": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)

        # stage 1: learning rate × schedule at the default budget (1,500 steps × 64)
        stage1 = [run(replace(BASE, lr=lr, schedule=sch, n=n), seeds, root)
                  for lr, sch, n in itertools.product(lrs, schedules, sizes)]
        table1 = best_over_n(stage1, ("lr", "schedule"))
        print("stage 1: learning rate × schedule, 1,500 steps at batch 64, best N")
        print(table1)
        best = table1.row(0, named=True)

        # stage 2: batch size at a fixed token budget (steps × batch constant)
        tokens = BASE.steps * BASE.batch_size
        batches = [32, 128] if a.quick else [16, 32, 64, 128]
        stage2 = [run(replace(BASE, lr=best["lr"], schedule=best["schedule"], n=n,
                              batch_size=b, steps=tokens // b), seeds, root)
                  for b, n in itertools.product(batches, sizes)]
        table2 = best_over_n(stage2, ("batch_size", "steps"))
        print(f"stage 2: batch size at {tokens:,} sequences per model "
              f"(lr {best['lr']}, {best['schedule']}), best N")
        print(table2)

        # stage 3: a longer budget, and the plateau schedule (docs/science.md#the-plateau-schedule)
        step_budgets = [3000] if a.quick else [3000, 6000]
        stage3 = [run(replace(BASE, lr=best["lr"], schedule=sch, n=best["n"], steps=steps),
                      seeds, root)
                  for steps, sch in itertools.product(step_budgets, (best["schedule"], "plateau"))]
        table3 = pl.DataFrame([{"steps": r["spec"]["steps"], "schedule": r["spec"]["schedule"],
                                "steps_run": r["steps_run"],
                                "bits_per_param": r["final_bits_per_param"],
                                "seconds": r["seconds"], "saturated": r["saturated"]}
                               for r in stage3])
        print(f"stage 3: budget and the plateau schedule (lr {best['lr']}, N {best['n']})")
        print(table3)
        out["stages"] = {"lr_schedule": stage1, "batch": stage2, "budget_plateau": stage3}
        out["best"] = best
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(out, indent=1, default=str) + "\n")
        print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
