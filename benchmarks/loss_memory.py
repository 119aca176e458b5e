"""Peak memory of one training loss and backward pass at a large vocabulary: the whole batch's
logits at once against memcap's chunked loss (model.mean_token_nll), each in a fresh process.

    python benchmarks/loss_memory.py [--vocab 50257] [--batch 32] [--device cpu|cuda]

Prints the peak memory of each (resident set on a CPU, allocated memory on CUDA), their ratio,
the wall time and the two losses, which must agree.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def measure(args: argparse.Namespace, max_logits: int) -> dict:
    sys.path.insert(0, str(SRC))
    import torch

    from memcap.loss import mean_token_nll
    from memcap.models import PackedGPT
    from memcap.shapes import Shape

    torch.set_num_threads(1)
    device = torch.device(args.device)
    M, V, S, B = args.models, args.vocab, args.seq, args.batch
    model = PackedGPT(M, Shape(V, S, 1, 32, 32 // 2))
    model.init_weights(list(range(M)))
    model.to(device)
    idx = torch.randint(0, V, (M, B, S), generator=torch.Generator().manual_seed(0)).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    loss = mean_token_nll(model, model.hidden(idx), idx, max_logits=max_logits, fused=False)
    loss.sum().backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"max_logits": max_logits, "peak_gib": peak / 2**30,
            "seconds": time.perf_counter() - t0, "loss": loss.tolist()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--vocab", type=int, default=50257)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--models", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--chunk-logits", type=int, default=2**24,
                   help="the chunked run's logits limit (the workflow uses 2^29)")
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child process: one run
    args = p.parse_args()
    if args.one is not None:
        print(json.dumps(measure(args, args.one)))
        return
    logits = args.models * args.batch * args.seq * args.vocab
    runs = {}
    for name, limit in (("whole batch", 2 * logits), ("chunked", args.chunk_logits)):
        out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--one", str(limit)],
                             capture_output=True, text=True, check=True)
        runs[name] = json.loads(out.stdout.strip().splitlines()[-1])
    whole, chunked = runs["whole batch"], runs["chunked"]
    print(f"{args.models} models × {args.batch} sequences × S {args.seq} × V {args.vocab}: "
          f"{logits:,} logits, device {args.device}")
    for name, r in runs.items():
        print(f"{name:12} peak +{r['peak_gib']:.2f} GiB, {r['seconds']:.1f} s, loss "
              f"{', '.join(f'{x:.6f}' for x in r['loss'])}")
    print(f"peak memory ratio whole / chunked: {whole['peak_gib'] / chunked['peak_gib']:.1f}")


if __name__ == "__main__":
    main()
