"""Host memory of each model stage from its cell's shape (no torch: the rules import this).

`compact_bytes` is the data a stage must hold at once, in its narrowest form: token ids at 2
bytes (V ≤ 65,536), one fp64 per sample and output, the model's weights with their gradients
and Adam moments, and one batch's logits (fp32, bounded by MAX_LOGITS per pass). `request_mb`
is what a rule asks the scheduler for: a fixed allowance for the interpreter and its
libraries plus twice the compact size. benchmarks/stage_memory.py measures every stage's peak
resident memory against both (docs/benchmarks.md).
"""

from __future__ import annotations

import ctypes
import math

import numpy as np

from memcap.cell import Cell
from memcap.tokens import token_dtype

MAX_LOGITS = 2**29  # logits one forward pass may hold (memcap.model.MAX_LOGITS)
BASE_MB = 1536  # Python, torch, polars and their allocators, before any data
FP32, FP64 = 4, 8
SCORE_ROW_BYTES = 72  # one row of scores.parquet in memory (8 columns; strings as views)


def _token_bytes(vocab_size: int) -> int:
    return np.dtype(token_dtype(vocab_size)).itemsize


def _logits(models: int, batch: int, seq_len: int, vocab_size: int, copies: int = 2) -> int:
    """Bytes of one pass's logits (fp32), `copies` times: the logits and their log-softmax
    when scoring, and their gradient as well when training."""
    return copies * FP32 * min(models * batch * seq_len * vocab_size, MAX_LOGITS)


def compact_bytes(stage: str, *, vocab_size: int, seq_len: int, n: int, seeds: int,
                  heldout: int, params: int, batch: int = 512, pool: int = 0,
                  references: int = 1, extraction_samples: int = 0) -> dict[str, int]:
    """The parts of the data `stage` must hold at once, in bytes (see the module's doc).

    train: every seed's training tokens, the packed model's state (weights, gradients, two
    Adam moments), one batch's logits with their gradient. score: training and held-out
    tokens of every seed, their code lengths, one seed's score rows per reference, one batch's
    logits. evaluate: one seed's score rows, the extraction prefixes. reference: the pool's
    tokens and code lengths.
    """
    tb = _token_bytes(vocab_size)
    if stage == "train":
        return {"tokens": seeds * n * seq_len * tb, "model": seeds * params * 4 * FP32,
                "logits": _logits(seeds, batch, seq_len, vocab_size, copies=3)}
    if stage == "score":
        rows = n + heldout
        return {"tokens": seeds * rows * seq_len * tb, "code_lengths": seeds * rows * FP64,
                "score_rows": rows * SCORE_ROW_BYTES * references,
                "logits": _logits(seeds, batch, seq_len, vocab_size)}
    if stage == "evaluate":
        return {"score_rows": (n + heldout) * 6 * FP64,
                "extraction": 2 * seeds * extraction_samples * seq_len * FP64}
    if stage == "reference":
        return {"tokens": pool * seq_len * tb, "code_lengths": pool * 3 * FP64,
                "logits": _logits(1, batch, seq_len, vocab_size)}
    raise ValueError(f"no memory model for stage {stage!r}; known: train, score, evaluate, "
                     "reference")


def request_mb(compact: dict[str, int]) -> int:
    """The rule's mem_mb: BASE_MB plus twice the compact size."""
    return BASE_MB + math.ceil(2 * sum(compact.values()) / 2**20)


def cell_request_mb(stage: str, cell: Cell, *, heldout: int, batch: int,
                    extraction_samples: int = 0, pool: int = 0) -> int:
    """A model rule's mem_mb for one cell (train, score, evaluate) or a text reference."""
    spec = cell.spec
    return request_mb(compact_bytes(
        stage, vocab_size=spec.vocab_size, seq_len=spec.seq_len, n=spec.n,
        seeds=len(cell.seeds), heldout=heldout, params=spec.params, batch=batch, pool=pool,
        references=max(1, len(cell.references)), extraction_samples=extraction_samples))


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def bound_heap_growth(threshold: int = 1 << 20) -> bool:
    """Serve every allocation of at least `threshold` bytes by its own mapping, returned to the
    system when freed (glibc; a no-op returning False elsewhere).

    Scoring allocates and frees the same tensors chunk after chunk. glibc raises its mmap
    threshold each time a large block is freed (up to 32 MiB), after which medium blocks come
    from the heap and fragment it: a score job's peak grew from 7.8 GiB at N = 2^15 to 12.9 GiB
    at 2^18 with the same chunk size (docs/benchmarks.md). A fixed threshold stops that."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold))
