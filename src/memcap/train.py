"""Training one cell: all seeds of (kind, architecture, precision, N) as one packed model.

Seed s sets both the data (the caller passes seed s's dataset) and the initialisation. The
batch at step t is a pure function of (seed, t) (epoch-wise permutations keyed by the epoch),
so a run resumed from a checkpoint continues exactly as if it had never stopped.

Outputs per seed, in its run folder, all written only after every seed finished:
  model.safetensors   the trained weights of that one model (no model dimension)
  train_log.parquet   periodic evaluations: step, lr, train loss, estimated bits memorized
  run.json            the run record: coordinates, steps, saturation, losses, device, seconds
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from memcap import device as dev
from memcap.data import read_tokens
from memcap.io import atomic_path, write_json
from memcap.model import PackedGPT, mean_token_nll, n_heads, param_count, sequence_nll_bits

SCHEDULES = ("cosine", "linear", "constant")


class NonFiniteLossError(RuntimeError):
    pass


@dataclass(frozen=True)
class TrainSpec:
    """Everything that determines a cell's trained weights (and nothing that does not)."""

    vocab_size: int
    seq_len: int
    n_layer: int
    d_model: int
    precision: str
    n: int
    steps: int
    batch_size: int
    lr: float
    head_dim: int = 16
    warmup_frac: float = 0.05
    schedule: str = "cosine"
    min_lr_frac: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-8
    weight_decay: float = 0.0
    eval_every: int = 100
    eval_samples: int = 4096
    saturation_window: float = 0.1
    saturation_growth: float = 0.01
    early_stop: bool = False

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"train.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        for key in ("vocab_size", "seq_len", "n_layer", "d_model", "n", "batch_size",
                    "eval_every", "eval_samples", "head_dim"):
            if getattr(self, key) < 1:
                raise ValueError(f"train spec {key} must be positive, got {getattr(self, key)}")
        if self.steps < 0:
            raise ValueError(f"train.steps must be >= 0, got {self.steps}")
        if not (math.isfinite(self.lr) and self.lr >= 0):
            raise ValueError(f"train.lr must be a finite number >= 0, got {self.lr}")

    @property
    def params(self) -> int:
        return param_count(self.vocab_size, self.seq_len, self.n_layer, self.d_model)

    @property
    def batch(self) -> int:
        """Sequences per step and model: the batch size, or the whole dataset if smaller."""
        return min(self.batch_size, self.n)

    @property
    def memorizable_bits(self) -> float:
        return self.n * (self.seq_len - 1) * math.log2(self.vocab_size)


def lr_at(spec: TrainSpec, step: int) -> float:
    """Linear warmup to spec.lr, then cosine / linear decay to min_lr_frac·lr (or constant)."""
    warmup = int(spec.warmup_frac * spec.steps)
    if step < warmup:
        return spec.lr * (step + 1) / warmup
    if spec.schedule == "constant":
        return spec.lr
    progress = (step - warmup) / max(1, spec.steps - warmup)
    floor = spec.min_lr_frac * spec.lr
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if spec.schedule == "cosine" else 1 - progress
    return floor + (spec.lr - floor) * shape


class EpochSampler:
    """Batch indices for step t: positions t·B … t·B+B−1 of the concatenated epochs, where
    epoch e of model m is a permutation drawn from a CPU generator keyed by (seed_m, e), so
    the order is the same on every device.

    Each epoch's permutations are drawn once and copied to the device asynchronously (pinned
    memory on CUDA); a step only slices them there, so the training loop never waits for the
    host."""

    def __init__(self, seeds: list[int], n: int, batch: int,
                 device: torch.device | str = "cpu") -> None:
        if not 1 <= batch <= n:
            raise ValueError(f"batch {batch} must be between 1 and n {n}")
        self.seeds, self.n, self.batch = seeds, n, batch
        self.device = torch.device(device)
        self._cache: dict[int, torch.Tensor] = {}

    def _epoch(self, epoch: int) -> torch.Tensor:
        """(M, n) permutations of one epoch, on the device."""
        if epoch not in self._cache:
            for old in [e for e in self._cache if e < epoch - 1]:
                del self._cache[old]
            perms = torch.stack([
                torch.randperm(self.n, generator=torch.Generator().manual_seed(
                    seed * 1_000_003 + epoch)) for seed in self.seeds])
            if self.device.type == "cuda":  # pinned, so the copy below is asynchronous
                perms = perms.pin_memory()
            self._cache[epoch] = perms.to(self.device, non_blocking=True)
        return self._cache[epoch]

    def indices(self, step: int) -> torch.Tensor:
        """(M, B) sample indices of step `step`, on the device."""
        start = step * self.batch
        epoch, offset = divmod(start, self.n)
        perm = self._epoch(epoch)
        if offset + self.batch > self.n:  # the batch runs into the next epoch (B ≤ n)
            perm = torch.cat([perm, self._epoch(epoch + 1)], dim=1)
        return perm[:, offset:offset + self.batch]


def saturation(log: pl.DataFrame, steps: int, window: float, growth: float,
               end_step: int | None = None) -> tuple[bool, float]:
    """SCIENCE.md's rule: saturated when memorization grew by less than `growth` (relative)
    over the last `window` of the steps: from the last evaluation at or before
    end_step − window·steps to end_step (default: the end of the run). Returns (saturated,
    relative growth)."""
    end_step = steps if end_step is None else end_step
    log = log.filter(pl.col("step") <= end_step).sort("step")
    if steps == 0 or log.height < 2:
        return False, float("nan")
    end = log["mem_bits"][-1]
    before = log.filter(pl.col("step") <= end_step - window * steps)
    start = before["mem_bits"][-1] if before.height else log["mem_bits"][0]
    rel = (end - start) / end if end > 0 else 0.0
    return bool(rel < growth), float(rel)


def saturated_now(rows: list[dict], seeds: list[int], step: int, spec: TrainSpec) -> bool:
    """Early stopping: every seed already passes the saturation rule at `step` (a whole
    window of evaluations lies behind it)."""
    if step < spec.saturation_window * spec.steps:
        return False
    log = pl.DataFrame(rows, schema_overrides={"step": pl.Int64, "seed": pl.Int64})
    return all(saturation(log.filter(pl.col("seed") == s), spec.steps, spec.saturation_window,
                          spec.saturation_growth, end_step=step)[0] for s in seeds)


def unpack_state(model: PackedGPT, m: int) -> dict[str, torch.Tensor]:
    return {k: v[m].detach().float().cpu().contiguous() for k, v in model.state_dict().items()}


def load_packed(spec: TrainSpec, model_paths: list[Path], device: torch.device) -> PackedGPT:
    """Stack single-model safetensors files into one packed model."""
    model = PackedGPT(len(model_paths), spec.vocab_size, spec.seq_len, spec.n_layer,
                      spec.d_model, n_heads(spec.d_model, spec.head_dim))
    states = []
    for path in model_paths:
        if not Path(path).exists():
            raise FileNotFoundError(f"model weights {path} do not exist")
        states.append(load_file(str(path)))
    model.load_state_dict({k: torch.stack([s[k] for s in states]) for k in states[0]})
    return model.to(device)


def training_loss(model: nn.Module, device: torch.device, dtype: str,
                  compile_model: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """batch (M, B, S) -> mean next-token loss of each model (M,) in nats: the forward pass
    under bf16 autocast when dtype is bf16, the loss in fp32 (in chunks of sequences when the
    logits would be too large, model.mean_token_nll). compile_model puts the whole
    function (model and loss) through torch.compile. The autocast weight cache is off: each
    weight is cast once per step anyway, and a captured CUDA graph cannot use the cache."""
    bf16 = dtype == "bf16"

    def loss(batch: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16,
                            cache_enabled=False):
            # token_nll upcasts the logits to fp32 itself
            return mean_token_nll(model, model.hidden(batch), batch)

    if compile_model:
        # inductor's CPU backend imports setuptools; when the stdlib distutils was imported
        # earlier in the process, setuptools' distutils shim fails an assertion unless told
        # to leave distutils alone
        os.environ.setdefault("SETUPTOOLS_USE_DISTUTILS", "stdlib")
        return torch.compile(loss)
    return loss


def train_step(loss: Callable[[torch.Tensor], torch.Tensor], opt: torch.optim.Optimizer,
               data: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """One optimizer step on the sequences idx (M, B) of data (M, N, S): gather, loss,
    backward, Adam. Returns the per-model losses (M,), detached."""
    batch = torch.gather(data, 1, idx.unsqueeze(-1).expand(-1, -1, data.shape[2])).long()
    losses = loss(batch)
    opt.zero_grad(set_to_none=True)
    losses.sum().backward()
    opt.step()
    return losses.detach()


class GraphStep:
    """One whole training step (gather, forward, loss, backward, Adam) captured as a CUDA graph.

    Tiny models leave a GPU idle while Python launches hundreds of small kernels per step; a
    replayed graph launches them all at once. The arithmetic is the eager step's: the same
    kernels on the same tensors. Inputs live in fixed buffers: `idx` (the step's sample
    indices) and the optimizer's lr tensor; `losses` holds the step's per-model loss after
    each replay. The optimizer must be capturable, with its lr a device tensor."""

    def __init__(self, loss: Callable[[torch.Tensor], torch.Tensor], model: nn.Module,
                 opt: torch.optim.Optimizer, data: torch.Tensor, batch: int) -> None:
        self.idx = torch.zeros(data.shape[0], batch, dtype=torch.long, device=data.device)
        self.graph = torch.cuda.CUDAGraph()
        # capture needs a few eager warm-up steps on a side stream (they also compile, when
        # the loss is compiled); they must not count, so every parameter and optimizer state
        # is put back to what it was before them
        saved = {p: p.detach().clone() for p in model.parameters()}
        had_state = {p: {k: v.clone() for k, v in opt.state[p].items()}
                     for p in model.parameters() if p in opt.state}
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                train_step(loss, opt, data, self.idx)
        torch.cuda.current_stream().wait_stream(side)
        with torch.no_grad():
            for p, value in saved.items():
                p.copy_(value)
                for k, v in opt.state[p].items():
                    v.copy_(had_state[p][k]) if p in had_state else v.zero_()
        opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(self.graph):
            self.losses = train_step(loss, opt, data, self.idx)

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        self.idx.copy_(idx)
        self.graph.replay()
        return self.losses


def train_cell(spec: TrainSpec, seeds: list[int], train_paths: list[Path], out_dirs: list[Path],
               checkpoint: Path, device: str = "auto", threads: int = 1, log_every: int = 200,
               checkpoint_every: int = 500, label: str = "",
               echo: Callable[[str], None] = print, compile_model: bool | None = None,
               cuda_graph: bool = True) -> list[dict]:
    """Train one packed model per seed; write each seed's outputs; return the run records.

    compile_model: run the training forward pass and loss through torch.compile (an
    execution setting: the same model and loss in fused kernels, which round differently; it
    pays a compile time up front); None: compile on CUDA, where it pays (benchmarks/gpu.sh),
    not on a CPU.
    cuda_graph: on CUDA, replay each training step as one captured CUDA graph (GraphStep;
    an execution setting too; compiled or not). Never on a CPU."""
    if not (len(seeds) == len(train_paths) == len(out_dirs)):
        raise ValueError("seeds, train_paths and out_dirs must have the same length")
    torch_device = dev.resolve_device(device)
    dtype = dev.configure(torch_device, spec.precision, threads)
    amp = dev.autocast(torch_device, dtype)
    M, S = len(seeds), spec.seq_len

    data = []
    for path in train_paths:
        ids, toks = read_tokens(path)
        if toks.shape != (spec.n, S):
            raise ValueError(f"{path}: expected {spec.n} sequences of {S} tokens, "
                             f"got {toks.shape[0]} of {toks.shape[1]}")
        if toks.max() >= spec.vocab_size:
            raise ValueError(f"{path}: token id {toks.max()} >= vocab_size {spec.vocab_size}")
        data.append(torch.from_numpy(toks))
    # tokens live on the device as int32 (half of int64: the paper's largest N with 5 seeds
    # is 2.7e9 tokens); a batch is widened to int64 after the gather
    store = torch.int32 if spec.vocab_size <= 2**31 else torch.int64
    data_t = torch.stack(data).to(store).to(torch_device)  # (M, N, S)
    eval_t = data_t[:, :spec.eval_samples].long()
    eval_scale = spec.n / eval_t.shape[1]
    ref_bits = (S - 1) * math.log2(spec.vocab_size)

    model = PackedGPT(M, spec.vocab_size, S, spec.n_layer, spec.d_model,
                      n_heads(spec.d_model, spec.head_dim))
    model.init_weights(seeds)
    model.to(torch_device)
    assert model.params_per_model() == spec.params
    graphed = torch_device.type == "cuda" and cuda_graph
    if compile_model is None:
        compile_model = torch_device.type == "cuda"
    # fused Adam: one kernel (CUDA) or one vectorised loop (CPU) for every parameter; a
    # captured step reads the learning rate from a device tensor that is refilled each step
    lr_t = torch.tensor(spec.lr, device=torch_device) if graphed else None
    opt = torch.optim.Adam(model.parameters(), lr=lr_t if graphed else spec.lr,
                           betas=(spec.beta1, spec.beta2), eps=spec.eps,
                           weight_decay=spec.weight_decay, fused=True, capturable=graphed)
    sampler = EpochSampler(seeds, spec.n, spec.batch, torch_device)
    rows: list[dict] = []
    step, elapsed = 0, 0.0
    identity = {"spec": asdict(spec), "seeds": list(seeds)}

    if checkpoint.exists():
        state = torch.load(checkpoint, map_location=torch_device, weights_only=False)
        if state["identity"] == identity:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optim"])
            if graphed:  # loading put a saved lr in the group; the graph reads lr_t
                for group in opt.param_groups:
                    group["lr"] = lr_t
            step, rows, elapsed = state["step"], state["rows"], state["elapsed"]
            echo(f"{label} resumed from checkpoint at step {step}/{spec.steps}")
        else:
            echo(f"{label} checkpoint {checkpoint} is for another spec; starting over")

    def evaluate(at: int, losses: torch.Tensor | None) -> None:
        bits = sequence_nll_bits(model, eval_t, max(256, spec.batch), amp)  # (M, m)
        mem = (ref_bits - bits).clamp(min=0).sum(1) * eval_scale
        for m in range(M):
            rows.append({"seed": seeds[m], "step": at, "lr": lr_at(spec, max(at - 1, 0)),
                         "train_loss": float("nan") if losses is None else float(losses[m]),
                         "eval_nll_bits": float(bits[m].mean()), "mem_bits": float(mem[m]),
                         "elapsed_s": elapsed + time.perf_counter() - t0})

    def check_finite(losses: torch.Tensor, at: int) -> None:
        if not torch.isfinite(losses).all():
            bad = [seeds[m] for m in range(M) if not math.isfinite(float(losses[m]))]
            checkpoint.unlink(missing_ok=True)
            raise NonFiniteLossError(
                f"{label} training loss became non-finite at step {at} for seed(s) {bad} "
                f"(lr {lr_at(spec, at):.3g}); lower train.lr or raise train.warmup_frac. "
                "No outputs were written.")

    def save_checkpoint() -> None:
        with atomic_path(checkpoint) as tmp:
            torch.save({"identity": identity, "model": model.state_dict(),
                        "optim": opt.state_dict(), "step": step, "rows": rows,
                        "elapsed": elapsed + time.perf_counter() - t0}, tmp)

    loss_fn = training_loss(model, torch_device, dtype, compile_model)
    t0 = time.perf_counter()
    stopped_at = None
    if step == 0:
        evaluate(0, None)
    model.train()
    graph_step = (GraphStep(loss_fn, model, opt, data_t, spec.batch)
                  if graphed and step < spec.steps else None)
    losses = torch.zeros(M, device=torch_device)
    t_last, tok_last = time.perf_counter(), step
    while step < spec.steps:
        idx = sampler.indices(step)  # (M, B), on the device already
        if graph_step is not None:
            lr_t.fill_(lr_at(spec, step))
            losses = graph_step(idx)
        else:
            for group in opt.param_groups:
                group["lr"] = lr_at(spec, step)
            losses = train_step(loss_fn, opt, data_t, idx)  # (M,) nats per token
        step += 1
        last = step == spec.steps
        if torch_device.type == "cpu" or step % log_every == 0 or last:
            check_finite(losses, step)
        if step % spec.eval_every == 0 or last:
            evaluate(step, losses.cpu())
            if spec.early_stop and not last and saturated_now(rows, seeds, step, spec):
                check_finite(losses, step)
                stopped_at = step
                last = True
        if step % log_every == 0 or last:
            now = time.perf_counter()
            tps = (step - tok_last) * spec.batch * S * M / max(now - t_last, 1e-9)
            t_last, tok_last = now, step
            mem = np.mean([r["mem_bits"] for r in rows[-M:]])
            echo(f"{label} step {step}/{spec.steps} loss {float(losses.mean()):.4f} "
                 f"mem {mem:,.0f}/{spec.memorizable_bits:,.0f} bits "
                 f"({mem / spec.params:.2f} bits/param) tok/s {tps:,.0f}"
                 + (" — saturated, stopping early" if stopped_at else ""))
        if last:
            break
        if step % checkpoint_every == 0:
            save_checkpoint()
    elapsed += time.perf_counter() - t0

    log_df = pl.DataFrame(rows, schema_overrides={"step": pl.Int64, "seed": pl.Int64})
    records = []
    for seed in seeds:
        seed_log = log_df.filter(pl.col("seed") == seed)
        sat, growth = saturation(seed_log, spec.steps, spec.saturation_window,
                                 spec.saturation_growth, end_step=step)
        final = seed_log.sort("step").row(-1, named=True)
        records.append({
            **asdict(spec), "seed": seed, "params": spec.params, "saturated": sat,
            "mem_growth_last_window": growth, "final_train_loss": final["train_loss"],
            "final_mem_bits_estimate": final["mem_bits"], "device": torch_device.type,
            "compute_dtype": dtype, "cuda_graph": graphed, "compiled": compile_model,
            "train_seconds": elapsed,
            "steps_run": step, "stopped_early": stopped_at is not None,
            "compute_saved_frac": 1 - step / spec.steps if spec.steps else 0.0,
            "tokens_per_model": step * spec.batch * S,
        })
    # write everything only now, so a failure above leaves no output for any seed
    for m, out in enumerate(out_dirs):
        out = Path(out)
        with atomic_path(out / "model.safetensors") as tmp:
            save_file(unpack_state(model, m), str(tmp))
        with atomic_path(out / "train_log.parquet") as tmp:
            log_df.filter(pl.col("seed") == seeds[m]).write_parquet(tmp)
        write_json(out / "run.json", records[m])
    checkpoint.unlink(missing_ok=True)
    return records
