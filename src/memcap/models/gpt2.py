"""GPT-2 as in docs/science.md#parameter-count, packed (memcap.models.base.PackedLM): tied
embeddings, learned positions, LayerNorm ε 1e-5 before attention and MLP, a 4d tanh-GELU MLP,
biases everywhere; weights (din, dout) as transformers' Conv1D.

Shapes: M models, B sequences per model, S tokens, d = d_model, V = vocab_size, H heads.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from memcap.models.base import PackedLM, capture_into
from memcap.models.base import batched_linear as _linear
from memcap.shapes import GPT2, Shape


def _layer_norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # normalise over d, then the per-model affine map; w, b (M, d)
    return torch.addcmul(b.unsqueeze(1), F.layer_norm(x, x.shape[-1:]), w.unsqueeze(1))


class Block(nn.Module):
    def __init__(self, n_models: int, d_model: int, n_head: int) -> None:
        super().__init__()
        M, d = n_models, d_model
        self.n_head = n_head
        self.ln1_w = nn.Parameter(torch.ones(M, d))
        self.ln1_b = nn.Parameter(torch.zeros(M, d))
        self.attn_w = nn.Parameter(torch.empty(M, d, 3 * d))  # q, k, v
        self.attn_b = nn.Parameter(torch.zeros(M, 3 * d))
        self.attn_proj_w = nn.Parameter(torch.empty(M, d, d))
        self.attn_proj_b = nn.Parameter(torch.zeros(M, d))
        self.ln2_w = nn.Parameter(torch.ones(M, d))
        self.ln2_b = nn.Parameter(torch.zeros(M, d))
        self.fc_w = nn.Parameter(torch.empty(M, d, 4 * d))
        self.fc_b = nn.Parameter(torch.zeros(M, 4 * d))
        self.fc_proj_w = nn.Parameter(torch.empty(M, 4 * d, d))
        self.fc_proj_b = nn.Parameter(torch.zeros(M, d))

    def forward(self, x: torch.Tensor, batch: int, seen) -> torch.Tensor:
        """x (M, B·S, d) -> the block's output; seen(name, input) records each weight
        matrix's input (memcap.models.base.capture_into)."""
        M, T, d = x.shape  # T = B·S
        S, H = T // batch, self.n_head

        qkv = _linear(seen("attn_w", _layer_norm(x, self.ln1_w, self.ln1_b)), self.attn_w,
                      self.attn_b)
        # (M, B·S, 3d) -> 3 × (M·B, H, S, d/H)
        q, k, v = qkv.view(M * batch, S, 3, H, d // H).permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).reshape(M, T, d)
        x = x + _linear(seen("attn_proj_w", y), self.attn_proj_w, self.attn_proj_b)
        h = F.gelu(_linear(seen("fc_w", _layer_norm(x, self.ln2_w, self.ln2_b)), self.fc_w,
                           self.fc_b), approximate="tanh")
        return x + _linear(seen("fc_proj_w", h), self.fc_proj_w, self.fc_proj_b)


class PackedGPT(PackedLM):
    """M GPT-2 models of one shape."""

    family = GPT2

    def __init__(self, n_models: int, shape: Shape) -> None:
        super().__init__(n_models, shape)
        M, V, S, d = n_models, shape.vocab_size, shape.seq_len, shape.d_model
        self.n_head = shape.n_head
        self.wte = nn.Parameter(torch.empty(M, V, d))  # tied: also the output projection
        self.wpe = nn.Parameter(torch.empty(M, S, d))
        self.blocks = nn.ModuleList(Block(M, d, self.n_head) for _ in range(shape.n_layer))
        self.lnf_w = nn.Parameter(torch.ones(M, d))
        self.lnf_b = nn.Parameter(torch.zeros(M, d))

    def init_values(self, name: str, shape: torch.Size, g: torch.Generator) -> torch.Tensor:
        """GPT-2's: weights and embeddings N(0, 0.02), the residual projections
        N(0, 0.02/√(2L)); biases 0, LayerNorm gains 1."""
        if len(shape) == 1:
            return torch.ones(shape) if name.endswith(("ln1_w", "ln2_w", "lnf_w")) \
                else torch.zeros(shape)
        std = 0.02 / math.sqrt(2 * self.n_layer) if name.endswith("proj_w") else 0.02
        return torch.randn(shape, generator=g) * std

    def hidden(self, idx: torch.Tensor,
               capture: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        M, B, S = idx.shape
        d = self.d_model
        x = (self.embed(idx) + self.wpe[:, :S].unsqueeze(1)).reshape(M, B * S, d)
        for i, block in enumerate(self.blocks):
            x = block(x, B, capture_into(capture, f"blocks.{i}."))
        h = capture_into(capture, "")("wte", _layer_norm(x, self.lnf_w, self.lnf_b))
        return h.view(M, B, S, d)

    @property
    def head(self) -> torch.Tensor:
        return self.wte

    @staticmethod
    def input_axes(state: dict[str, torch.Tensor]) -> dict[str, int]:
        """The blocks' (din, dout) matrices take their inputs along axis 0; the embeddings'
        rows are read out over d (axis 1), and the tied output projection reduces over d
        too."""
        return {k: 1 if k in ("wte", "wpe") else 0 for k, v in state.items() if v.dim() == 2}

    def hf_config(self, tf: Any) -> Any:
        d = self.d_model
        return tf.GPT2Config(
            vocab_size=self.vocab_size, n_positions=self.seq_len, n_embd=d,
            n_layer=self.n_layer, n_head=self.n_head, n_inner=4 * d,
            activation_function="gelu_new", layer_norm_epsilon=1e-5, resid_pdrop=0.0,
            embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True)

    def hf_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """GPT-2's Conv1D weights are (in, out), as memcap's: the names change only."""
        return {f"transformer.{theirs}": state[ours]
                for ours, theirs in hf_names(self.n_layer).items()}


def hf_names(n_layer: int) -> dict[str, str]:
    """memcap's weight names -> GPT-2's (transformers, without the `transformer.` prefix)."""
    names = {"wte": "wte.weight", "wpe": "wpe.weight", "lnf_w": "ln_f.weight",
             "lnf_b": "ln_f.bias"}
    for i in range(n_layer):
        for ours, theirs in (("ln1_w", "ln_1.weight"), ("ln1_b", "ln_1.bias"),
                             ("attn_w", "attn.c_attn.weight"), ("attn_b", "attn.c_attn.bias"),
                             ("attn_proj_w", "attn.c_proj.weight"),
                             ("attn_proj_b", "attn.c_proj.bias"),
                             ("ln2_w", "ln_2.weight"), ("ln2_b", "ln_2.bias"),
                             ("fc_w", "mlp.c_fc.weight"), ("fc_b", "mlp.c_fc.bias"),
                             ("fc_proj_w", "mlp.c_proj.weight"), ("fc_proj_b", "mlp.c_proj.bias")):
            names[f"blocks.{i}.{ours}"] = f"h.{i}.{theirs}"
    return names
