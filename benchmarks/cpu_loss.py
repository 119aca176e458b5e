"""Training steps on a CPU with the logits loss against the fused loss (model.mean_token_nll's
two CPU paths), at several vocabularies and architectures.

    python benchmarks/cpu_loss.py [--out docs/measurements/cpu_loss.json] [--sweep]

Each case builds two identical packed models (2 seeds, same initialisation) and their fused
Adam as memcap.stages.train builds it, and times whole training steps
(memcap.stages.train.train_step:
gather, loss, backward, Adam) on the same batches, alternating rounds of the two paths so that
a noisy machine slows both alike. It reports the median tokens/s of each over the rounds,
their ratio, and the largest |loss difference| between the paths on the same batch. V 50,257
runs at a smaller batch (--large-batch) to keep the logits loss's memory and time moderate.
--sweep also times the fused step at several block sizes (rows per block).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from memcap.cell import make_spec
from memcap.loss import fused_block_rows, fused_mean_token_nll, mean_token_nll
from memcap.models import PackedGPT
from memcap.shapes import Shape
from memcap.stages.train import train_step

SEEDS = [0, 1]
SEQ = 64


def build(vocab: int, d_model: int, n: int):
    spec = make_spec(vocab_size=vocab, seq_len=SEQ, n_layer=1, d_model=d_model,
                     precision="fp32", n=n, steps=1, batch_size=64, lr=1e-3)
    model = PackedGPT(len(SEEDS), Shape(vocab, SEQ, 1, d_model, spec.head_dim))
    model.init_weights(SEEDS)
    opt = torch.optim.Adam(model.parameters(), lr=spec.lr, betas=(spec.beta1, spec.beta2),
                           eps=spec.eps, weight_decay=spec.weight_decay, fused=True)
    return model, opt


def loss_of(model: PackedGPT, fused: bool, rows: int | None = None):
    # memcap.stages.train.training_loss on a CPU (fp32, not compiled), with the path chosen
    def loss(batch: torch.Tensor) -> torch.Tensor:
        h = model.hidden(batch)
        if fused and rows is not None:
            return fused_mean_token_nll(h, model.wte, batch, rows=rows)
        return mean_token_nll(model, h, batch, fused=fused)
    return loss


def time_paths(vocab: int, d_model: int, batch: int, rounds: int, steps: int,
               variants: dict[str, tuple[bool, int | None]]) -> dict:
    """Alternating rounds of `steps` training steps per variant; tokens/s per round."""
    n = batch * (rounds * steps + 2)
    gen = torch.Generator().manual_seed(vocab + d_model)
    data = torch.randint(0, vocab, (len(SEEDS), n, SEQ), generator=gen, dtype=torch.int32)
    runs = {}
    for name, (fused, rows) in variants.items():
        model, opt = build(vocab, d_model, n)
        runs[name] = (loss_of(model, fused, rows), opt)
    order = torch.arange(n).expand(len(SEEDS), n)
    tokens = len(SEEDS) * batch * SEQ
    rates = {name: [] for name in variants}
    losses = {name: [] for name in variants}
    for name, (loss, opt) in runs.items():  # warm-up on the same first batch
        losses[name].append(train_step(loss, opt, data, order[:, :batch]))
    step = 1
    for _ in range(rounds):
        for name, (loss, opt) in runs.items():
            t0 = time.perf_counter()
            for s in range(step, step + steps):
                losses[name].append(train_step(loss, opt, data,
                                               order[:, s * batch:(s + 1) * batch]))
            rates[name].append(tokens * steps / (time.perf_counter() - t0))
        step += steps
    return {name: {"tokens_per_s": statistics.median(r), "rounds_tokens_per_s": r,
                   "losses": torch.stack(losses[name]).tolist()} for name, r in rates.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--large-batch", type=int, default=16, help="batch at V 50,257")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--sweep", action="store_true", help="also time block sizes")
    args = p.parse_args()
    torch.set_num_threads(1)
    results = {"machine": f"{platform.machine()} {platform.processor()}".strip(),
               "torch": torch.__version__, "threads": 1, "seeds": len(SEEDS), "seq_len": SEQ,
               "cases": [], "sweep": []}
    print(f"{'V':>6} {'arch':>6} {'batch':>5} {'rows':>5} {'logits tok/s':>13} "
          f"{'fused tok/s':>12} {'ratio':>6} {'max |dloss|':>12}")
    for vocab in (64, 2048, 50257):
        batch = args.large_batch if vocab > 4096 else args.batch
        steps = {64: 10, 2048: 3}.get(vocab, 1)
        rounds = args.rounds if vocab <= 4096 else 3
        for d_model in (8, 32):
            r = time_paths(vocab, d_model, batch, rounds, steps,
                           {"logits": (False, None), "fused": (True, None)})
            dloss = max(abs(a - b) for x, y in zip(r["logits"]["losses"], r["fused"]["losses"],
                                                   strict=True)
                        for a, b in zip(x, y, strict=True))
            case = {"vocab": vocab, "arch": f"L1-d{d_model}", "batch": batch,
                    "rows": fused_block_rows(vocab), "logits": r["logits"],
                    "fused": r["fused"], "ratio": r["fused"]["tokens_per_s"]
                    / r["logits"]["tokens_per_s"], "max_abs_loss_diff": dloss}
            results["cases"].append(case)
            print(f"{vocab:>6} {case['arch']:>6} {batch:>5} {case['rows']:>5} "
                  f"{r['logits']['tokens_per_s']:>13,.0f} {r['fused']['tokens_per_s']:>12,.0f} "
                  f"{case['ratio']:>6.2f} {dloss:>12.2e}", flush=True)
    if args.sweep:
        print("\nfused step at several block sizes (rows per block per model)")
        for vocab, d_model, sizes in ((64, 8, (256, 1024, 4096)),
                                      (2048, 8, (16, 32, 64, 128, 256)),
                                      (2048, 32, (16, 32, 64, 128, 256))):
            r = time_paths(vocab, d_model, args.batch, args.rounds, {64: 10}.get(vocab, 3),
                           {str(rows): (True, rows) for rows in sizes})
            for rows in sizes:
                tps = r[str(rows)]["tokens_per_s"]
                results["sweep"].append({"vocab": vocab, "arch": f"L1-d{d_model}",
                                         "rows": rows, "tokens_per_s": tps})
                print(f"V {vocab:>5} L1-d{d_model:<3} rows {rows:>5}: {tps:>10,.0f} tok/s",
                      flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
