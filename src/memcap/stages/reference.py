"""The reference stage (text, docs/science.md#references): each reference scores the whole pool
once.

  same-arch  the run of the same architecture and precision trained on the largest text
             dataset of the experiment (the paper: equal parameter count, the entire dataset)
  oracle     the text run with the lowest held-out loss (or the run the config names; the
             record then says whether it really has the lowest held-out loss)

A reference's score file holds nll(x | θ) in bits for every train-pool and held-out sample of
the pool, keyed by sample_id, so every run's samples find their reference code length.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import torch

from memcap import device as dev
from memcap.cell import Runtime, TrainSpec, spec_from_record
from memcap.io import atomic_path, read_json, write_json
from memcap.loss import sequence_nll_bits
from memcap.models import load_packed
from memcap.quantities import nats_per_token
from memcap.tokens import read_pool, read_tokens


def run_record(run_dir: Path) -> tuple[dict, TrainSpec]:
    """A run's record (run.json) and the training spec it recorded."""
    record = read_json(Path(run_dir) / "run.json")
    return record, spec_from_record(record)


def _bits(spec: TrainSpec, model_path: Path, tokens: np.ndarray, device: torch.device,
          runtime: Runtime) -> np.ndarray:
    dtype = dev.configure(device, spec.precision, runtime.threads)
    model = load_packed(spec.shape, [model_path], device)
    toks = dev.to_device_tokens(tokens[None], device)
    return sequence_nll_bits(model, toks, runtime.score_batch_size,
                             dev.autocast(device, dtype))[0].cpu().numpy()


def score_reference(run_dir: Path, pool_path: Path, out_path: Path, reference: str,
                    runtime: Runtime) -> dict:
    """nll(x | reference) of every pool sample -> out_path (sample_id, split, nll_bits);
    returns the reference's record."""
    torch_device = dev.resolve_device(runtime.device)
    run, spec = run_record(run_dir)
    run_id = run["run_id"]
    pool = read_pool(pool_path)
    tokens = pool["tokens"].to_numpy()
    if tokens.shape[1] != spec.seq_len:
        raise ValueError(f"pool {pool_path} has {tokens.shape[1]}-token samples; the reference "
                         f"run {run_id} was trained on {spec.seq_len}")
    bits = _bits(spec, Path(run_dir) / "model.safetensors", tokens, torch_device, runtime)
    frame = pl.DataFrame({"sample_id": pool["sample_id"], "split": pool["split"],
                          "nll_bits": pl.Series(bits, dtype=pl.Float64)})
    with atomic_path(out_path) as tmp:
        frame.write_parquet(tmp)
    held = frame.filter(pl.col("split") == "heldout")["nll_bits"]
    return {"reference": reference, "run_id": run_id, "arch": run["arch"],
            "precision": spec.precision, "vocab_size": spec.vocab_size,
            "samples": frame.height,
            "heldout_loss": nats_per_token(float(held.mean()), spec.seq_len)
            if held.len() else None}


def heldout_losses(run_dirs: list[Path], heldout_path: Path, runtime: Runtime) -> pl.DataFrame:
    """Held-out loss (nats per predicted token) of every run on one held-out set."""
    torch_device = dev.resolve_device(runtime.device)
    _, tokens = read_tokens(heldout_path)
    rows = []
    for run_dir in run_dirs:
        run, spec = run_record(run_dir)
        bits = _bits(spec, Path(run_dir) / "model.safetensors", tokens, torch_device, runtime)
        rows.append({"run_id": run["run_id"], "run_dir": str(run_dir), "params": spec.params,
                     "heldout_loss": nats_per_token(float(bits.mean()), spec.seq_len)})
    return pl.DataFrame(rows).sort("heldout_loss", "params", "run_id")


def choose_oracle(losses: pl.DataFrame, named: str | None) -> tuple[dict, dict]:
    """(chosen row, record): the lowest held-out loss, or the named run (a run_id suffix such
    as 'L8-d64:fp32:n4096:s0'), with whether the named run is the lowest."""
    lowest = losses.row(0, named=True)
    if not named:
        return lowest, {"named": None, "chosen": lowest["run_id"],
                        "lowest": lowest["run_id"], "chosen_is_lowest": True}
    match = losses.filter(pl.col("run_id").str.ends_with(":" + named))
    if match.height != 1:
        raise ValueError(f"config key 'text.oracle': {named!r} matches {match.height} text runs; "
                         f"known runs: {losses['run_id'].to_list()[:8]}…")
    chosen = match.row(0, named=True)
    return chosen, {"named": named, "chosen": chosen["run_id"], "lowest": lowest["run_id"],
                    "chosen_is_lowest": chosen["run_id"] == lowest["run_id"],
                    "heldout_loss_gap": chosen["heldout_loss"] - lowest["heldout_loss"]}


def same_arch_reference(run_dir: Path, pool_path: Path, out_path: Path, record_path: Path,
                        runtime: Runtime) -> dict:
    """Score the pool with the same-arch reference run; write its record."""
    record = score_reference(run_dir, pool_path, out_path, "same-arch", runtime)
    write_json(record_path, record)
    return record


def oracle_reference(run_dirs: list[Path], heldout_path: Path, pool_path: Path, out_path: Path,
                     record_path: Path, named: str | None, runtime: Runtime) -> dict:
    """Pick the oracle among the text runs and score the pool with it."""
    losses = heldout_losses(run_dirs, heldout_path, runtime)
    chosen, record = choose_oracle(losses, named)
    scored = score_reference(Path(chosen["run_dir"]), pool_path, out_path, "oracle", runtime)
    record = {**record, **scored,
              "candidates": losses.drop("run_dir").to_dicts()}
    write_json(record_path, record)
    return record
