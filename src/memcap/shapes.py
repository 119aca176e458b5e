"""Model shapes without torch (the Snakefile and config checks import this)."""

from __future__ import annotations


def param_count(vocab_size: int, seq_len: int, n_layer: int, d_model: int) -> int:
    """P = V·d + S·d + L·(12d² + 13d) + 2d (tied embeddings, learned positions, biases, MLP 4d)."""
    d = d_model
    return vocab_size * d + seq_len * d + n_layer * (12 * d * d + 13 * d) + 2 * d
