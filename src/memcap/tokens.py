"""Dataset files: the on-disk format every stage reads and writes.

A dataset is Parquet with two columns: `sample_id` (int64) and `tokens` (Array[UInt16 or UInt32,
S]). Train samples have sample_id = i; held-out samples have sample_id = HELDOUT_ID_OFFSET + i,
so ids never collide inside a scored run. A text pool adds split, corpus and doc_id.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

HELDOUT_ID_OFFSET = 1 << 40


def _token_dtype(vocab_size: int) -> pl.DataType:
    return pl.UInt16 if vocab_size <= 1 << 16 else pl.UInt32


def tokens_frame(sample_ids: np.ndarray, tokens: np.ndarray, vocab_size: int) -> pl.DataFrame:
    dtype = _token_dtype(vocab_size)
    return pl.DataFrame({
        "sample_id": pl.Series(sample_ids, dtype=pl.Int64),
        "tokens": pl.Series(tokens).cast(pl.Array(dtype, tokens.shape[1])),
    })


def read_tokens(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(sample_id int64 (N,), tokens int64 (N, S)) from a dataset Parquet file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset file {path} does not exist")
    df = pl.read_parquet(path)
    missing = {"sample_id", "tokens"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: expected columns sample_id and tokens, "
                         f"missing {sorted(missing)}")
    return df["sample_id"].to_numpy(), df["tokens"].to_numpy().astype(np.int64)


def read_pool(path: Path) -> pl.DataFrame:
    """A text pool (sample_id, split, corpus, doc_id, tokens)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"text pool {path} does not exist")
    return pl.read_parquet(path)
