"""Samples and their per-sample tables, shared by the text stage, scoring, evaluation and the
audit: S-token samples cut from tokenized documents, exact deduplication, the per-sample score
frame (the columns of every scores.parquet), memorization totals and the most memorized samples.

Torch-free and duckdb-free.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl

from memcap.metrics import zlib_bits

SAMPLINGS = ("first", "windows")


def cut_samples(doc_tokens: list[list[int]], seq_len: int, sampling: str
                ) -> tuple[np.ndarray, np.ndarray]:
    """S-token samples of each document: the first S tokens (the paper's way; shorter
    documents give none) or every consecutive, non-overlapping S-token window.
    Returns (document index per sample (K,), tokens (K, S))."""
    if sampling not in SAMPLINGS:
        raise ValueError(f"text.sampling must be one of {SAMPLINGS}, got {sampling!r}")
    doc_index, rows = [], []
    for i, toks in enumerate(doc_tokens):
        count = len(toks) // seq_len
        if sampling == "first":
            count = min(count, 1)
        if count:
            rows.append(np.asarray(toks[:count * seq_len], dtype=np.int64).reshape(count,
                                                                                  seq_len))
            doc_index += [i] * count
    tokens = np.concatenate(rows) if rows else np.zeros((0, seq_len), dtype=np.int64)
    return np.asarray(doc_index, dtype=np.int64), tokens


def dedup_mask(tokens: np.ndarray, is_heldout: np.ndarray) -> np.ndarray:
    """Exact deduplication: keep the first copy of every token sequence within a split, and
    drop a held-out sample whose sequence also occurs in the train pool (it would be a
    member in disguise). Returns a keep mask."""
    keys = [row.tobytes() for row in np.ascontiguousarray(tokens)]
    keep = np.zeros(len(keys), dtype=bool)
    train_seen: set[bytes] = set()
    for i in np.flatnonzero(~is_heldout):
        if keys[i] not in train_seen:
            train_seen.add(keys[i])
            keep[i] = True
    held_seen: set[bytes] = set()
    for i in np.flatnonzero(is_heldout):
        if keys[i] not in train_seen and keys[i] not in held_seen:
            held_seen.add(keys[i])
            keep[i] = True
    return keep


def scores_frame(run: str, sample_ids: np.ndarray, member: bool, nll_bits: np.ndarray,
                 ref_nll_bits: np.ndarray | None, tfidf: np.ndarray | None = None,
                 reference: str = "uniform", primary: bool = True,
                 min_k_bits: np.ndarray | None = None,
                 stratum: pl.Series | None = None) -> pl.DataFrame:
    """One run's per-sample scores of one split against one reference (the columns of
    scores.parquet). Without a reference (ref_nll_bits None, reference "none"), the reference
    code length and mem_bits are null; without min_k_bits or strata, those columns."""
    k = len(sample_ids)

    def column(values: np.ndarray | pl.Series | None,
               dtype: pl.DataType = pl.Float64) -> pl.Series:
        return (pl.Series(values, dtype=dtype) if values is not None
                else pl.repeat(None, k, dtype=dtype, eager=True))

    return pl.DataFrame({  # constant columns by pl.repeat: no Python list of N items
        "run_id": pl.repeat(run, k, dtype=pl.String, eager=True),
        "sample_id": pl.Series(sample_ids, dtype=pl.Int64),
        "member": pl.repeat(member, k, dtype=pl.Boolean, eager=True),
        "reference": pl.repeat(reference, k, dtype=pl.String, eager=True),
        "primary_reference": pl.repeat(primary, k, dtype=pl.Boolean, eager=True),
        "nll_bits": pl.Series(nll_bits, dtype=pl.Float64),
        "ref_nll_bits": column(ref_nll_bits),
        "tfidf": column(tfidf),
        "min_k_bits": column(min_k_bits),
        "stratum": column(stratum, pl.String),
    }).with_columns(mem_bits=(pl.col("ref_nll_bits") - pl.col("nll_bits")).clip(lower_bound=0.0))


def memorization_totals(frame: pl.DataFrame) -> dict[str, float]:
    """Memorization of a model's members against one reference (docs/science.md#memorization)
    and what the estimator credits to its non-members (docs/science.md#audit):

    mem_bits, mem_bits_unclamped, dataset_bits  Σ over members
    floor_bits_per_sample   mean mem(x) over non-members: bits the estimator credits to
                            samples the model never saw (null without non-members)
    excess_bits             mem_bits − members · floor_bits_per_sample: the memorization
                            beyond what a sample the model never saw gets
    excess_bits_se          its standard error, members · √(var_m/m + var_n/n)
    """
    members, others = frame.filter(pl.col("member")), frame.filter(~pl.col("member"))
    m, n = members.height, others.height
    mem = float(members["mem_bits"].sum())
    floor = float(others["mem_bits"].mean()) if n else None
    spread = ((members["mem_bits"].var() or 0.0) / m if m > 1 else 0.0) + (
        (others["mem_bits"].var() or 0.0) / n if n > 1 else 0.0)
    return {"mem_bits": mem,
            "mem_bits_unclamped": float((members["ref_nll_bits"] - members["nll_bits"]).sum()),
            "dataset_bits": float(members["ref_nll_bits"].sum()),
            "floor_bits_per_sample": floor,
            "excess_bits": None if floor is None else mem - m * floor,
            "excess_bits_se": None if floor is None else m * float(np.sqrt(spread))}


def top_samples(scores: pl.DataFrame, train_path: Path, k: int = 20,
                decode: Callable[[list[int]], str] | None = None) -> pl.DataFrame:
    """The k training samples with the most memorized bits: token ids (read from the training
    file for those k samples only), and the decoded text when a tokenizer's `decode` is given
    (text runs)."""
    top = scores.filter(pl.col("member")).sort("mem_bits", descending=True).head(k)
    wanted = pl.col("sample_id").is_in(top["sample_id"].to_list())
    picked = pl.scan_parquet(train_path).filter(wanted).select("sample_id", "tokens").collect()
    row_of = dict(zip(picked["sample_id"].to_list(), picked["tokens"].to_numpy(), strict=True))
    rows = [row_of[int(s)] for s in top["sample_id"]]
    return (top.select("run_id", "sample_id", "mem_bits", "nll_bits", "ref_nll_bits", "tfidf")
            .with_columns(rank=pl.int_range(1, top.height + 1),
                          tokens=pl.Series([" ".join(map(str, r)) for r in rows],
                                           dtype=pl.String),
                          text=pl.Series([decode(r.tolist()) if decode else None for r in rows],
                                         dtype=pl.String)))


def sample_bytes(tokens: np.ndarray, decode: Callable[[list[int]], str] | None) -> bytes:
    """What the zlib attack compresses: the decoded text (UTF-8) of a text sample, the token
    ids as bytes (one byte each where they fit) of a synthetic one."""
    if decode is not None:
        return decode(tokens.tolist()).encode("utf-8")
    return tokens.astype(np.uint8 if tokens.max(initial=0) < 256 else np.uint16).tobytes()


def with_zlib_bits(frame: pl.DataFrame, data_path: Path,
                   decode: Callable[[list[int]], str] | None) -> pl.DataFrame:
    """`frame` (rows of one data file's samples) with zlib_bits: each sample's compressed size,
    read from the file for those samples only."""
    wanted = pl.col("sample_id").is_in(frame["sample_id"].to_list())
    picked = pl.scan_parquet(data_path).filter(wanted).select("sample_id", "tokens").collect()
    sizes = pl.DataFrame({"sample_id": picked["sample_id"],
                          "zlib_bits": [zlib_bits(sample_bytes(t, decode))
                                        for t in picked["tokens"].to_numpy()]})
    return frame.join(sizes, on="sample_id", how="left")
