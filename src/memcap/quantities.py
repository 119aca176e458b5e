"""The formulas of docs/science.md, each written once. Torch-free: the DAG build, the stages,
the figures and the report all import them.

Notation: N sequences of S tokens over a vocabulary of V tokens; a model of P parameters.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

# The membership law counts training data in sequences of 64 tokens (the paper's unit).
LAW_SEQ_LEN = 64


def uniform_code_bits(seq_len: int, vocab_size: int) -> float:
    """nll(x | uniform) of any sequence: (S−1)·log2 V bits. The first token is not predicted,
    so it is left out of every code length (docs/science.md#code-length)."""
    return (seq_len - 1) * math.log2(vocab_size)


def memorizable_bits(n: int, seq_len: int, vocab_size: int) -> float:
    """What a model can memorize of N uniform sequences: N·(S−1)·log2 V."""
    return n * uniform_code_bits(seq_len, vocab_size)


def dataset_entropy_bits(n: int, seq_len: int, vocab_size: int) -> float:
    """The paper's H(D) = N·S·log2 V (first tokens included)."""
    return n * seq_len * math.log2(vocab_size)


def nats_per_token(bits: float, seq_len: int) -> float:
    """A sequence's code length in bits -> the loss in nats per predicted token."""
    return bits * math.log(2) / (seq_len - 1)


def sequences_per_param(n, seq_len, params):
    """N/P with N counted in 64-token sequences: (N·S/64)/P (docs/science.md#membership-law).
    Works on numbers, numpy arrays and polars expressions alike."""
    return n * seq_len / LAW_SEQ_LEN / params


def mia_f1(x: np.ndarray, c1: float, c2: float, c3: float) -> np.ndarray:
    """F1(N/P) = ½ · (1 + c1 · σ(−c2 · (N/P − c3))), N in 64-token sequences."""
    return 0.5 * (1 + c1 / (1 + np.exp(np.clip(c2 * (np.asarray(x) - c3), -500, 500))))


def invert_mia_f1(f1: float, c1: float, c2: float, c3: float) -> float:
    """The N/P at which the law predicts `f1` (NaN when the law never reaches it)."""
    q = (2 * f1 - 1) / c1
    if not 0 < q < 1:
        return float("nan")
    return float(c3 - math.log(q / (1 - q)) / c2)


def capacity_ratio(dataset_bits, alpha, params):
    """Dataset-to-capacity ratio H_ref(D) / (α·P) (docs/science.md#dataset-to-capacity-ratio).
    Works on numbers and polars expressions alike."""
    return dataset_bits / (alpha * params)


# A bootstrap over fewer seeds than this has too few distinct resamples (2 seeds: 3) for its
# interval to be a confidence interval: such CIs are flagged (laws.ci_few_seeds).
MIN_CI_SEEDS = 3


def verify_verdict(table: pl.DataFrame) -> str:
    """One line on a predict-then-verify table (memcap.stages.verify): passed or failed, with the
    worst gap."""
    checked = table.filter(pl.col("passed").is_not_null())
    if checked.is_empty():
        return "not verified: no target has both a prediction and observed runs"
    worst = checked.row(int(checked["gap"].abs().arg_max()), named=True)
    ok = bool(checked["passed"].all())
    return (f"{'PASSED' if ok else 'FAILED'}: {checked['passed'].sum()} of {checked.height} "
            f"targets within ±{worst['tolerance']:.2f} F1; the largest gap is "
            f"{worst['gap']:+.3f} at target {worst['target_f1']:.2f} (N = {worst['n']:,})")
