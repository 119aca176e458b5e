"""The data stage: synthetic datasets of uniform random tokens (memcap.streams), in
memcap.tokens' format. The dataset of size N is the first N sequences of its stream whatever
other sizes an experiment lists; the train pool and the held-out set are separate streams of
the same seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pyarrow.parquet import ParquetWriter

from memcap.io import atomic_path
from memcap.streams import uniform_tokens
from memcap.tokens import HELDOUT_ID_OFFSET, tokens_frame


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
