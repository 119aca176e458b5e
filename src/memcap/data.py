"""Synthetic datasets: uniform random tokens from a counter-based generator.

Token t of sequence i in stream (seed, split) is a pure function of (seed, split, i, t), so the
dataset of size N is the first N sequences whatever other sizes an experiment lists, and any
sequence can be produced without producing the ones before it. The train pool and the held-out
set are separate streams of the same seed.
The files are in memcap.tokens' format.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pyarrow.parquet import ParquetWriter

from memcap.io import atomic_path
from memcap.tokens import HELDOUT_ID_OFFSET, tokens_frame

# calibration: fresh sequences for GPTQ (memcap.quantize), never trained on or scored
_STREAMS = {"train": 0x5452_4149_4E00, "heldout": 0x4845_4C44_4F55,
            "calibration": 0x4341_4C49_4252}
_MAX_SEQ_LEN = 1 << 20
_U64 = np.uint64


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser: a bijective 64-bit mix (wrapping uint64 arithmetic)."""
    with np.errstate(over="ignore"):
        x = x + _U64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
        return x ^ (x >> _U64(31))


def _stream_key(seed: int, split: str) -> np.uint64:
    key = _splitmix64(np.array([seed], dtype=_U64))
    return _splitmix64(key ^ _U64(_STREAMS[split]))[0]


def uniform_tokens(seed: int, split: str, start: int, count: int, seq_len: int,
                   vocab_size: int) -> np.ndarray:
    """Sequences start..start+count-1 of stream (seed, split): int64 array (count, seq_len)."""
    if split not in _STREAMS:
        raise ValueError(f"split must be one of {sorted(_STREAMS)}, got {split!r}")
    if not 0 < seq_len < _MAX_SEQ_LEN:
        raise ValueError(f"seq_len must be in 1..{_MAX_SEQ_LEN - 1}, got {seq_len}")
    if not 1 < vocab_size <= 1 << 32:
        raise ValueError(f"vocab_size must be in 2..2^32, got {vocab_size}")
    i = np.arange(start, start + count, dtype=_U64)[:, None]
    t = np.arange(seq_len, dtype=_U64)[None, :]
    with np.errstate(over="ignore"):
        counter = _stream_key(seed, split) + (i << _U64(20)) + t
    z = _splitmix64(_splitmix64(counter))
    # top 53 bits -> uniform double in [0, 1) -> floor(u·V); exact, unbiased to 2^-53·V
    u = (z >> _U64(11)).astype(np.float64) * 2.0**-53
    return (u * vocab_size).astype(np.int64)


def write_synthetic(path: str | Path, *, seed: int, split: str, n: int, seq_len: int,
                    vocab_size: int, chunk: int = 1 << 16) -> None:
    """Write the first n sequences of stream (seed, split) to Parquet, atomically."""
    if n < 1:
        raise ValueError(f"dataset size must be positive, got {n}")
    offset = HELDOUT_ID_OFFSET if split == "heldout" else 0
    # chunk by chunk into one file (a row group each): memory stays one chunk, whatever n
    with atomic_path(path) as tmp, ParquetWriter(tmp, _schema(seq_len, vocab_size)) as out:
        for start in range(0, n, chunk):
            count = min(chunk, n - start)
            toks = uniform_tokens(seed, split, start, count, seq_len, vocab_size)
            ids = np.arange(start, start + count, dtype=np.int64) + offset
            out.write_table(tokens_frame(ids, toks, vocab_size).to_arrow())


def _schema(seq_len: int, vocab_size: int):
    """The Arrow schema of a dataset file (what tokens_frame writes)."""
    return tokens_frame(np.zeros(1, dtype=np.int64), np.zeros((1, seq_len), dtype=np.int64),
                        vocab_size).to_arrow().schema


def write_seed_datasets(root: str | Path, seeds: list[int], n: int, seq_len: int,
                        vocab_size: int, heldout: int) -> tuple[list[Path], list[Path]]:
    """Train (size n) and held-out (size `heldout`) files of every seed under `root`, outside
    the workflow (tests, benchmarks). Returns (train paths, held-out paths)."""
    root = Path(root)
    train, held = [], []
    for s in seeds:
        t = root / f"train-v{vocab_size}-s{seq_len}-seed{s}-n{n}.parquet"
        h = root / f"heldout-v{vocab_size}-s{seq_len}-seed{s}-n{heldout}.parquet"
        write_synthetic(t, seed=s, split="train", n=n, seq_len=seq_len, vocab_size=vocab_size)
        write_synthetic(h, seed=s, split="heldout", n=heldout, seq_len=seq_len,
                        vocab_size=vocab_size)
        train.append(t)
        held.append(h)
    return train, held
