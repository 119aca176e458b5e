"""Device and numeric precision: CUDA when present (bf16 autocast or strict fp32), else CPU fp32."""

from __future__ import annotations

import contextlib
import functools
import socket
import sys
import warnings

import numpy as np
import torch

PRECISIONS = ("bf16", "fp32")


def resolve_device(requested: str) -> torch.device:
    """`auto` picks CUDA when available, else CPU; `cuda` without a GPU is an error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device 'cuda' was requested but torch sees no CUDA GPU on host "
                           f"{socket.gethostname()} (torch {torch.__version__}, CUDA build: "
                           f"{torch.version.cuda or 'no'}); a job that asked the scheduler "
                           "for a GPU must get one, or set device: auto or cpu in the config")
    if requested not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {requested!r}")
    return torch.device(requested)


def to_device_tokens(tokens: np.ndarray, device: torch.device) -> torch.Tensor:
    """Token ids (any shape, numpy unsigned) as a tensor on the device in the same width:
    uint16 stays 2 bytes a token (the models index and widen one batch at a time). Where the
    device's torch lacks indexing or widening for that unsigned type, int32 (4 bytes) instead;
    ids ≥ 2^31 (never a realistic vocabulary) stay int64."""
    with warnings.catch_warnings():  # read-only arrays (zero-copy from Parquet) are never
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        t = torch.from_numpy(np.ascontiguousarray(tokens))  # written: no copy needed
    if t.dtype == torch.uint32:
        t = t.to(torch.int64) if tokens.size and int(tokens.max()) >= 2**31 else t.to(torch.int32)
    elif not _narrow_ok(str(device), t.dtype):
        t = t.to(torch.int32)
    return t.to(device)


@functools.cache
def _narrow_ok(device: str, dtype: torch.dtype) -> bool:
    """Whether this torch indexes, slices and widens `dtype` tensors on `device`."""
    try:
        probe = torch.arange(6, device=device).reshape(2, 3).to(dtype)
        rows = torch.arange(2, device=device)[:, None]
        picked = probe[rows, torch.tensor([[1], [0]], device=device)].long()
        return picked.flatten().tolist() == [1, 3]
    except (RuntimeError, NotImplementedError):
        return False


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
