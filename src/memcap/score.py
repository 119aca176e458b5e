"""Scoring: per-sample code lengths and unintended memorization for every run of a cell.

For each seed, writes `scores.parquet`, one row per (sample, reference) for every training
sample and every held-out sample of the run:

  run_id            str      the run (memcap.aggregate.run_id)
  sample_id         int64    the dataset's id (held-out ids are offset, see memcap.data)
  member            bool     True for training samples
  reference         str      the reference θ: "uniform" (synthetic), "same-arch" or "oracle"
  primary_reference bool     True for the reference memcap's headline numbers use
  nll_bits          float64  nll(x | θ̂): code length under the trained model, bits
  ref_nll_bits      float64  nll(x | θ): code length under the reference, bits
  mem_bits          float64  max(0, ref_nll_bits − nll_bits)
  tfidf             float64  TF-IDF of a training sample in its training set (null: held out)

and `score.json` with the run's totals per reference and its losses (nats per predicted
token). Synthetic data: the reference is the true distribution, (S−1)·log2 V bits for every
sample. Text: the references are models (memcap.reference), whose code lengths of the whole
pool are read from their score files.
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


PRIMARY = {"synthetic": "uniform", "text": "same-arch"}


def scores_frame(run: str, sample_ids: np.ndarray, member: bool, nll_bits: np.ndarray,
                 ref_nll_bits: np.ndarray, tfidf: np.ndarray | None = None,
                 reference: str = "uniform", primary: bool = True) -> pl.DataFrame:
    k = len(sample_ids)
    return pl.DataFrame({
        "run_id": pl.Series([run] * k, dtype=pl.String),
        "sample_id": pl.Series(sample_ids, dtype=pl.Int64),
        "member": pl.Series([member] * k, dtype=pl.Boolean),
        "reference": pl.Series([reference] * k, dtype=pl.String),
        "primary_reference": pl.Series([primary] * k, dtype=pl.Boolean),
        "nll_bits": pl.Series(nll_bits, dtype=pl.Float64),
        "ref_nll_bits": pl.Series(ref_nll_bits, dtype=pl.Float64),
        "tfidf": pl.Series(tfidf if tfidf is not None else [None] * len(sample_ids),
                           dtype=pl.Float64),
    }).with_columns(mem_bits=(pl.col("ref_nll_bits") - pl.col("nll_bits")).clip(lower_bound=0.0))


def read_reference(path: Path) -> dict[int, float]:
    """sample_id -> nll_bits from a reference's score file (memcap.reference)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"reference scores {path} do not exist")
    df = pl.read_parquet(path, columns=["sample_id", "nll_bits"])
    return dict(zip(df["sample_id"].to_list(), df["nll_bits"].to_list(), strict=True))


def reference_lookup(ref: dict[int, float], ids: np.ndarray, path: Path) -> np.ndarray:
    missing = [int(i) for i in ids if int(i) not in ref]
    if missing:
        raise ValueError(f"reference scores {path} lack {len(missing)} sample(s) of the run, "
                         f"e.g. sample_id {missing[0]}: the reference scored another pool")
    return np.array([ref[int(i)] for i in ids])


def memorization_totals(frame: pl.DataFrame) -> dict[str, float]:
    members = frame.filter(pl.col("member"))
    return {"mem_bits": float(members["mem_bits"].sum()),
            "mem_bits_unclamped": float((members["ref_nll_bits"] - members["nll_bits"]).sum()),
            "dataset_bits": float(members["ref_nll_bits"].sum())}


def score_cell(spec: TrainSpec, seeds: list[int], model_paths: list[Path],
               train_paths: list[Path], heldout_paths: list[Path], out_dirs: list[Path],
               run_ids: list[str], device: str = "auto", threads: int = 1,
               batch_size: int = 512, references: dict[str, Path] | None = None,
               kind: str = "synthetic") -> list[dict]:
    """Score each seed's model on its training set and its held-out set, against the uniform
    reference (synthetic; `references` None) or each named reference model's scores (text)."""
    torch_device = dev.resolve_device(device)
    dtype = dev.configure(torch_device, spec.precision, threads)
    model = load_packed(spec, model_paths, torch_device)
    amp = dev.autocast(torch_device, dtype)
    S = spec.seq_len
    if references is None:
        ref_tables = None
    else:
        if PRIMARY[kind] not in references:
            raise ValueError(f"{kind} scoring needs the {PRIMARY[kind]!r} reference, got "
                             f"{sorted(references)}")
        ref_tables = {name: read_reference(p) for name, p in references.items()}

    def load(paths: list[Path]) -> tuple[list[np.ndarray], np.ndarray]:
        ids, toks = zip(*(read_tokens(p) for p in paths), strict=True)
        return list(ids), np.stack(toks)

    train_ids, train_np = load(train_paths)
    held_ids, held_np = load(heldout_paths)
    train_t = torch.from_numpy(train_np).to(torch_device)
    held_t = torch.from_numpy(held_np).to(torch_device)
    train_bits = sequence_nll_bits(model, train_t, batch_size, amp).cpu().numpy()
    held_bits = sequence_nll_bits(model, held_t, batch_size, amp).cpu().numpy()

    def ref_bits(name: str | None, ids: np.ndarray) -> np.ndarray:
        if name is None:
            return np.full(len(ids), uniform_reference_bits(S, spec.vocab_size))
        return reference_lookup(ref_tables[name], ids, references[name])

    names = [None] if ref_tables is None else sorted(ref_tables, key=lambda r: r != PRIMARY[kind])
    records = []
    for m, seed in enumerate(seeds):
        tf = tfidf(train_np[m], spec.vocab_size)
        parts, totals = [], {}
        for name in names:
            ref = name or "uniform"
            primary = ref == PRIMARY[kind]
            frame = pl.concat([
                scores_frame(run_ids[m], train_ids[m], True, train_bits[m],
                             ref_bits(name, train_ids[m]), tf, ref, primary),
                scores_frame(run_ids[m], held_ids[m], False, held_bits[m],
                             ref_bits(name, held_ids[m]), None, ref, primary),
            ])
            parts.append(frame)
            totals[ref] = memorization_totals(frame)
        primary_ref = PRIMARY[kind]
        record = {
            "seed": seed, **totals[primary_ref], "reference": primary_ref,
            "references": totals,
            "train_loss": float(train_bits[m].mean() * math.log(2) / (S - 1)),
            "heldout_loss": float(held_bits[m].mean() * math.log(2) / (S - 1)),
        }
        out = Path(out_dirs[m])
        with atomic_path(out / "scores.parquet") as tmp:
            pl.concat(parts).write_parquet(tmp)
        write_json(out / "score.json", record)
        records.append(record)
    return records
