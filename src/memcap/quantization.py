"""Post-training weight quantization: the bits a model holds against the bits it is stored in
(docs/science.md#quantization).

A scheme says how every weight matrix of a trained model is stored; vectors (layer-norm
gains, biases) keep their fp32 values. Schemes (`quantize.schemes` in the config):

  bf16          every tensor rounded to bfloat16: 16 bits per parameter, no scales
  int{b}        b-bit integers (2 <= b <= 8), round to nearest, with one fp16 scale and one
                b-bit zero point per output channel (a matrix row, over all its inputs)
  int{b}-g{G}   the same with one scale and zero point per group of G consecutive inputs

The integers, scales and zero points come from torchao's affine quantization primitives
(asymmetric: the range of each group, stretched to include 0, split into 2^b − 1 steps);
memcap dequantizes them itself, w ≈ (q − z)·s, and the quantize stage records the largest
difference from torchao's own dequantization. A weight lies within half a step of its
dequantized value, where the step is the group's scale before its fp16 rounding (the
rounding moves the grid by at most 2^b·2^-11 steps at its far end; a step is never below
fp16's smallest normal number, 2^-14, so it keeps 11 bits of precision).

Stored bits are counted exactly: b per integer, 16 + b per group (scale and zero point),
16 per bf16 value and 32 per fp32 value left as it was. The integers are written one per
byte (uint8) for simplicity; packed b-bit storage holds the same bits.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from memcap.schemes import Scheme, SchemeError

__all__ = ["QuantizedMatrix", "Scheme", "SchemeError", "gptq_matrix", "quantize_matrix",
           "quantize_module", "quantize_state", "read_state", "save_quantized",
           "torchao_dequantize", "torchao_qparams"]

METADATA_KEY = "memcap_quantization"
SCALE_BITS = 16  # fp16 scales


@dataclass(frozen=True)
class QuantizedMatrix:
    """A matrix as stored: integers q (rows, inputs) in [0, 2^b − 1], and per group of inputs
    an fp16 scale and an integer zero point (rows, inputs / group); `axis` is the axis of the
    original tensor that holds the inputs (the rows are the other one)."""

    q: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    axis: int

    def dequantize(self) -> torch.Tensor:
        group = self.q.shape[1] // self.scale.shape[1]
        s = self.scale.float().repeat_interleave(group, dim=1)
        z = self.zero.float().repeat_interleave(group, dim=1)
        w = (self.q.float() - z) * s
        return w if self.axis == 1 else w.t().contiguous()

    def stored_bits(self, bits: int) -> int:
        return bits * self.q.numel() + (SCALE_BITS + bits) * self.scale.numel()


def _rows(w: torch.Tensor, axis: int) -> torch.Tensor:
    if w.dim() != 2 or axis not in (0, 1):
        raise SchemeError(f"only matrices are quantized; got shape {tuple(w.shape)}, axis {axis}")
    return (w if axis == 1 else w.t()).float().contiguous()


def _quiet_torchao() -> None:
    """torchao's import logs a warning per CUDA kernel library it cannot load (every one, on
    a CPU) and torch one about torchao's enum registration: noise in every job log."""
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)


def torchao_qparams(rows: torch.Tensor, bits: int, group: int
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """torchao's asymmetric round-to-nearest of a (rows, inputs) matrix in groups of `group`
    inputs: (integers, fp16 scales, zero points)."""
    _quiet_torchao()
    from torchao.quantization.quant_primitives import (
        MappingType,
        choose_qparams_affine,
        quantize_affine,
    )

    block, qmax = (1, group), 2 ** bits - 1
    # eps: no scale below fp16's smallest normal number; a subnormal scale (a row of tiny
    # weights) keeps too few bits of precision for the grid to cover the row
    scale, zero = choose_qparams_affine(rows, MappingType.ASYMMETRIC, block, torch.uint8,
                                        quant_min=0, quant_max=qmax,
                                        eps=torch.finfo(torch.float16).tiny,
                                        scale_dtype=torch.float16, zero_point_dtype=torch.int32)
    q = quantize_affine(rows, block, scale, zero, torch.uint8, quant_min=0, quant_max=qmax)
    shape = (rows.shape[0], rows.shape[1] // group)
    return q, scale.reshape(shape), zero.reshape(shape).to(torch.uint8)


def torchao_dequantize(m: QuantizedMatrix) -> torch.Tensor:
    """torchao's dequantization of a stored matrix (the check on memcap's own)."""
    _quiet_torchao()
    from torchao.quantization.quant_primitives import dequantize_affine

    group = m.q.shape[1] // m.scale.shape[1]
    w = dequantize_affine(m.q, (1, group), m.scale.reshape(-1), m.zero.int().reshape(-1),
                          torch.uint8, quant_min=0, quant_max=255, output_dtype=torch.float32)
    return w if m.axis == 1 else w.t().contiguous()


def quantize_matrix(w: torch.Tensor, axis: int, scheme: Scheme, what: str) -> QuantizedMatrix:
    """Quantize one weight matrix whose inputs run along `axis` (an integer scheme)."""
    rows = _rows(w, axis)
    group = scheme.group or rows.shape[1]
    scheme.check_width(rows.shape[1], what)
    q, scale, zero = torchao_qparams(rows, scheme.bits, group)
    return QuantizedMatrix(q, scale, zero, axis)


GPTQ_DAMPING = 0.01  # of the mean diagonal of H, added to its diagonal (the GPTQ paper's)


def gptq_matrix(w: torch.Tensor, axis: int, scheme: Scheme, inputs: torch.Tensor,
                what: str) -> QuantizedMatrix:
    """GPTQ (Frantar et al. 2023) of one weight matrix on its calibration inputs (T, din):
    the inputs' columns are quantized one at a time on the scheme's grid, each one's rounding
    error spread over the columns not yet quantized through the inverse Hessian
    H = 2·XᵀX/T (+1 % damping), minimising the error of the layer's outputs on X rather than
    of the weights. Scales and zero points are torchao's, of the row (per channel: before
    any update) or of each group when the group's first column comes up (as GPTQ does)."""
    rows = _rows(w, axis).double()
    scheme.check_width(rows.shape[1], what)
    cols = rows.shape[1]
    group, qmax = scheme.group or cols, 2 ** scheme.bits - 1
    x = inputs.reshape(-1, cols).double()
    if x.shape[0] == 0:
        raise SchemeError(f"{what}: GPTQ needs calibration inputs")
    h = x.T @ x * (2 / x.shape[0])
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    rows[:, dead] = 0
    h += GPTQ_DAMPING * torch.diag(h).mean() * torch.eye(cols, dtype=h.dtype)
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    q = torch.empty(rows.shape, dtype=torch.uint8)
    scales, zeros = [], []
    for i in range(cols):
        if i % group == 0:
            _, s, z = torchao_qparams(rows[:, i:i + group].float(), scheme.bits, group)
            scales.append(s)
            zeros.append(z)
            s64, z64 = s.double()[:, 0], z.double()[:, 0]
        col = rows[:, i]
        qi = torch.clamp(torch.round(col / s64) + z64, 0, qmax)
        err = (col - (qi - z64) * s64) / hinv[i, i]
        rows[:, i + 1:] -= err[:, None] * hinv[i, i + 1:][None, :]
        q[:, i] = qi.to(torch.uint8)
    return QuantizedMatrix(q, torch.cat(scales, 1), torch.cat(zeros, 1), axis)


def quantize_state(state: dict[str, torch.Tensor], axes: dict[str, int], scheme: Scheme,
                   what: str = "the model", inputs: dict[str, torch.Tensor] | None = None
                   ) -> tuple[dict[str, torch.Tensor], dict]:
    """One model's weights under `scheme`: the dequantized state (what the model computes
    with) and a record (stored bits, parameters, the largest weight error in steps, the
    largest difference from torchao's dequantization). `axes` names the matrices to quantize
    and the axis of each that holds its inputs; every other tensor keeps its fp32 value
    (bf16: every tensor is rounded). GPTQ schemes need `inputs`, each matrix's calibration
    inputs (T, din); a matrix without any (the position embedding: a lookup, no inputs) is
    rounded to nearest."""
    if scheme.method == "gptq" and inputs is None:
        raise SchemeError(f"quantization scheme {scheme.name} needs calibration inputs")
    out, stored, max_step_error, max_torchao_diff = {}, 0, 0.0, 0.0
    matrices = {}
    for name, w in state.items():
        if scheme.float:
            out[name] = w.to(torch.bfloat16).float()
            stored += 16 * w.numel()
        elif name in axes:
            m = (gptq_matrix(w, axes[name], scheme, inputs[name], f"{name} of {what}")
                 if scheme.method == "gptq" and name in inputs
                 else quantize_matrix(w, axes[name], scheme, f"{name} of {what}"))
            matrices[name] = m
            out[name] = m.dequantize()
            stored += m.stored_bits(scheme.bits)
            step = (m.scale.float().repeat_interleave(m.q.shape[1] // m.scale.shape[1], 1))
            err = (_rows(w, m.axis) - _rows(out[name], m.axis)).abs() / step
            max_step_error = max(max_step_error, float(err.max()))
            max_torchao_diff = max(max_torchao_diff,
                                   float((torchao_dequantize(m) - out[name]).abs().max()))
        else:
            out[name] = w.float()
            stored += 32 * w.numel()
    params = sum(w.numel() for w in state.values())
    record = {"scheme": scheme.name, "method": "float" if scheme.float else scheme.method,
              "bits": scheme.bits, "group_size": scheme.group,
              "params": params, "quantized_params": sum(state[k].numel() for k in matrices),
              "stored_bits": stored, "stored_bits_per_param": stored / params,
              "max_error_steps": max_step_error, "torchao_max_abs_diff": max_torchao_diff}
    return out, {"tensors": _stored_tensors(state, matrices, scheme), "record": record}


def _stored_tensors(state: dict[str, torch.Tensor], matrices: dict[str, QuantizedMatrix],
                    scheme: Scheme) -> dict[str, torch.Tensor]:
    tensors = {}
    for name, w in state.items():
        if scheme.float:
            tensors[name] = w.to(torch.bfloat16).contiguous()
        elif name in matrices:
            m = matrices[name]
            tensors |= {f"{name}.q": m.q, f"{name}.scale": m.scale, f"{name}.zero": m.zero}
        else:
            tensors[name] = w.float().contiguous()
    return tensors


def save_quantized(state: dict[str, torch.Tensor], axes: dict[str, int], scheme: Scheme,
                   path: Path, what: str = "the model",
                   inputs: dict[str, torch.Tensor] | None = None) -> dict:
    """Quantize one model's fp32 state and write it as stored (integers, scales, zero points,
    the tensors left as they were) to a safetensors file; returns the record."""
    _, stored = quantize_state(state, axes, scheme, what, inputs)
    layout = {"scheme": scheme.name,
              "axes": {} if scheme.float else {k: axes[k] for k in axes if k in state}}
    save_file(stored["tensors"], str(path), metadata={METADATA_KEY: json.dumps(layout)})
    return stored["record"]


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """One model's fp32 weights from a safetensors file: as written by training, or
    dequantized when the file holds a quantized model (save_quantized)."""
    with safe_open(str(path), framework="pt") as fh:
        meta = (fh.metadata() or {}).get(METADATA_KEY)
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (no __iter__)
    if meta is None:
        return tensors
    axes = json.loads(meta)["axes"]
    parts = {f"{name}.{part}" for name in axes for part in ("q", "scale", "zero")}
    state = {k: v.float() for k, v in tensors.items() if k not in parts}
    for name, axis in axes.items():
        state[name] = QuantizedMatrix(tensors[f"{name}.q"], tensors[f"{name}.scale"],
                                      tensors[f"{name}.zero"], axis).dequantize()
    return state


def quantize_module(model: torch.nn.Module, scheme: Scheme, what: str) -> dict:
    """Quantize a loaded model's weights in place (each tensor replaced by its dequantized
    value) and return the record (stored bits ...). The matrices: a memcap packed model's by
    its family's layout (memcap.models.base.PackedLM.input_axes), and in any other module
    nn.Linear (inputs along axis 1), transformers' Conv1D (axis 0) and nn.Embedding (rows
    over d, axis 1) weights, a tied weight once. Raises SchemeError when the model has no
    such matrix."""
    scheme.check_kind("audit")
    params = dict(model.named_parameters())  # tied weights appear once
    packed = hasattr(model, "n_models")  # a memcap.models.PackedLM
    if packed:
        if model.n_models != 1:
            raise SchemeError(f"{what}: quantize one model at a time, got {model.n_models}")
        state = {k: v[0] for k, v in params.items()}
        axes = model.input_axes(state)
    else:
        names = {id(p): k for k, p in params.items()}
        axes = {}
        for module in model.modules():
            w = getattr(module, "weight", None)
            if not isinstance(w, torch.nn.Parameter) or w.dim() != 2 or id(w) not in names:
                continue
            if isinstance(module, torch.nn.Linear | torch.nn.Embedding):
                axes[names[id(w)]] = 1
            elif type(module).__name__ == "Conv1D":  # transformers' GPT-2 layers: (in, out)
                axes[names[id(w)]] = 0
        state = dict(params)
    if not axes:
        raise SchemeError(f"quantization scheme {scheme.name} finds no weight matrix in {what} "
                          "(nn.Linear, nn.Embedding or transformers' Conv1D)")
    deq, stored = quantize_state({k: v.detach().float().cpu() for k, v in state.items()}, axes,
                                 scheme, what)
    with torch.no_grad():
        for k, p in params.items():
            value = deq[k].to(p.device, p.dtype)
            p.copy_(value.unsqueeze(0) if packed else value)
    return stored["record"]
