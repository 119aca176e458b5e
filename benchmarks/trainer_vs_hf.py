"""memcap's packed trainer and scorer against what a user would otherwise write, per family.

Baseline: the transformers model of the same family and shape (GPT2LMHeadModel,
LlamaForCausalLM, MambaForCausalLM, built from the family's own hf_config: the model
`memcap export-run` writes), one model per seed, run the usual way (model(input_ids,
labels).loss, backward) with a plain torch AdamW loop (fused, as memcap's Adam). memcap: all
seeds of a cell as one packed model stepped by `memcap.stages.train.train_step` (gather, the
loss of `memcap.stages.train.training_loss`, backward, fused Adam), eager and, on CUDA, as the
captured CUDA graph that `memcap.stages.train` replays (`GraphStep`, the same step). Both
measured in the same process, on the same machine, with the same threads, batch and data.
Prints tokens/s (training) and sequences/s (scoring) and the ratio memcap / baseline.

    pip install "transformers>=4.56"
    python benchmarks/trainer_vs_hf.py [--device cpu|cuda] [--seeds 2] [--steps 60]
                                       [--shapes L1-d16,llama-L1-d16,mamba-L1-d16]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from memcap.loss import sequence_nll_bits  # noqa: E402
from memcap.models import build  # noqa: E402
from memcap.models.causal_lm import HF_CLASSES  # noqa: E402
from memcap.shapes import FAMILIES, Shape  # noqa: E402
from memcap.stages.train import GraphStep, train_step, training_loss  # noqa: E402

# the default experiment's architectures above d 8, and the families config's
SHAPES = "L1-d16,L2-d16,L1-d32"


def parse_shapes(text: str) -> list[tuple[str, int, int]]:
    """'L1-d16,llama-L2-d64' -> [("gpt2", 1, 16), ("llama", 2, 64)]."""
    out = []
    for item in text.split(","):
        family, _, core = item.strip().rpartition("-L")
        family, core = (family, "L" + core) if family else ("gpt2", item.strip())
        layers, _, width = core.partition("-d")
        if not (family in FAMILIES and layers.startswith("L") and layers[1:].isdigit()
                and width.isdigit()):
            raise SystemExit(f"--shapes: expected items like L2-d64 or mamba-L1-d32, got "
                             f"{item!r}")
        out.append((family, int(layers[1:]), int(width)))
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _amp(device: torch.device, bf16: bool):
    if bf16 and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def hf_models(m: int, shape: Shape, device: torch.device):
    """m transformers models of the family and shape (transformers' own initialisation)."""
    import transformers

    transformers.logging.set_verbosity_error()
    cfg = build(shape, 1).hf_config(transformers)
    cfg.bos_token_id = cfg.eos_token_id = cfg.pad_token_id = None
    models = []
    for seed in range(m):
        torch.manual_seed(seed)
        model = getattr(transformers, HF_CLASSES[shape.family])(cfg).to(device)
        assert sum(p.numel() for p in model.parameters()) == shape.params
        models.append(model)
    return models


def time_steps(step, steps: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - t0) / steps


def bench_shape(family: str, n_layer: int, d: int, args, device: torch.device) -> dict:
    V, S, B, M = args.vocab, args.seq, args.batch, args.seeds
    shape = Shape(V, S, n_layer, d, 16, family)
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, V, (M, B, S), generator=g).to(device)
    score_data = torch.randint(0, V, (M, args.score_n, S), generator=g).to(device)
    amp = _amp(device, args.bf16)

    packed = build(shape, M)
    packed.init_weights(list(range(M)))
    packed.to(device)
    opt = torch.optim.Adam(packed.parameters(), lr=1e-3, fused=True)
    loss_fn = training_loss(packed, device, "bf16" if args.bf16 and device.type == "cuda"
                            else "fp32", compile_model=args.compile)

    # every step takes the whole (M, B, S) batch: the sample indices 0 … B−1 of each model
    idx = torch.arange(B, device=device).expand(M, B)

    def memcap_step() -> None:
        train_step(loss_fn, opt, data, idx)

    models = hf_models(M, shape, device)
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.0, fused=True)
            for m in models]

    def hf_step() -> None:
        for i, (model, o) in enumerate(zip(models, opts, strict=True)):
            with amp:
                loss = model(input_ids=data[i], labels=data[i], use_cache=False).loss
            o.zero_grad(set_to_none=True)
            loss.backward()
            o.step()

    t_memcap = time_steps(memcap_step, args.steps, args.warmup, device)
    t_hf = time_steps(hf_step, args.steps, args.warmup, device)
    tokens = M * B * S
    graph = {}
    if device.type == "cuda":  # memcap's GPU path: the whole step replayed as a CUDA graph
        g_opt = torch.optim.Adam(packed.parameters(), lr=torch.tensor(1e-3, device=device),
                                 fused=True, capturable=True)
        step = GraphStep(loss_fn, packed, g_opt, data, B)
        t_graph = time_steps(lambda: step(idx), args.steps, args.warmup, device)
        graph = {"memcap_cuda_graph": tokens / t_graph, "ratio_cuda_graph": t_hf / t_graph}

    @torch.no_grad()
    def hf_score() -> None:
        for i, model in enumerate(models):
            for start in range(0, args.score_n, 512):
                x = score_data[i, start:start + 512]
                with amp:
                    logits = model(input_ids=x, use_cache=False).logits
                torch.nn.functional.cross_entropy(
                    logits[:, :-1].float().reshape(-1, V), x[:, 1:].reshape(-1),
                    reduction="none").view(x.shape[0], -1).sum(-1)

    s_memcap = time_steps(lambda: sequence_nll_bits(packed, score_data, 512, amp), 3, 1, device)
    s_hf = time_steps(hf_score, 3, 1, device)
    seqs = M * args.score_n
    return {
        "arch": ("" if family == "gpt2" else f"{family}-") + f"L{n_layer}-d{d}",
        "family": family, "params": shape.params,
        "train_tokens_per_s": {"memcap": tokens / t_memcap, "hf_baseline": tokens / t_hf,
                               "ratio": t_hf / t_memcap, **graph},
        "score_sequences_per_s": {"memcap": seqs / s_memcap, "hf_baseline": seqs / s_hf,
                                  "ratio": s_hf / s_memcap},
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seeds", type=int, default=2, help="models per cell (packed by memcap)")
    p.add_argument("--vocab", type=int, default=64)
    p.add_argument("--seq", type=int, default=32)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--score-n", type=int, default=1024)
    p.add_argument("--threads", type=int, default=1, help="CPU threads (the workflow uses 1)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA only)")
    p.add_argument("--compile", action="store_true",
                   help="memcap's loss through torch.compile (the warm-up steps compile)")
    p.add_argument("--shapes", default=SHAPES, help="architectures, e.g. L1-d16,L2-d64")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    rows = [bench_shape(f, L, d, args, device) for f, L, d in parse_shapes(args.shapes)]
    print(f"device {device} ({torch.cuda.get_device_name(0) if device.type == 'cuda' else 'cpu'}"
          f"), torch {torch.__version__}, {args.seeds} seeds, V {args.vocab}, S {args.seq}, "
          f"batch {args.batch}, threads {args.threads}")
    print(f"{'arch':14} {'params':>8} {'train tok/s memcap':>19} {'HF':>10} {'ratio':>6} "
          f"{'score seq/s memcap':>19} {'HF':>10} {'ratio':>6}")
    for r in rows:
        t, s = r["train_tokens_per_s"], r["score_sequences_per_s"]
        print(f"{r['arch']:14} {r['params']:>8,} {t['memcap']:>19,.0f} {t['hf_baseline']:>10,.0f}"
              f" {t['ratio']:>6.2f} {s['memcap']:>19,.0f} {s['hf_baseline']:>10,.0f}"
              f" {s['ratio']:>6.2f}")
        if "memcap_cuda_graph" in t:
            print(f"{'':14} {'':>8} {t['memcap_cuda_graph']:>19,.0f} (CUDA graph) ratio "
                  f"{t['ratio_cuda_graph']:.2f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"device": str(device), "args": vars(args) | {
            "out": str(args.out)}, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
