"""Uniform random tokens from a counter-based generator (the synthetic data and GPTQ's
calibration sequences).

Token t of sequence i in stream (seed, split) is a pure function of (seed, split, i, t), so
any sequence can be produced without producing the ones before it.
"""

from __future__ import annotations

import numpy as np

# calibration: fresh sequences for GPTQ (memcap.stages.quantize), never trained on or scored
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
