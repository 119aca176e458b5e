"""Model shapes without torch (the Snakefile and config checks import this): the model
families, their options, and the parameter count of each (docs/science.md#model-families).

A `Shape` is one model: its family, the data it reads (V, S), its depth and width, its head
width and its family's options, resolved (every option of its family, defaults filled in).
The packed models (memcap.models) are built from it; P = param_count(shape) is what
`sum(p.numel())` gives for the family's module and for its transformers model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

GPT2, LLAMA, MAMBA = "gpt2", "llama", "mamba"
FAMILIES = (GPT2, LLAMA, MAMBA)
DEFAULT_FAMILY = GPT2

# Each family's options and their defaults; None: a rule of d_model (resolve_options).
FAMILY_OPTIONS: dict[str, dict[str, Any]] = {
    GPT2: {},
    # tied input and output embeddings (as GPT-2's); the SwiGLU's hidden width
    LLAMA: {"tie_embeddings": True, "intermediate_size": None},
    # transformers' MambaConfig defaults: state N 16, inner width 2d, causal conv of 4,
    # time-step rank ⌈d/16⌉
    MAMBA: {"state_size": 16, "expand": 2, "conv_kernel": 4, "time_step_rank": None},
}
# how a non-default option shows in an architecture's id (memcap.config.arch_id)
OPTION_TAGS = {"intermediate_size": "i", "state_size": "n", "expand": "e", "conv_kernel": "k",
               "time_step_rank": "r"}


class ShapeError(ValueError):
    """A family, option or width that no model of the family can take."""


def llama_intermediate_size(d_model: int) -> int:
    """The SwiGLU's hidden width: 8d/3 (three matrices of d × 8d/3 hold the 8d² of GPT-2's
    two d × 4d), rounded up to a multiple of 8 as Llama rounds to its `multiple_of`."""
    return 8 * math.ceil(8 * d_model / 3 / 8)


def option_defaults(family: str, d_model: int) -> dict[str, Any]:
    """Every option of a family with its default at this width."""
    if family not in FAMILY_OPTIONS:
        raise ShapeError(f"unknown model family {family!r}; expected one of {list(FAMILIES)}")
    rules = {"intermediate_size": llama_intermediate_size(d_model),
             "time_step_rank": math.ceil(d_model / 16)}
    return {k: rules[k] if v is None else v for k, v in FAMILY_OPTIONS[family].items()}


def resolve_options(family: str, d_model: int, given: dict[str, Any]) -> dict[str, Any]:
    """A family's options with the given ones over its defaults; an option of another family
    is a ShapeError naming it."""
    defaults = option_defaults(family, d_model)
    for key in given:
        if key not in defaults:
            owner = [f for f, opts in FAMILY_OPTIONS.items() if key in opts]
            raise ShapeError(f"{key!r} is an option of the {' / '.join(owner) or 'no'} family, "
                             f"not of {family} (its options: {sorted(defaults) or 'none'})")
    return {**defaults, **given}


@dataclass(frozen=True)
class Shape:
    """One model's architecture (see the module's docstring); options resolved."""

    vocab_size: int
    seq_len: int
    n_layer: int
    d_model: int
    head_dim: int = 16
    family: str = DEFAULT_FAMILY
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "options",
                           resolve_options(self.family, self.d_model, dict(self.options)))
        check_width(self.family, self.d_model, self.head_dim)

    @property
    def n_head(self) -> int:
        return n_heads(self.d_model, self.head_dim)

    @property
    def params(self) -> int:
        return param_count(self)


def n_heads(d_model: int, head_dim: int) -> int:
    """Heads for a width: d_model / head_dim, at least one (head count does not change P)."""
    if d_model % head_dim and d_model > head_dim:
        raise ShapeError(f"d_model {d_model} is not a multiple of head_dim {head_dim}")
    return max(1, d_model // head_dim)


def check_width(family: str, d_model: int, head_dim: int) -> None:
    """A width the family can take: attention families split d_model into heads of head_dim
    (one head when d_model ≤ head_dim); Llama's rotary positions turn pairs of a head's
    dimensions, so its heads are of even width. A Mamba takes any width."""
    if family == MAMBA:
        return
    n_heads(d_model, head_dim)
    if family == LLAMA and (d_model // n_heads(d_model, head_dim)) % 2:
        raise ShapeError(f"d_model {d_model} gives heads of odd width "
                         f"{d_model // n_heads(d_model, head_dim)}; rotary positions need an "
                         "even head width")


def param_count(shape: Shape) -> int:
    """P of one model of `shape`, per family (docs/science.md#parameter-count):

    gpt2:  V·d + S·d + L·(12d² + 13d) + 2d (tied embeddings, learned positions, biases,
           MLP 4d)
    llama: V·d (·2 untied) + L·(4d² + 3·d·I + 2d) + d (no biases, no position table)
    mamba: V·d + L·(d + 3·d·E + E·K + E·(R + 2N) + R·E + E·N + 3E) + d, E = expand·d the
           inner width (in_proj 2E, conv E·K + E, x_proj R + 2N, dt_proj R·E + E, A E·N,
           D E, out_proj E·d)"""
    V, S, L, d = shape.vocab_size, shape.seq_len, shape.n_layer, shape.d_model
    o = shape.options
    if shape.family == GPT2:
        return V * d + S * d + L * (12 * d * d + 13 * d) + 2 * d
    if shape.family == LLAMA:
        embeddings = V * d * (1 if o["tie_embeddings"] else 2)
        return embeddings + L * (4 * d * d + 3 * d * o["intermediate_size"] + 2 * d) + d
    E, N, K, R = o["expand"] * d, o["state_size"], o["conv_kernel"], o["time_step_rank"]
    return V * d + L * (d + 3 * d * E + E * K + E * (R + 2 * N) + R * E + E * N + 3 * E) + d


def input_widths(shape: Shape) -> set[int]:
    """The input widths of the weight matrices a quantization scheme rounds (groups of G
    inputs must divide each): the embeddings and every projection reading d, and GPT-2's
    4d MLP, Llama's I-wide down projection, Mamba's E-wide and R-wide projections (R = 1: a
    weight per output, left unquantized)."""
    d, o = shape.d_model, shape.options
    if shape.family == GPT2:
        return {d, 4 * d}
    if shape.family == LLAMA:
        return {d, o["intermediate_size"]}
    return {d, o["expand"] * d} | ({o["time_step_rank"]} - {1})


def train_flops_per_token(shape: Shape) -> int:
    """Model FLOPs of one training token (forward + backward = 3 × forward), counting matmuls:
    the blocks' weight matrices (2 FLOPs per weight), attention's scores and values (4·S·d a
    layer, the full S×S square as usual; a Mamba's scan: 6·E·N a layer), and 2·V·d for the
    output projection. Embedding lookups, norms and softmax are not counted (the usual MFU
    convention)."""
    V, S, L, d = shape.vocab_size, shape.seq_len, shape.n_layer, shape.d_model
    o = shape.options
    if shape.family == GPT2:
        per_layer = 2 * 12 * d * d + 4 * S * d
    elif shape.family == LLAMA:
        per_layer = 2 * (4 * d * d + 3 * d * o["intermediate_size"]) + 4 * S * d
    else:
        E, N, R = o["expand"] * d, o["state_size"], o["time_step_rank"]
        per_layer = 2 * (3 * d * E + E * (R + 2 * N) + R * E) + 6 * E * N
    return 3 * (L * per_layer + 2 * V * d)


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
