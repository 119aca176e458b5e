"""Model shapes without torch (the Snakefile and config checks import this)."""

from __future__ import annotations


def param_count(vocab_size: int, seq_len: int, n_layer: int, d_model: int) -> int:
    """P = V·d + S·d + L·(12d² + 13d) + 2d (tied embeddings, learned positions, biases, MLP 4d)."""
    d = d_model
    return vocab_size * d + seq_len * d + n_layer * (12 * d * d + 13 * d) + 2 * d


def train_flops_per_token(vocab_size: int, seq_len: int, n_layer: int, d_model: int) -> int:
    """Model FLOPs of one training token (forward + backward = 3 × forward), counting matmuls:
    per layer 2·12d² (QKV, output, MLP) and 4·S·d (attention scores and values, the full
    S×S square as usual), plus 2·V·d for the tied output projection. Embedding lookups,
    norms and softmax are not counted (the usual MFU convention)."""
    d = d_model
    forward = n_layer * (2 * 12 * d * d + 4 * seq_len * d) + 2 * vocab_size * d
    return 3 * forward


# Dense peak throughput (FLOP/s) per GPU model, for model FLOP utilisation. fp32 means plain
# FP32 (memcap turns TF32 off for fp32 runs).
PEAK_FLOPS = {
    "H100": {"bf16": 989.4e12, "fp32": 66.9e12},
    "H200": {"bf16": 989.4e12, "fp32": 66.9e12},
    "A100": {"bf16": 312.0e12, "fp32": 19.5e12},
}


def peak_flops(gpu_name: str, precision: str) -> float | None:
    """Peak FLOP/s of a GPU by its CUDA name (e.g. 'NVIDIA H100 80GB HBM3'), or None."""
    for key, peaks in PEAK_FLOPS.items():
        if key in gpu_name:
            return peaks[precision]
    return None
