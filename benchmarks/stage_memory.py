"""Peak resident memory and time of every model stage of one cell, at the paper's shapes.

    python benchmarks/stage_memory.py --sizes 1048576 8388608 --stages data train
    python benchmarks/stage_memory.py --sizes 262144 --device cuda

One cell of configs/paper-synthetic.yaml (V 2048, S 64, 5 seeds, the smallest architecture,
L1-d32) per N, trained for a handful of steps (--steps). Each stage runs as the rules run it
(`python -m memcap <stage> --cell ...`, in a fresh process, in a scratch results/ tree), and its
peak resident set comes from the kernel's accounting of that one process (os.wait4). Beside
it: the compact size of the data the stage must hold (memcap.memory.compact_bytes), their
ratio, and the mem_mb the rule asks the scheduler for. The data stage is one seed's file (one
job of the synthetic_data rule). Scoring every sample is the slow part on a CPU (about 5·10^4
tokens/s there: N = 2^23 with 5 seeds is 2.7·10^9 tokens, 15 hours), so score and evaluate
reach the paper's largest N on a GPU (benchmarks/gpu.sh); a CPU measures them at smaller N.
Do not extrapolate small-N peaks linearly: below N ≈ 10^5 one batch's logits and the
allocator's noise dominate (a fit over N = 2^13…2^15 projected 25 GB for the data stage, which
measures 0.4 GB at 2^23).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from memcap.cell import Runtime, build_cell  # noqa: E402
from memcap.config import validate_config  # noqa: E402
from memcap.memory import compact_bytes, request_mb  # noqa: E402

MiB = 2**20


def bench_config(n: int, steps: int, arch: dict) -> dict:
    cfg = yaml.safe_load((REPO / "configs/paper-synthetic.yaml").read_text())
    cfg["synthetic"]["dataset_sizes"] = [n]
    cfg["architectures"] = [arch]
    cfg["precisions"] = ["fp32"]
    cfg["device"] = "auto"
    cfg["train"].update(steps=steps, eval_every=max(steps, 1))
    return validate_config(cfg)


def run_stage(argv: list[str], cwd: Path) -> tuple[int, float]:
    """Run one command; (peak resident set in bytes, seconds) of that process."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} failed:\n{out.decode()[-3000:]}")
    return usage.ru_maxrss * 1024, seconds  # Linux reports kilobytes


def base_mb() -> float:
    """Resident set of a model stage's process before it reads any data: the interpreter with
    torch, polars and memcap's stages imported."""
    peak, _ = run_stage([sys.executable, "-c", "import memcap.stages.train, memcap.stages.score, "
                         "memcap.stages.evaluate, polars, torch; torch.zeros(1)"], REPO)
    return peak / MiB


def bench(n: int, stages: list[str], args: argparse.Namespace, root: Path) -> list[dict]:
    config = bench_config(n, args.steps, {"n_layer": 1, "d_model": 32})
    cell = build_cell(config, "synthetic", "L1-d32", "fp32", n)
    spec, seeds, heldout = cell.spec, cell.seeds, config["synthetic"]["heldout"]
    rt = Runtime.from_config({**config, "device": args.device})
    runtime_args = [a for f in rt.__dataclass_fields__
                    for a in (f"--{f.replace('_', '-')}", str(getattr(rt, f)))]
    py = [sys.executable, "-m", "memcap"]
    shape = dict(vocab_size=spec.vocab_size, seq_len=spec.seq_len, n=n, seeds=len(seeds),
                 heldout=heldout, params=spec.params,
                 extraction_samples=config["evaluate"]["extraction_samples"])
    rows = []
    for stage in stages:
        if stage == "data":  # every file the cell needs; the measured job is seed 0's train
            peak = 0
            for s in seeds:
                for split, count in (("train", n), ("heldout", heldout)):
                    out = Path(cell.train_data[seeds.index(s)] if split == "train"
                               else cell.heldout_data[seeds.index(s)])
                    if (root / out).exists():
                        continue
                    p, secs = run_stage([*py, "data", "--seed", str(s), "--split", split,
                                         "--n", str(count), "--seq-len", str(spec.seq_len),
                                         "--vocab-size", str(spec.vocab_size), "--out",
                                         str(out)], root)
                    if s == seeds[0] and split == "train":
                        peak, seconds = p, secs
            compact = {"tokens": n * spec.seq_len * 2}
        else:
            cmd = [*py, stage, "--cell", cell.to_json(), *runtime_args]
            if stage == "evaluate":
                cmd += ["--settings", json.dumps(config["evaluate"])]
            peak, seconds = run_stage(cmd, root)
            batch = spec.batch if stage == "train" else rt.score_batch_size
            compact = compact_bytes(stage, **shape, batch=batch)
        total = sum(compact.values())
        rows.append({"stage": stage, "n": n, "seeds": len(seeds), "peak_mb": peak / MiB,
                     "compact_mb": total / MiB, "ratio": peak / total,
                     "ratio_above_base": (peak / MiB - args.base_mb) / (total / MiB),
                     "request_mb": request_mb(compact) if stage != "data" else None,
                     "seconds": seconds, "parts_mb": {k: v / MiB for k, v in compact.items()}})
        r = rows[-1]
        print(f"{stage:9s} N={n:>9,d} peak {r['peak_mb']:>9,.0f} MiB  compact "
              f"{r['compact_mb']:>9,.0f} MiB  ratio {r['ratio']:5.2f} "
              f"({r['ratio_above_base']:5.2f} above the base)  request "
              f"{r['request_mb'] or 0:>7,} MB  {seconds:7.1f} s", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[2**20, 2**23])
    p.add_argument("--stages", nargs="+", default=["data", "train", "score", "evaluate"],
                   choices=["data", "train", "score", "evaluate"])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--out", type=Path, help="write the rows as JSON here")
    p.add_argument("--workdir", type=Path, help="scratch results tree (default: a temp dir)")
    args = p.parse_args()
    args.base_mb = base_mb()
    print(f"base: {args.base_mb:,.0f} MiB (interpreter, torch, polars, memcap imported)")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.workdir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        rows = [r for n in args.sizes for r in bench(n, args.stages, args, root)]
    if args.out:
        args.out.write_text(json.dumps({"base_mb": args.base_mb, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
