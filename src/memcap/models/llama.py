"""Llama-style models, packed (memcap.models.base.PackedLM), as transformers' LlamaForCausalLM:
RMSNorm (ε 1e-6) before attention and MLP and at the end, rotary positions (θ 10,000, the
rotate-half convention) on the queries and keys, a gated SwiGLU MLP of hidden width I
(memcap.shapes.llama_intermediate_size unless given), no biases, no position table, the
output projection tied to the embedding unless `tie_embeddings: false`. Every head attends
with its own keys and values (no grouped queries).

The weights are stored (din, dout); the query, key and value matrices side by side (d, 3d), one
matmul, and the rotation turns the queries and keys together. Initialisation as memcap's
GPT-2 (N(0, 0.02), the residual projections N(0, 0.02/√(2L)), gains 1), so the families start
alike.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from memcap.models.base import PackedLM, batched_linear, capture_into, rms_norm
from memcap.shapes import LLAMA, Shape

EPS = 1e-6
ROPE_THETA = 10_000.0


def rotary_tables(seq_len: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin (S, 1, head_dim) of the rotary angles, as transformers computes them;
    the sin's first half negated, so that x·cos + swap_halves(x)·sin is transformers'
    x·cos + rotate_half(x)·sin without a negation per call."""
    inv_freq = 1.0 / ROPE_THETA ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float()
                                    / head_dim)
    angles = torch.outer(torch.arange(seq_len).float(), inv_freq)
    emb = torch.cat((angles, angles), dim=-1)
    sign = torch.cat((-torch.ones(head_dim // 2), torch.ones(head_dim // 2)))
    return emb.cos().unsqueeze(1), (emb.sin() * sign).unsqueeze(1)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (..., S, heads, head_dim) turned by the rotary angles of its positions."""
    half = x.shape[-1] // 2
    return torch.addcmul(x * cos, torch.cat((x[..., half:], x[..., :half]), dim=-1), sin)


class Block(nn.Module):
    def __init__(self, n_models: int, d_model: int, n_head: int, intermediate: int) -> None:
        super().__init__()
        M, d, I = n_models, d_model, intermediate  # noqa: E741
        self.n_head, self.intermediate = n_head, intermediate
        self.ln1_w = nn.Parameter(torch.ones(M, d))
        self.qkv_w = nn.Parameter(torch.empty(M, d, 3 * d))
        self.o_proj_w = nn.Parameter(torch.empty(M, d, d))
        self.ln2_w = nn.Parameter(torch.ones(M, d))
        # separate matrices: a slice of one (d, 2I) product is strided, and SiLU and the
        # product of the halves run several times slower on strided memory
        self.gate_proj_w = nn.Parameter(torch.empty(M, d, I))
        self.up_proj_w = nn.Parameter(torch.empty(M, d, I))
        self.down_proj_w = nn.Parameter(torch.empty(M, I, d))

    def forward(self, x: torch.Tensor, batch: int, cos: torch.Tensor, sin: torch.Tensor,
                seen) -> torch.Tensor:
        M, T, d = x.shape  # T = B·S
        S, H = T // batch, self.n_head
        qkv = batched_linear(seen("qkv_w", rms_norm(x, self.ln1_w, EPS)), self.qkv_w)
        qkv = qkv.view(M * batch, S, 3 * H, d // H)
        qk = _rotate(qkv[:, :, :2 * H], cos[:S], sin[:S])  # queries and keys, one rotation
        q, k = qk.transpose(1, 2).split(H, dim=1)  # (M·B, H, S, d/H)
        v = qkv[:, :, 2 * H:].transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).reshape(M, T, d)
        x = x + batched_linear(seen("o_proj_w", y), self.o_proj_w)
        h = seen("gate_proj_w", rms_norm(x, self.ln2_w, EPS))
        seen("up_proj_w", h)
        gated = F.silu(batched_linear(h, self.gate_proj_w)) * batched_linear(h, self.up_proj_w)
        return x + batched_linear(seen("down_proj_w", gated), self.down_proj_w)


class PackedLlama(PackedLM):
    """M Llama-style models of one shape."""

    family = LLAMA

    def __init__(self, n_models: int, shape: Shape) -> None:
        super().__init__(n_models, shape)
        M, V, d = n_models, shape.vocab_size, shape.d_model
        self.n_head, self.tied = shape.n_head, shape.options["tie_embeddings"]
        self.intermediate = shape.options["intermediate_size"]
        self.wte = nn.Parameter(torch.empty(M, V, d))
        self.blocks = nn.ModuleList(Block(M, d, self.n_head, self.intermediate)
                                    for _ in range(shape.n_layer))
        self.lnf_w = nn.Parameter(torch.ones(M, d))
        if not self.tied:
            self.lm_head = nn.Parameter(torch.empty(M, V, d))
        cos, sin = rotary_tables(shape.seq_len, d // self.n_head)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def init_values(self, name: str, shape: torch.Size, g: torch.Generator) -> torch.Tensor:
        if len(shape) == 1:
            return torch.ones(shape)  # the RMSNorm gains
        std = 0.02 / math.sqrt(2 * self.n_layer) if name.endswith("proj_w") else 0.02
        return torch.randn(shape, generator=g) * std

    def hidden(self, idx: torch.Tensor,
               capture: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        M, B, S = idx.shape
        d = self.d_model
        x = self.embed(idx).reshape(M, B * S, d)
        cos, sin = self.cos.to(x.dtype), self.sin.to(x.dtype)
        for i, block in enumerate(self.blocks):
            x = block(x, B, cos, sin, capture_into(capture, f"blocks.{i}."))
        h = capture_into(capture, "")("wte" if self.tied else "lm_head",
                                      rms_norm(x, self.lnf_w, EPS))
        return h.view(M, B, S, d)

    @property
    def head(self) -> torch.Tensor:
        return self.wte if self.tied else self.lm_head

    @staticmethod
    def input_axes(state: dict[str, torch.Tensor]) -> dict[str, int]:
        """The blocks' (din, dout) matrices take their inputs along axis 0; the embedding
        and the output projection (V, d) reduce over d (axis 1)."""
        return {k: 1 if k in ("wte", "lm_head") else 0 for k, v in state.items()
                if v.dim() == 2}

    def hf_config(self, tf: Any) -> Any:
        d = self.d_model
        return tf.LlamaConfig(
            vocab_size=self.vocab_size, hidden_size=d, intermediate_size=self.intermediate,
            num_hidden_layers=self.n_layer, num_attention_heads=self.n_head,
            num_key_value_heads=self.n_head, max_position_embeddings=self.seq_len,
            rms_norm_eps=EPS, rope_theta=ROPE_THETA, attention_bias=False, mlp_bias=False,
            hidden_act="silu", tie_word_embeddings=self.tied, attention_dropout=0.0)

    def hf_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """transformers' Linear weights are (dout, din): each matrix transposed, the fused
        ones split."""
        d = self.d_model
        out = {"model.embed_tokens.weight": state["wte"], "model.norm.weight": state["lnf_w"],
               "lm_head.weight": state["wte" if self.tied else "lm_head"]}
        for i in range(self.n_layer):
            b, hf = f"blocks.{i}.", f"model.layers.{i}."
            q, k, v = state[b + "qkv_w"].split(d, dim=1)
            out |= {hf + "input_layernorm.weight": state[b + "ln1_w"],
                    hf + "post_attention_layernorm.weight": state[b + "ln2_w"],
                    hf + "self_attn.q_proj.weight": q.T, hf + "self_attn.k_proj.weight": k.T,
                    hf + "self_attn.v_proj.weight": v.T,
                    hf + "self_attn.o_proj.weight": state[b + "o_proj_w"].T,
                    hf + "mlp.gate_proj.weight": state[b + "gate_proj_w"].T,
                    hf + "mlp.up_proj.weight": state[b + "up_proj_w"].T,
                    hf + "mlp.down_proj.weight": state[b + "down_proj_w"].T}
        return {k: v.contiguous() for k, v in out.items()}
