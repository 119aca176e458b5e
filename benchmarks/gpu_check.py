"""CUDA check of the trainer and scorer: both precisions, packed seeds, numbers to JSON.

    python benchmarks/gpu_check.py OUT_DIR [--steps 3000]

Runs (1) a data-limited cell that must memorize ≥ 90 % of its bits in bf16 and fp32, and
(2) the paper's linearity-check shape (2 layers, d 128, V 2048, S 64, N 4096, 2 packed seeds)
for a fixed number of steps, reporting tokens/s, model FLOP utilisation, bits memorized and
bits per parameter, then membership inference and extraction on both; (3) the same shape with
one seed for a third of the steps: packed against unpacked tokens/s; (4) in bf16, the packed
cell through torch.compile for a third of the steps: compiled against eager steady-state
tokens/s (from the first evaluation on; the compile time shows in train_wall_s).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import polars as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from memcap.data import write_seed_datasets  # noqa: E402
from memcap.evaluate import evaluate_cell  # noqa: E402
from memcap.score import score_cell  # noqa: E402
from memcap.shapes import peak_flops, train_flops_per_token  # noqa: E402
from memcap.train import TrainSpec, train_cell  # noqa: E402


def run_cell(root: Path, spec: TrainSpec, seeds: list[int], device: str,
             heldout: int = 256, compile_model: bool = False) -> dict:
    train, held = write_seed_datasets(root, seeds, spec.n, spec.seq_len, spec.vocab_size,
                                      heldout)
    tag = f"{spec.n_layer}-{spec.d_model}-{spec.precision}-{spec.n}-{len(seeds)}-{compile_model}"
    dirs = [root / f"run-{tag}-s{s}" for s in seeds]
    t0 = time.perf_counter()
    recs = train_cell(spec, seeds, train, dirs, root / f"ck-{tag}.pt", device=device,
                      log_every=max(1, spec.steps // 5), echo=lambda s: print(s, flush=True),
                      compile_model=compile_model)
    wall = time.perf_counter() - t0
    t1 = time.perf_counter()
    scores = score_cell(spec, seeds, [d / "model.safetensors" for d in dirs], train, held, dirs,
                        [f"s{s}" for s in seeds], device=device, batch_size=2048)
    if device == "cuda":
        torch.cuda.synchronize()
    score_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    evals = evaluate_cell(spec, seeds, [d / "model.safetensors" for d in dirs], train, held,
                          [d / "scores.parquet" for d in dirs], dirs, [f"s{s}" for s in seeds],
                          prefix_lens=[8, 16, 32], device=device)
    evaluate_s = time.perf_counter() - t2
    tokens = recs[0]["steps_run"] * spec.batch * spec.seq_len * len(seeds)
    tokens_per_s = tokens / recs[0]["train_seconds"]
    # steady state: from the first evaluation after step 0 to the end (leaves out start-up
    # and torch.compile's compile time)
    log = pl.read_parquet(dirs[0] / "train_log.parquet").sort("step")
    first, last = log.filter(pl.col("step") > 0).row(0, named=True), log.row(-1, named=True)
    steady = ((last["step"] - first["step"]) * spec.batch * spec.seq_len * len(seeds)
              / max(last["elapsed_s"] - first["elapsed_s"], 1e-9))
    flops = train_flops_per_token(spec.vocab_size, spec.seq_len, spec.n_layer, spec.d_model)
    peak = (peak_flops(torch.cuda.get_device_name(0), recs[0]["compute_dtype"])
            if device == "cuda" else None)
    return {
        "spec": {k: getattr(spec, k) for k in ("vocab_size", "seq_len", "n_layer", "d_model",
                                               "precision", "n", "steps", "batch_size", "lr")},
        "params": spec.params, "seeds": seeds, "compute_dtype": recs[0]["compute_dtype"],
        "device": recs[0]["device"], "train_wall_s": wall,
        "train_tokens_per_s": tokens_per_s,
        "train_tokens_per_s_steady": steady,
        "train_flops_per_token": flops,
        "mfu": flops * steady / peak if peak else None,
        "score_sequences_per_s": len(seeds) * (spec.n + heldout) / score_s,
        "mem_bits": [s["mem_bits"] for s in scores],
        "memorized_fraction": [s["mem_bits"] / s["dataset_bits"] for s in scores],
        "bits_per_param": [s["mem_bits"] / spec.params for s in scores],
        "saturated": [r["saturated"] for r in recs],
        "heldout_loss": [s["heldout_loss"] for s in scores],
        "evaluate_s": evaluate_s,
        "mia_loss_auc": [next(m["auc"] for m in e["mia"] if m["attack"] == "loss")
                         for e in evals],
        "mia_loss_f1_median": [next(m["f1_median"] for m in e["mia"] if m["attack"] == "loss")
                               for e in evals],
        "extraction": [{f"{x['split']} k={x['prefix_len']}": x["rate"] for x in e["extraction"]}
                       for e in evals],
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--device", default="cuda", help="cpu only to try the script itself")
    args = p.parse_args()
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else "none"
    result = {"gpu": gpu, "torch": torch.__version__, "cells": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for precision in ("bf16", "fp32"):
            small = TrainSpec(vocab_size=16, seq_len=16, n_layer=1, d_model=16,
                              precision=precision, n=8, steps=300, batch_size=32, lr=0.03,
                              eval_every=50)
            cell = run_cell(root, small, [0, 1], args.device)
            result["cells"].append({"check": "data-limited", **cell})
            big = TrainSpec(vocab_size=2048, seq_len=64, n_layer=2, d_model=128,
                            precision=precision, n=4096, steps=args.steps, batch_size=256,
                            lr=0.003, eval_every=max(1, args.steps // 20), eval_samples=1024)
            cell = run_cell(root, big, [0, 1], args.device)
            result["cells"].append({"check": "L2-d128 N4096", **cell})
            one = run_cell(root, replace(big, steps=max(1, args.steps // 3)), [0], args.device)
            result["cells"].append({"check": "L2-d128 N4096 unpacked", **one})
            result[f"packed_vs_unpacked_{precision}"] = (cell["train_tokens_per_s"]
                                                         / one["train_tokens_per_s"])
            if precision == "bf16":  # torch.compile: steady-state speed and compile time
                comp = run_cell(root, replace(big, steps=max(1, args.steps // 3)), [0, 1],
                                args.device, compile_model=True)
                result["cells"].append({"check": "L2-d128 N4096 compiled", **comp})
                result["compiled_vs_eager_bf16"] = (comp["train_tokens_per_s_steady"]
                                                    / cell["train_tokens_per_s_steady"])
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "gpu_check.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
