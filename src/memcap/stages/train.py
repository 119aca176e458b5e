"""The train stage: all seeds of one cell (memcap.cell.Cell) as one packed model.

Seed s sets both the data (the caller passes seed s's dataset) and the initialisation. The
batch at step t is a pure function of (seed, t) (epoch-wise permutations keyed by the epoch),
so a run resumed from a checkpoint continues exactly as if it had never stopped.

Outputs per seed, in its run folder, all written only after every seed finished:
  model.safetensors   the trained weights of that one model (no model dimension)
  train_log.parquet   periodic evaluations: step, lr, train loss, estimated bits memorized
  run.json            the run record: coordinates, steps, saturation, losses, device, seconds
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch import nn

from memcap import device as dev
from memcap.cell import Cell, Preempted, Runtime, TrainSpec, spec_record
from memcap.io import atomic_path, write_json
from memcap.loss import mean_token_nll, sequence_nll_bits
from memcap.models import PackedLM, build, save_model
from memcap.optim import Optimizers, make_optimizer
from memcap.quantities import uniform_code_bits
from memcap.tokens import read_token_stack


class NonFiniteLossError(RuntimeError):
    pass


def lr_at(spec: TrainSpec, step: int, plateau_at: int | None = None) -> float:
    """Linear warmup to spec.lr, then cosine / linear decay to min_lr_frac·lr (or constant).

    The plateau schedule (docs/science.md#the-plateau-schedule): after the warmup a constant
    rate until `plateau_at` (the step a plateau was declared, None while there is none), then
    a cosine decay to min_lr_frac·lr over decay_steps(spec, plateau_at) steps."""
    warmup = int(spec.warmup_frac * spec.steps)
    if step < warmup:
        return spec.lr * (step + 1) / warmup
    if spec.schedule == "constant" or (spec.schedule == "plateau" and plateau_at is None):
        return spec.lr
    floor = spec.min_lr_frac * spec.lr
    if spec.schedule == "plateau":
        progress = min(1.0, (step - plateau_at) / decay_steps(spec, plateau_at))
        return floor + (spec.lr - floor) * 0.5 * (1 + math.cos(math.pi * max(progress, 0.0)))
    progress = (step - warmup) / max(1, spec.steps - warmup)
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if spec.schedule == "cosine" else 1 - progress
    return floor + (spec.lr - floor) * shape


def decay_steps(spec: TrainSpec, plateau_at: int) -> int:
    """Length of the plateau schedule's decay: decay_frac of the steps run at the constant rate
    (warmup included), at least one, within the cell's step cap."""
    return max(1, min(math.ceil(spec.decay_frac * plateau_at), spec.steps - plateau_at))


def latest_plateau(spec: TrainSpec) -> int:
    """The step at which the plateau schedule starts its decay when no plateau came: the
    decay then ends on the step cap (P + ceil(decay_frac·P) ≤ steps)."""
    p = int(spec.steps / (1 + spec.decay_frac))
    while p > 0 and p + math.ceil(spec.decay_frac * p) > spec.steps:
        p -= 1
    return p


def plateau_reached(log: pl.DataFrame, spec: TrainSpec, step: int) -> bool:
    """The plateau rule (docs/science.md#the-plateau-schedule), for one model's evaluation log
    (step, mem_bits) at an evaluation step: memorization already holds all but plateau_growth
    of the memorizable bits, or, with w = plateau_window·step, its mean over the evaluations
    in (step − w, step] exceeds its mean over (step − 2w, step − w] by less than
    plateau_growth (relative), both windows after the warmup and holding two evaluations
    each. Means over windows, not two single evaluations: at a constant rate memorization
    is noisy from one evaluation to the next."""
    log = log.filter(pl.col("step") <= step).sort("step")
    if log.height == 0 or log["step"][-1] != step:
        return False
    if log["mem_bits"][-1] >= (1 - spec.plateau_growth) * spec.memorizable_bits:
        return True
    w = spec.plateau_window * step
    if step - 2 * w < int(spec.warmup_frac * spec.steps):
        return False
    last = log.filter(pl.col("step") > step - w)["mem_bits"]
    before = log.filter((pl.col("step") > step - 2 * w) & (pl.col("step") <= step - w))["mem_bits"]
    if last.len() < 2 or before.len() < 2 or last.mean() <= 0:
        return False
    return bool((last.mean() - before.mean()) / last.mean() < spec.plateau_growth)


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
    """The saturation rule (docs/science.md#saturation): saturated when memorization grew by
    less than `growth` (relative) over the last `window` of the steps: from the last
    evaluation at or before end_step − window·steps to end_step (default: the end of the run).
    Returns (saturated, relative growth)."""
    end_step = steps if end_step is None else end_step
    log = log.filter(pl.col("step") <= end_step).sort("step")
    if steps == 0 or log.height < 2:
        return False, float("nan")
    end = log["mem_bits"][-1]
    before = log.filter(pl.col("step") <= end_step - window * steps)
    start = before["mem_bits"][-1] if before.height else log["mem_bits"][0]
    rel = (end - start) / end if end > 0 else 0.0
    return bool(rel < growth), float(rel)


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


def train_step(loss: Callable[[torch.Tensor], torch.Tensor],
               opt: torch.optim.Optimizer | Optimizers, data: torch.Tensor,
               idx: torch.Tensor) -> torch.Tensor:
    """One optimizer step on the sequences idx (M, B) of data (M, N, S): gather, loss,
    backward, the optimizer (memcap.optim). Returns the per-model losses (M,), detached."""
    rows = torch.arange(data.shape[0], device=data.device).unsqueeze(1)
    batch = data[rows, idx].long()  # (M, B, S), widened only now
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
                 opt: torch.optim.Optimizer | Optimizers, data: torch.Tensor,
                 batch: int) -> None:
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


def train_cell(cell: Cell, runtime: Runtime, echo: Callable[[str], None] = print) -> list[dict]:
    """Train one packed model per seed of `cell`; write each seed's outputs; return the run
    records.

    runtime.compile: run the training forward pass and loss through torch.compile (an
    execution setting: the same model and loss in fused kernels, which round differently; it
    pays a compile time up front); auto: compile on CUDA, where it pays (benchmarks/gpu.sh),
    not on a CPU. runtime.cuda_graphs: on CUDA, replay each training step as one captured
    CUDA graph (GraphStep; an execution setting too; compiled or not). Never on a CPU."""
    device = dev.resolve_device(runtime.device)
    dtype = dev.configure(device, cell.spec.precision, runtime.threads)
    echo(f"{cell.label}: training seeds {list(cell.seeds)} ({cell.spec.params:,} parameters "
         f"each) for {cell.spec.steps:,} steps on {device.type}")
    training = _Training(cell, runtime, device, dtype, load_data(cell, device), echo)
    training.resume()
    with stop_signals() as stop:
        training.run(stop)
    records = training.records()
    write_outputs(cell, training.model, training.log(), records)
    Path(cell.checkpoint).unlink(missing_ok=True)
    return records


STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


@contextlib.contextmanager
def stop_signals():
    """While training: SIGTERM (a scheduler preempting the job, or its time limit) and SIGUSR1
    (a scheduler's warning, e.g. sbatch --signal=USR1@120) set the returned event instead of
    killing the process, so the loop can checkpoint and exit between two steps. Outside the
    main thread, where Python cannot install handlers, the event never fires."""
    event = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield event
        return
    previous = {sig: signal.signal(sig, lambda signum, _frame: event.set())
                for sig in STOP_SIGNALS}
    try:
        yield event
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def load_data(cell: Cell, device: torch.device) -> torch.Tensor:
    """Every seed's training tokens, checked against the spec, as one (M, N, S) tensor on the
    device in the files' own width (uint16 where V ≤ 65,536: the paper's largest N with 5
    seeds is 5 GiB, not 20 as int64); a batch is widened to int64 after it is picked."""
    spec = cell.spec
    _, toks = read_token_stack(cell.train_data, (spec.n, spec.seq_len))
    for m, path in enumerate(cell.train_data):
        top = int(toks[m].max())
        if top >= spec.vocab_size:
            raise ValueError(f"{path}: token id {top} >= vocab_size {spec.vocab_size}")
    return dev.to_device_tokens(toks, device)


class _Training:
    """The state of one cell's training: model, optimizer, sampler, the evaluation log, the
    step and the time spent (across resumptions)."""

    def __init__(self, cell: Cell, runtime: Runtime, device: torch.device, dtype: str,
                 data: torch.Tensor, echo: Callable[[str], None]) -> None:
        spec, seeds = cell.spec, list(cell.seeds)
        self.cell, self.spec, self.seeds, self.runtime = cell, spec, seeds, runtime
        self.device, self.dtype, self.data, self.echo = device, dtype, data, echo
        self.checkpoint = Path(cell.checkpoint)
        self.amp = dev.autocast(device, dtype)
        self.eval_t = data[:, :spec.eval_samples].long()
        self.eval_scale = spec.n / self.eval_t.shape[1]
        self.model = build(spec.shape, len(seeds))
        self.model.init_weights(seeds)
        self.model.to(device)
        assert self.model.params_per_model() == spec.params
        self.graphed = device.type == "cuda" and runtime.cuda_graphs
        compile_model = runtime.compile_model
        self.compiled = device.type == "cuda" if compile_model is None else compile_model
        # a captured step reads the learning rate from a device tensor refilled each step
        self.lr_t = torch.tensor(spec.lr, device=device) if self.graphed else None
        self.opt = make_optimizer(self.model, spec, self.lr_t if self.graphed else spec.lr,
                                  capturable=self.graphed)
        self.sampler = EpochSampler(seeds, spec.n, spec.batch, device)
        self.identity = {"spec": spec_record(spec), "seeds": seeds}
        self.rows: list[dict] = []
        self.step, self.elapsed, self.t0 = 0, 0.0, time.perf_counter()
        # the plateau schedule's state: where its decay starts (None: not yet), whether the
        # plateau rule declared it (False: the step cap forced it), where the run ends
        self.plateau_at: int | None = None
        self.plateau_by_rule = False
        self.end = spec.steps
        self.latest_plateau = latest_plateau(spec)

    def seconds(self) -> float:
        return self.elapsed + time.perf_counter() - self.t0

    def resume(self) -> None:
        """Continue from the cell's checkpoint when it was written for this very spec."""
        if not self.checkpoint.exists():
            return
        state = torch.load(self.checkpoint, map_location=self.device, weights_only=False)
        if state["identity"] != self.identity:
            self.echo(f"{self.cell.label} checkpoint {self.checkpoint} is for another spec; "
                      "starting over")
            return
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optim"])
        if self.graphed:  # loading put a saved lr in the group; the graph reads lr_t
            for group in self.opt.param_groups:
                group["lr"] = self.lr_t
        self.step, self.rows, self.elapsed = state["step"], state["rows"], state["elapsed"]
        if state.get("plateau_at") is not None:
            self.start_decay(state["plateau_at"], state["plateau_by_rule"])
        self.echo(f"{self.cell.label} resumed from checkpoint at step {self.step}/"
                  f"{self.spec.steps}")

    def evaluate(self, at: int, losses: torch.Tensor | None) -> None:
        """Estimated bits memorized (from eval_samples training sequences, scaled to N)."""
        spec = self.spec
        bits = sequence_nll_bits(self.model, self.eval_t, max(256, spec.batch), self.amp)
        ref = uniform_code_bits(spec.seq_len, spec.vocab_size)
        mem = (ref - bits).clamp(min=0).sum(1) * self.eval_scale  # (M,)
        for m, seed in enumerate(self.seeds):
            self.rows.append({
                "seed": seed, "step": at, "lr": lr_at(spec, max(at - 1, 0), self.plateau_at),
                "train_loss": float("nan") if losses is None else float(losses[m]),
                "eval_nll_bits": float(bits[m].mean()), "mem_bits": float(mem[m]),
                "elapsed_s": self.seconds()})

    def check_finite(self, losses: torch.Tensor, at: int) -> None:
        if not torch.isfinite(losses).all():
            bad = [s for m, s in enumerate(self.seeds) if not math.isfinite(float(losses[m]))]
            self.checkpoint.unlink(missing_ok=True)
            raise NonFiniteLossError(
                f"{self.cell.label} training loss became non-finite at step {at} for seed(s) "
                f"{bad} (lr {lr_at(self.spec, at, self.plateau_at):.3g}); lower train.lr or raise "
                "train.warmup_frac. No outputs were written.")

    def save_checkpoint(self) -> None:
        with atomic_path(self.checkpoint) as tmp:
            torch.save({"identity": self.identity, "model": self.model.state_dict(),
                        "optim": self.opt.state_dict(), "step": self.step, "rows": self.rows,
                        "elapsed": self.seconds(), "plateau_at": self.plateau_at,
                        "plateau_by_rule": self.plateau_by_rule}, tmp)

    def start_decay(self, at: int, by_rule: bool) -> None:
        """The plateau schedule: decay from step `at` on; the run ends after the decay."""
        self.plateau_at, self.plateau_by_rule = at, by_rule
        self.end = at + decay_steps(self.spec, at)

    def check_plateau(self, step: int) -> None:
        """Declare the plateau at an evaluation step when every seed passes the plateau rule
        (the cell's seeds share one schedule: the slowest decides), or force the decay where
        it must start to end on the step cap."""
        if self.spec.schedule != "plateau" or self.plateau_at is not None:
            return
        if step >= self.latest_plateau:
            self.start_decay(step, False)
        elif step % self.spec.eval_every == 0:
            log = self.log()
            if all(plateau_reached(log.filter(pl.col("seed") == s), self.spec, step)
                   for s in self.seeds):
                self.start_decay(step, True)

    def run(self, stop: threading.Event | None = None) -> None:
        """The training loop, from the current step to the end (of the steps, or of the
        plateau schedule's decay). A checkpoint every runtime.checkpoint_every steps or
        runtime.checkpoint_minutes, whichever comes first; when `stop` is set (a signal), a
        checkpoint at once, then Preempted."""
        spec, rt = self.spec, self.runtime
        stop = stop or threading.Event()
        every_s, saved_at = rt.checkpoint_minutes * 60, time.perf_counter()
        loss_fn = training_loss(self.model, self.device, self.dtype, self.compiled)
        self.t0 = time.perf_counter()
        if self.step == 0:
            self.evaluate(0, None)
        self.check_plateau(self.step)
        self.model.train()
        graph_step = (GraphStep(loss_fn, self.model, self.opt, self.data, spec.batch)
                      if self.graphed and self.step < self.end else None)
        losses = torch.zeros(len(self.seeds), device=self.device)
        t_last, step_last = time.perf_counter(), self.step
        while self.step < self.end:
            idx = self.sampler.indices(self.step)  # (M, B), on the device already
            lr = lr_at(spec, self.step, self.plateau_at)
            if graph_step is not None:
                self.lr_t.fill_(lr)
                losses = graph_step(idx)
            else:
                for group in self.opt.param_groups:
                    group["lr"] = lr
                losses = train_step(loss_fn, self.opt, self.data, idx)  # (M,) nats per token
            self.step += 1
            step = self.step
            last = step == self.end
            if self.device.type == "cpu" or step % rt.log_every == 0 or last:
                self.check_finite(losses, step)
            if step % spec.eval_every == 0 or last:
                self.evaluate(step, losses.cpu())
            if not last:
                self.check_plateau(step)
            if step % rt.log_every == 0 or last:
                now = time.perf_counter()
                tps = ((step - step_last) * spec.batch * spec.seq_len * len(self.seeds)
                       / max(now - t_last, 1e-9))
                t_last, step_last = now, step
                self.progress(losses, tps)
            if last:
                break
            if (step % rt.checkpoint_every == 0 or stop.is_set()
                    or time.perf_counter() - saved_at >= every_s):
                self.save_checkpoint()
                saved_at = time.perf_counter()
            if stop.is_set():
                raise Preempted(f"{self.cell.label} stopped by a signal at step {step}/"
                                f"{self.end}; checkpoint {self.checkpoint} saved, a rerun "
                                "resumes from it")
        self.elapsed = self.seconds()

    def progress(self, losses: torch.Tensor, tokens_per_s: float) -> None:
        spec = self.spec
        mem = np.mean([r["mem_bits"] for r in self.rows[-len(self.seeds):]])
        phase = ("" if self.plateau_at is None else
                 f" decaying since step {self.plateau_at} ("
                 + ("plateau" if self.plateau_by_rule else "step cap") + ")")
        self.echo(f"step {self.step}/{self.end} loss "
                  f"{float(losses.mean()):.4f} mem {mem:,.0f}/{spec.memorizable_bits:,.0f} "
                  f"bits ({mem / spec.params:.2f} bits/param) tok/s {tokens_per_s:,.0f}"
                  + phase)

    def log(self) -> pl.DataFrame:
        return pl.DataFrame(self.rows, schema_overrides={"step": pl.Int64, "seed": pl.Int64})

    def records(self) -> list[dict]:
        """The run record of every seed (run.json). Under the plateau schedule a run is
        saturated when the plateau rule declared its plateau (not the step cap); otherwise
        by the saturation rule over its last window of steps."""
        spec, step, log = self.spec, self.step, self.log()
        plateau = spec.schedule == "plateau"
        records = []
        for seed in self.seeds:
            seed_log = log.filter(pl.col("seed") == seed).sort("step")
            sat, growth = saturation(seed_log, spec.steps, spec.saturation_window,
                                     spec.saturation_growth, end_step=step)
            final = seed_log.row(-1, named=True)
            at_plateau = (None if self.plateau_at is None else
                          seed_log.filter(pl.col("step") <= self.plateau_at)["mem_bits"][-1])
            records.append({
                **self.cell.identity(seed), "saturated": self.plateau_by_rule if plateau else sat,
                "mem_growth_last_window": growth, "final_train_loss": final["train_loss"],
                "final_mem_bits_estimate": final["mem_bits"], "device": self.device.type,
                "compute_dtype": self.dtype, "cuda_graph": self.graphed,
                "compiled": self.compiled, "train_seconds": self.elapsed,
                "steps_run": step, "schedule": spec.schedule,
                "plateau_step": self.plateau_at,
                "plateau_by_rule": self.plateau_by_rule if plateau else None,
                "decay_steps": None if self.plateau_at is None else step - self.plateau_at,
                "plateau_mem_bits_estimate": at_plateau,
                "decay_gain_bits_estimate": (None if at_plateau is None
                                             else final["mem_bits"] - at_plateau),
                "compute_saved_frac": 1 - step / spec.steps if spec.steps else 0.0,
                "tokens_per_model": step * spec.batch * spec.seq_len,
            })
        return records


def write_outputs(cell: Cell, model: PackedLM, log: pl.DataFrame, records: list[dict]) -> None:
    """Each seed's weights, training log and run record, written only after every seed
    finished, so a failure leaves no output for any seed."""
    for m, (seed, out) in enumerate(zip(cell.seeds, map(Path, cell.run_dirs), strict=True)):
        with atomic_path(out / "model.safetensors") as tmp:
            save_model(model, m, tmp)
        with atomic_path(out / "train_log.parquet") as tmp:
            log.filter(pl.col("seed") == seed).write_parquet(tmp)
        write_json(out / "run.json", records[m])
