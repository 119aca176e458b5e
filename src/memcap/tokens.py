"""Dataset files: the on-disk format every stage reads and writes.

A dataset is Parquet with two columns: `sample_id` (int64) and `tokens` (Array[UInt16 or UInt32,
S]); a text seed file adds `corpus`. Train samples have sample_id = i; held-out samples have
sample_id = HELDOUT_ID_OFFSET + i, so ids never collide inside a scored run. A text pool adds
split, corpus and doc_id.

Tokens stay in that narrowest type (2 bytes a token where V ≤ 65,536) from the file to the
model, which widens one batch at a time: at the paper's largest N (2^23 sequences of 64
tokens) a seed's dataset is 1 GiB, where int64 would be 4.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

HELDOUT_ID_OFFSET = 1 << 40


def token_dtype(vocab_size: int) -> type[np.unsignedinteger]:
    """The narrowest unsigned type that holds token ids below vocab_size."""
    return np.uint16 if vocab_size <= 1 << 16 else np.uint32


def tokens_frame(sample_ids: np.ndarray, tokens: np.ndarray, vocab_size: int) -> pl.DataFrame:
    dtype = pl.UInt16 if token_dtype(vocab_size) is np.uint16 else pl.UInt32
    return pl.DataFrame({
        "sample_id": pl.Series(sample_ids, dtype=pl.Int64),
        "tokens": pl.Series(tokens.astype(token_dtype(vocab_size), copy=False)).cast(
            pl.Array(dtype, tokens.shape[1])),
    })


def read_tokens(path: str | Path, rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(sample_id int64 (N,), tokens (N, S) in the file's unsigned type) from a dataset
    Parquet file; only its first `rows` samples when given (the rest is never read)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset file {path} does not exist")
    columns = pl.read_parquet_schema(path)
    missing = {"sample_id", "tokens"} - set(columns)
    if missing:
        raise ValueError(f"{path}: expected columns sample_id and tokens, "
                         f"missing {sorted(missing)}")
    df = pl.read_parquet(path, columns=["sample_id", "tokens"], n_rows=rows)
    return df["sample_id"].to_numpy(), df["tokens"].to_numpy()


def read_strata(path: str | Path) -> pl.Series | None:
    """A dataset file's `corpus` column (text seed files carry it; the strata of membership
    inference), in file order; None when the file has none (synthetic data)."""
    if "corpus" not in pl.read_parquet_schema(path):
        return None
    return pl.read_parquet(path, columns=["corpus"])["corpus"]


def count_rows(path: str | Path) -> int:
    """A dataset file's number of samples (from its metadata)."""
    if not Path(path).exists():
        raise FileNotFoundError(f"dataset file {path} does not exist")
    return pl.scan_parquet(path).select(pl.len()).collect().item()


def read_token_stack(paths: list[str | Path], shape: tuple[int, int] | None = None,
                     rows: int | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """Several files' (first `rows`) samples as one (M, N, S) array in their own type, filled
    file by file (never two copies of the data). shape: the (N, S) every file must have."""
    ids, out = [], None
    for m, path in enumerate(paths):
        sample_ids, toks = read_tokens(path, rows)
        if shape is not None and toks.shape != tuple(shape):
            raise ValueError(f"{path}: expected {shape[0]} sequences of {shape[1]} tokens, "
                             f"got {toks.shape[0]} of {toks.shape[1] if toks.ndim == 2 else 0}")
        if out is None:
            out = np.empty((len(paths), *toks.shape), dtype=toks.dtype)
        elif toks.shape != out.shape[1:]:
            raise ValueError(f"{path}: {toks.shape[0]} sequences of {toks.shape[1]} tokens, "
                             f"unlike {paths[0]} ({out.shape[1]} of {out.shape[2]})")
        out[m] = toks
        ids.append(sample_ids)
    return ids, out


def read_pool(path: Path) -> pl.DataFrame:
    """A text pool (sample_id, split, corpus, doc_id, tokens)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"text pool {path} does not exist")
    return pl.read_parquet(path)
