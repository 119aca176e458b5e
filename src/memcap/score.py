"""Scoring: per-sample code lengths and unintended memorization for every run of a cell.

For each seed, writes `scores.parquet` (one row per training sample and per held-out sample):

  run_id        str      the run (memcap.aggregate.run_id)
  sample_id     int64    the dataset's id (held-out ids are offset, see memcap.data)
  member        bool     True for training samples
  nll_bits      float64  nll(x | θ̂): code length under the trained model, bits
  ref_nll_bits  float64  nll(x | θ): code length under the reference, bits
  mem_bits      float64  max(0, ref_nll_bits − nll_bits)
  tfidf         float64  TF-IDF of a training sample within its training set (null when held out)

and `score.json` with the run's totals and losses (losses in nats per predicted token).
For synthetic data the reference is the true distribution: (S−1)·log2 V bits for every sample.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import torch

from memcap import device as dev
from memcap.data import read_tokens
from memcap.evaluate import tfidf
from memcap.io import atomic_path, write_json
from memcap.model import sequence_nll_bits
from memcap.train import TrainSpec, load_packed


def uniform_reference_bits(seq_len: int, vocab_size: int) -> float:
    """nll(x | uniform) for any x: (S−1)·log2 V."""
    return (seq_len - 1) * math.log2(vocab_size)


def scores_frame(run: str, sample_ids: np.ndarray, member: bool, nll_bits: np.ndarray,
                 ref_nll_bits: np.ndarray, tfidf: np.ndarray | None = None) -> pl.DataFrame:
    return pl.DataFrame({
        "run_id": pl.Series([run] * len(sample_ids), dtype=pl.String),
        "sample_id": pl.Series(sample_ids, dtype=pl.Int64),
        "member": pl.Series([member] * len(sample_ids), dtype=pl.Boolean),
        "nll_bits": pl.Series(nll_bits, dtype=pl.Float64),
        "ref_nll_bits": pl.Series(ref_nll_bits, dtype=pl.Float64),
        "tfidf": pl.Series(tfidf if tfidf is not None else [None] * len(sample_ids),
                           dtype=pl.Float64),
    }).with_columns(mem_bits=(pl.col("ref_nll_bits") - pl.col("nll_bits")).clip(lower_bound=0.0))


def score_cell(spec: TrainSpec, seeds: list[int], model_paths: list[Path],
               train_paths: list[Path], heldout_paths: list[Path], out_dirs: list[Path],
               run_ids: list[str], device: str = "auto", threads: int = 1,
               batch_size: int = 512) -> list[dict]:
    """Score each seed's model on its training set and its held-out set."""
    torch_device = dev.resolve_device(device)
    dtype = dev.configure(torch_device, spec.precision, threads)
    model = load_packed(spec, model_paths, torch_device)
    amp = dev.autocast(torch_device, dtype)
    S = spec.seq_len
    ref = uniform_reference_bits(S, spec.vocab_size)

    def load(paths: list[Path]) -> tuple[list[np.ndarray], np.ndarray]:
        ids, toks = zip(*(read_tokens(p) for p in paths), strict=True)
        return list(ids), np.stack(toks)

    train_ids, train_np = load(train_paths)
    held_ids, held_np = load(heldout_paths)
    train_t = torch.from_numpy(train_np).to(torch_device)
    held_t = torch.from_numpy(held_np).to(torch_device)
    train_bits = sequence_nll_bits(model, train_t, batch_size, amp).cpu().numpy()
    held_bits = sequence_nll_bits(model, held_t, batch_size, amp).cpu().numpy()

    records = []
    for m, seed in enumerate(seeds):
        frame = pl.concat([
            scores_frame(run_ids[m], train_ids[m], True, train_bits[m], np.full(spec.n, ref),
                         tfidf(train_np[m], spec.vocab_size)),
            scores_frame(run_ids[m], held_ids[m], False, held_bits[m],
                         np.full(len(held_ids[m]), ref)),
        ])
        members = frame.filter(pl.col("member"))
        record = {
            "seed": seed,
            "mem_bits": float(members["mem_bits"].sum()),
            "mem_bits_unclamped": float((members["ref_nll_bits"] - members["nll_bits"]).sum()),
            "dataset_bits": float(members["ref_nll_bits"].sum()),
            "train_loss": float(train_bits[m].mean() * math.log(2) / (S - 1)),
            "heldout_loss": float(held_bits[m].mean() * math.log(2) / (S - 1)),
            "reference": "uniform",
        }
        out = Path(out_dirs[m])
        with atomic_path(out / "scores.parquet") as tmp:
            frame.write_parquet(tmp)
        write_json(out / "score.json", record)
        records.append(record)
    return records
