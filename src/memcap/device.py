"""Device and numeric precision: CUDA when present (bf16 autocast or strict fp32), else CPU fp32."""

from __future__ import annotations

import contextlib
import sys

import torch

PRECISIONS = ("bf16", "fp32")


def resolve_device(requested: str) -> torch.device:
    """`auto` picks CUDA when available, else CPU; `cuda` without a GPU is an error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but torch sees no CUDA GPU "
                           "(set device: auto or cpu in the config)")
    if requested not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {requested!r}")
    return torch.device(requested)


def compute_dtype(device: torch.device, precision: str) -> str:
    """The arithmetic a run really uses: bf16 autocast on CUDA; CPU always computes in fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision if device.type == "cuda" else "fp32"


def configure(device: torch.device, precision: str, threads: int) -> str:
    """Set threads and matmul precision for a job; returns the compute dtype actually used."""
    if device.type == "cpu":
        torch.set_num_threads(max(1, threads))
    dtype = compute_dtype(device, precision)
    if device.type == "cuda":
        # fp32 means fp32: no TF32 matmuls, which would silently drop mantissa bits
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    if dtype != precision:
        print(f"note: precision {precision} runs in {dtype} on {device.type}", file=sys.stderr)
    return dtype


def autocast(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    if dtype == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
