"""CUDA check of the trainer and scorer: numbers to JSON, one section after another.

    python benchmarks/gpu_check.py OUT_DIR [--steps 10000] [--budget-s 240]
    python benchmarks/gpu_check.py OUT_DIR --device cpu --quick   # tries the script itself

Sections (OUT_DIR/gpu_check.json is rewritten after each one; a section that fails records
its error and the next one runs; a section that would start after --budget-s is skipped):

1. host syncs: the same packed cell trained for k and 3k steps with no evaluation between
   steps, under torch.cuda.set_sync_debug_mode("warn"), eager and as a CUDA graph; the extra
   synchronisations per extra step are 0 when the hot loop never waits for the host.
   CUDA graph matches eager: the same cell trained both ways, in fp32 and bf16; the largest
   weight difference after the same steps.
2. data-limited: a tiny cell whose data fit in the model must memorize ≥ 90 % of its bits, in
   bf16 and in fp32.
3. budget: the paper's linearity-check shape (2 layers, d 128, V 2048, S 64, N 4096, 2 packed
   seeds, bf16) for --steps steps: bits per parameter within that many tokens, tokens/s, model
   FLOP utilisation, then scoring, membership inference and extraction on the GPU.
4. packing: the same shape with 1, 2 and 8 packed models, training only, eager and as a CUDA
   graph: steady-state tokens/s (from the first evaluation after step 0 to the end) and the
   ratios to one model and to eager.
5. compile: the 2-model cell, the training loss (model and loss) through torch.compile,
   against not compiled: without and with a CUDA graph, and the 8-model cell as a CUDA graph;
   steady-state tokens/s; the compile time shows in train_wall_s.
6. fp32: the budget cell in strict fp32 (no TF32) for a third of the steps.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import replace
from pathlib import Path

import polars as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from memcap import config as cfg  # noqa: E402
from memcap.cell import Cell, Runtime, TrainSpec, make_spec  # noqa: E402
from memcap.shapes import peak_flops, train_flops_per_token  # noqa: E402
from memcap.stages.data import write_seed_datasets  # noqa: E402
from memcap.stages.evaluate import evaluate_cell  # noqa: E402
from memcap.stages.score import score_cell  # noqa: E402
from memcap.stages.train import train_cell  # noqa: E402

PAPER_TOKENS_L2_D128 = 6.5e9  # the paper's training tokens for this shape (the figure)
EXTRACTION_PREFIXES = [8, 16, 32]  # fixed here: they name the "extraction" keys of the JSON


def run_cell(root: Path, spec: TrainSpec, seeds: list[int], device: str, *, heldout: int = 256,
             compile_model: bool = False, cuda_graph: bool = True, evaluate: bool = True,
             log_every: int | None = None, tag: str = "") -> dict:
    train, held = write_seed_datasets(root / f"data-{spec.n}-{spec.seq_len}-{spec.vocab_size}",
                                      seeds, spec.n, spec.seq_len, spec.vocab_size, heldout)
    tag = f"{tag}{spec.n_layer}-{spec.d_model}-{spec.precision}-{spec.n}-{len(seeds)}"
    dirs = [root / f"run-{tag}-{compile_model}-{cuda_graph}-s{s}" for s in seeds]
    cell = Cell(kind="synthetic", spec=spec, seeds=seeds, train_data=train, heldout_data=held,
                run_dirs=dirs, checkpoint=root / f"ck-{tag}.pt")
    runtime = Runtime.defaults(device=device, log_every=log_every or max(1, spec.steps // 5),
                               compile="true" if compile_model else "false",
                               cuda_graphs=cuda_graph, score_batch_size=2048)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    recs = train_cell(cell, runtime, echo=lambda s: print(s, flush=True))
    wall = time.perf_counter() - t0
    tokens = recs[0]["steps_run"] * spec.batch * spec.seq_len * len(seeds)
    # steady state: from the first evaluation after step 0 to the end (leaves out start-up
    # and torch.compile's compile time)
    log = pl.read_parquet(dirs[0] / "train_log.parquet").sort("step")
    first, last = log.filter(pl.col("step") > 0).row(0, named=True), log.row(-1, named=True)
    steady = ((last["step"] - first["step"]) * spec.batch * spec.seq_len * len(seeds)
              / max(last["elapsed_s"] - first["elapsed_s"], 1e-9))
    flops = train_flops_per_token(spec.shape)
    peak = (peak_flops(torch.cuda.get_device_name(0), recs[0]["compute_dtype"])
            if device == "cuda" else None)
    out = {
        "spec": {k: getattr(spec, k) for k in ("vocab_size", "seq_len", "n_layer", "d_model",
                                               "precision", "n", "steps", "batch_size", "lr")},
        "params": spec.params, "seeds": seeds, "compute_dtype": recs[0]["compute_dtype"],
        "device": recs[0]["device"], "compiled": compile_model,
        "cuda_graph": recs[0]["cuda_graph"], "run_dirs": [str(d) for d in dirs],
        "train_wall_s": wall,
        "tokens_per_model": recs[0]["tokens_per_model"],
        "train_tokens_per_s": tokens / recs[0]["train_seconds"],
        "train_tokens_per_s_steady": steady,
        "train_flops_per_token": flops,
        "mfu": flops * steady / peak if peak else None,
        "peak_memory_gib": (torch.cuda.max_memory_allocated() / 2**30
                            if device == "cuda" else None),
        "final_mem_bits_estimate": [r["final_mem_bits_estimate"] for r in recs],
        "saturated": [r["saturated"] for r in recs],
    }
    if not evaluate:
        return out
    t1 = time.perf_counter()
    scores = score_cell(cell, runtime)
    if device == "cuda":
        torch.cuda.synchronize()
    score_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    evals = evaluate_cell(cell, runtime, **{**cfg.defaults("evaluate"),
                                            "extraction_prefixes": EXTRACTION_PREFIXES})
    out |= {
        "score_sequences_per_s": len(seeds) * (spec.n + heldout) / score_s,
        "mem_bits": [s["mem_bits"] for s in scores],
        "memorized_fraction": [s["mem_bits"] / s["dataset_bits"] for s in scores],
        "bits_per_param": [s["mem_bits"] / spec.params for s in scores],
        "heldout_loss": [s["heldout_loss"] for s in scores],
        "evaluate_s": time.perf_counter() - t2,
        "mia_loss_auc": [next(m["auc"] for m in e["mia"] if m["attack"] == "loss")
                         for e in evals],
        "mia_loss_f1_median": [next(m["f1_median"] for m in e["mia"] if m["attack"] == "loss")
                               for e in evals],
        "extraction": [{f"{x['split']} k={x['prefix_len']}": x["rate"] for x in e["extraction"]}
                       for e in evals],
    }
    return out


def count_syncs(root: Path, spec: TrainSpec, device: str, cuda_graph: bool) -> int:
    """Synchronising CUDA calls during one training run with no evaluation between steps."""
    if device != "cuda":
        return 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run_cell(root, spec, [0, 1], device, evaluate=False, log_every=10**9,
                     cuda_graph=cuda_graph, tag=f"sync{spec.steps}-")
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def shapes(quick: bool, steps: int) -> tuple[TrainSpec, TrainSpec]:
    """(tiny data-limited cell, the budget cell), both in bf16."""
    tiny = make_spec(vocab_size=16, seq_len=16, n_layer=1, d_model=16, precision="bf16", n=8,
                     steps=300, batch_size=32, lr=0.03, eval_every=50)
    if quick:  # a CPU-sized stand-in, only to exercise every path of this script
        big = make_spec(vocab_size=64, seq_len=16, n_layer=2, d_model=16, precision="bf16",
                        n=64, steps=steps, batch_size=32, lr=0.01,
                        eval_every=max(1, steps // 20), eval_samples=64)
    else:
        big = make_spec(vocab_size=2048, seq_len=64, n_layer=2, d_model=128, precision="bf16",
                        n=4096, steps=steps, batch_size=256, lr=0.003,
                        eval_every=max(1, steps // 20), eval_samples=1024)
    return tiny, big


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    p.add_argument("--steps", type=int, default=10000, help="steps of the budget cell")
    p.add_argument("--budget-s", type=float, default=240.0,
                   help="skip the sections that would start after this many seconds")
    p.add_argument("--device", default="cuda", help="cpu only to try the script itself")
    p.add_argument("--quick", action="store_true", help="CPU-sized shapes (trying the script)")
    p.add_argument("--skip", default="", help="comma-separated section names to leave out")
    args = p.parse_args()
    t_start = time.perf_counter()
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else "none"
    result: dict = {"gpu": gpu, "torch": torch.__version__, "sections": {}, "cells": []}
    tiny, big = shapes(args.quick, args.steps)
    short = max(20, args.steps // 10)

    skip = {x.strip() for x in args.skip.split(",") if x.strip()}

    def section(name: str, fn) -> None:
        elapsed = time.perf_counter() - t_start
        if name in skip:
            result["sections"][name] = "skipped: --skip"
        elif elapsed > args.budget_s:
            result["sections"][name] = f"skipped: {elapsed:.0f} s > budget {args.budget_s:.0f} s"
        else:
            print(f"== {name} (at {elapsed:.0f} s)", flush=True)
            t0 = time.perf_counter()
            try:
                fn()
                result["sections"][name] = f"ok in {time.perf_counter() - t0:.1f} s"
            except Exception as exc:  # one broken section must not cost the others' numbers
                traceback.print_exc()
                result["sections"][name] = f"failed: {type(exc).__name__}: {exc}"
        result["total_s"] = time.perf_counter() - t_start
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_check.json").write_text(json.dumps(result, indent=2))

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)

        def syncs() -> None:
            k = 20
            spec = replace(big, eval_every=10**6)
            for graph in (False, True):
                a = count_syncs(root, replace(spec, steps=k), args.device, graph)
                b = count_syncs(root, replace(spec, steps=3 * k), args.device, graph)
                result["host_syncs" + ("_cuda_graph" if graph else "_eager")] = {
                    "steps": [k, 3 * k], "syncs": [a, b], "per_extra_step": (b - a) / (2 * k)}

        def graph_matches_eager() -> None:
            # the same cell, graphed and eager: the weights after `short` steps must agree
            from safetensors.torch import load_file
            for precision in ("fp32", "bf16"):
                spec = replace(big, precision=precision, steps=short,
                               eval_every=max(1, short // 5))
                weights = []
                for graph in (False, True):
                    cell = run_cell(root, spec, [0, 1], args.device, evaluate=False,
                                    cuda_graph=graph, tag="match-")
                    weights.append(load_file(str(Path(cell["run_dirs"][1])
                                                 / "model.safetensors")))
                eager, graphed = weights
                result[f"cuda_graph_vs_eager_max_abs_weight_diff_{precision}"] = max(
                    float((eager[k] - graphed[k]).abs().max()) for k in eager)

        def data_limited() -> None:
            for precision in ("bf16", "fp32"):
                cell = run_cell(root, replace(tiny, precision=precision), [0, 1], args.device)
                result["cells"].append({"check": f"data-limited {precision}", **cell})

        def budget() -> None:
            cell = run_cell(root, big, [0, 1], args.device)
            cell["paper_token_fraction"] = cell["tokens_per_model"] / PAPER_TOKENS_L2_D128
            result["cells"].append({"check": "budget bf16", **cell})

        def packing() -> None:
            for graph in (False, True):
                rates = {}
                for m in (1, 2, 8):
                    cell = run_cell(root, replace(big, steps=short, eval_every=max(1, short // 5)),
                                    list(range(m)), args.device, evaluate=False, cuda_graph=graph,
                                    tag="pack-")
                    mode = "cuda graph" if cell["cuda_graph"] else "eager"
                    result["cells"].append({"check": f"packing {m} models {mode}", **cell})
                    rates[m] = cell["train_tokens_per_s_steady"]
                key = "cuda_graph" if graph else "eager"
                result[f"steady_tokens_per_s_by_models_{key}"] = rates
                result[f"packed_vs_unpacked_{key}"] = {f"{m} models": rates[m] / rates[1]
                                                       for m in rates}
            g, e = (result[f"steady_tokens_per_s_by_models_{k}"] for k in ("cuda_graph", "eager"))
            result["cuda_graph_vs_eager"] = {f"{m} models": g[m] / e[m] for m in g}

        def compiled() -> None:
            spec = replace(big, steps=short, eval_every=max(1, short // 5))
            for m, graph in ((2, False), (2, True), (8, True)):
                comp = run_cell(root, spec, list(range(m)), args.device, compile_model=True,
                                cuda_graph=graph, evaluate=False, tag="compile-")
                mode = "cuda graph" if comp["cuda_graph"] else "eager"
                result["cells"].append({"check": f"compiled {m} models {mode}", **comp})
                base = next(c for c in result["cells"]
                            if c["check"] == f"packing {m} models {mode}")
                result[f"compiled_vs_not_{m}_models_{mode.replace(' ', '_')}"] = (
                    comp["train_tokens_per_s_steady"] / base["train_tokens_per_s_steady"])

        def fp32() -> None:
            cell = run_cell(root, replace(big, precision="fp32", steps=max(1, args.steps // 3)),
                            [0, 1], args.device)
            result["cells"].append({"check": "budget fp32, a third of the steps", **cell})

        for name, fn in [("host syncs", syncs), ("cuda graph matches eager", graph_matches_eager),
                         ("data-limited", data_limited), ("budget", budget),
                         ("packing", packing), ("compile", compiled), ("fp32", fp32)]:
            section(name, fn)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
