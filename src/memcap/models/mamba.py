"""Mamba (selective state-space) models, packed (memcap.models.base.PackedLM), as
transformers' MambaForCausalLM: no attention and no position table; each layer is
RMSNorm (ε 1e-5) -> the selective SSM mixer -> residual, with inner width E = expand·d:

  [x, z] = h·W_in                          (d -> 2E)
  u      = SiLU(causal depthwise conv_K(x))
  [δ, B, C] = u·W_x                        (E -> R + 2N)
  Δ      = softplus(δ·W_dt + b_dt)         (R -> E)
  s_t    = exp(Δ_t·A) ⊙ s_{t−1} + Δ_t·B_t·u_t,   A = −exp(A_log) (E × N)
  y_t    = s_t·C_t + D ⊙ u_t
  out    = (y ⊙ SiLU(z))·W_out             (E -> d)

The scan runs in pure torch on every device (a fused CUDA kernel would need the mamba-ssm
package, which pins its own CUDA build; docs/science.md#model-families): the decays and
inputs of all positions at once, then one multiply-add per position. Initialisation as
mamba-ssm's: A_log = log(1..N), D = 1, Δ's bias the inverse softplus of a log-uniform step in
[0.001, 0.1], the linear and conv weights U(±1/√fan_in) (the output projection divided by
√L), the embedding N(0, 0.02).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from memcap.models.base import PackedLM, batched_linear, capture_into, rms_norm
from memcap.shapes import MAMBA, Shape

EPS = 1e-5
DT_MIN, DT_MAX, DT_FLOOR = 1e-3, 1e-1, 1e-4


class _SelectiveScan(torch.autograd.Function):
    """The scan with its gradient written out: the forward pass keeps every state (S-major
    buffers, so each position is one contiguous slice), the backward pass runs the adjoint
    recursion g_t = ∂y_t/∂s_t + exp(Δ_{t+1}·A) ⊙ g_{t+1} backwards in place, and every other
    gradient follows from the states and g in whole-tensor products. Autograd through the
    loop would record S small steps and S slices for each tensor instead."""

    @staticmethod
    def forward(ctx, dt, A, B, C, u):
        # (M, B, S, ·) -> S-major (S, M, B, ·)
        dt_s, u_s, B_s, C_s = (x.movedim(2, 0) for x in (dt, u, B, C))
        M, E, N = A.shape
        decay = torch.exp(dt_s.unsqueeze(-1) * A.view(1, M, 1, E, N))  # (S, M, B, E, N)
        states = (dt_s * u_s).unsqueeze(-1) * B_s.unsqueeze(-2)  # the inputs, then the states
        for t in range(1, states.shape[0]):
            states[t].addcmul_(decay[t], states[t - 1])
        ctx.save_for_backward(dt_s, A, B_s, C_s, u_s, decay, states)
        return (states * C_s.unsqueeze(-2)).sum(-1).movedim(0, 2)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy):
        dt_s, A, B_s, C_s, u_s, decay, states = ctx.saved_tensors
        gy_s = gy.movedim(2, 0)  # (S, M, B, E)
        gC = (gy_s.unsqueeze(-1) * states).sum(-2)
        g = gy_s.unsqueeze(-1) * C_s.unsqueeze(-2)  # ∂y_t/∂s_t, then the adjoint g_t
        for t in range(g.shape[0] - 2, -1, -1):
            g[t].addcmul_(decay[t + 1], g[t + 1])
        # ∂/∂(Δ·A) of the decay: g_t ⊙ s_{t−1} ⊙ decay_t (nothing at t = 0)
        g_log = torch.zeros_like(g)
        torch.mul(g[1:], states[:-1], out=g_log[1:])
        g_log.mul_(decay)
        gA = (g_log * dt_s.unsqueeze(-1)).sum((0, 2))  # (M, E, N)
        g_du = (g * B_s.unsqueeze(-2)).sum(-1)  # the input (Δ·u) ⊗ B
        gB = (g * (dt_s * u_s).unsqueeze(-1)).sum(-2)
        g_dt = (g_log * A.unsqueeze(1)).sum(-1) + g_du * u_s  # A (M, 1, E, N) per slice
        g_u = g_du * dt_s
        return (g_dt.movedim(0, 2), gA, gB.movedim(0, 2), gC.movedim(0, 2), g_u.movedim(0, 2))


def selective_scan(dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                   u: torch.Tensor) -> torch.Tensor:
    """y_t = s_t·C_t with s_t = exp(Δ_t·A) ⊙ s_{t−1} + (Δ_t·u_t) ⊗ B_t, s_0 = 0, in fp32.

    dt (Δ), u (M, B, S, E); A (M, E, N); B, C (M, B, S, N) -> y (M, B, S, E).

    With gradients: _SelectiveScan. Without (scoring), each position's decay and input are
    formed in turn and only the current state is held, so scoring never holds an
    (M, B, S, E, N) tensor."""
    M, _, _, E = dt.shape
    if torch.is_grad_enabled():
        return _SelectiveScan.apply(dt, A, B, C, u)
    A = A.view(M, 1, E, -1)
    state, ys = None, []
    for d, x, b, c in zip(dt.unbind(2), u.unbind(2), B.unbind(2), C.unbind(2), strict=True):
        inputs = (d * x).unsqueeze(-1) * b.unsqueeze(-2)
        state = inputs if state is None else torch.addcmul(
            inputs, torch.exp(d.unsqueeze(-1) * A), state)
        ys.append((state * c.unsqueeze(-2)).sum(-1))
    return torch.stack(ys, dim=2)


class Block(nn.Module):
    def __init__(self, n_models: int, shape: Shape) -> None:
        super().__init__()
        o, M, d = shape.options, n_models, shape.d_model
        E, N, K, R = o["expand"] * d, o["state_size"], o["conv_kernel"], o["time_step_rank"]
        self.E, self.N, self.K, self.R = E, N, K, R
        self.norm_w = nn.Parameter(torch.ones(M, d))
        self.in_proj_w = nn.Parameter(torch.empty(M, d, 2 * E))
        self.conv_w = nn.Parameter(torch.empty(M, E, K))
        self.conv_b = nn.Parameter(torch.empty(M, E))
        self.x_proj_w = nn.Parameter(torch.empty(M, E, R + 2 * N))
        self.dt_proj_w = nn.Parameter(torch.empty(M, R, E))
        self.dt_proj_b = nn.Parameter(torch.empty(M, E))
        self.A_log = nn.Parameter(torch.empty(M, E, N))
        self.D = nn.Parameter(torch.empty(M, E))
        self.out_proj_w = nn.Parameter(torch.empty(M, E, d))

    def conv(self, x: torch.Tensor, batch: int) -> torch.Tensor:
        """The causal depthwise convolution of each model's channels: x (M, B·S, E)."""
        M, T, E = x.shape
        S = T // batch
        # (M, B, S, E) -> (B, M·E, S): one grouped convolution for every model's channels
        x = x.view(M, batch, S, E).permute(1, 0, 3, 2).reshape(batch, M * E, S)
        y = F.conv1d(x, self.conv_w.reshape(M * E, 1, self.K), self.conv_b.reshape(M * E),
                     padding=self.K - 1, groups=M * E)[..., :S]
        return y.view(batch, M, E, S).permute(1, 0, 3, 2).reshape(M, T, E)

    def forward(self, x: torch.Tensor, batch: int, seen) -> torch.Tensor:
        M, T, d = x.shape  # T = B·S
        S, E, N, R = T // batch, self.E, self.N, self.R
        xz = batched_linear(seen("in_proj_w", rms_norm(x, self.norm_w, EPS)), self.in_proj_w)
        u, z = xz.split(E, dim=-1)
        u = F.silu(self.conv(u, batch))
        dt_in, B, C = batched_linear(seen("x_proj_w", u), self.x_proj_w).split([R, N, N], -1)
        dt = F.softplus(batched_linear(seen("dt_proj_w", dt_in), self.dt_proj_w,
                                       self.dt_proj_b))  # (M, T, E)
        A = -torch.exp(self.A_log.float())  # (M, E, N)
        dt, u32 = dt.float().view(M, batch, S, E), u.float().view(M, batch, S, E)
        y = selective_scan(dt, A, B.float().view(M, batch, S, N), C.float().view(M, batch, S, N),
                           u32)
        y = (y + u32 * self.D.view(M, 1, 1, E)).reshape(M, T, E).to(x.dtype)
        return x + batched_linear(seen("out_proj_w", y * F.silu(z)), self.out_proj_w)


class PackedMamba(PackedLM):
    """M Mamba models of one shape."""

    family = MAMBA

    def __init__(self, n_models: int, shape: Shape) -> None:
        super().__init__(n_models, shape)
        M, V, d = n_models, shape.vocab_size, shape.d_model
        self.options = shape.options
        self.wte = nn.Parameter(torch.empty(M, V, d))  # tied: also the output projection
        self.blocks = nn.ModuleList(Block(M, shape) for _ in range(shape.n_layer))
        self.normf_w = nn.Parameter(torch.ones(M, d))

    def init_values(self, name: str, shape: torch.Size, g: torch.Generator) -> torch.Tensor:
        kind = name.rsplit(".", 1)[-1]

        def uniform(bound: float) -> torch.Tensor:
            return (torch.rand(shape, generator=g) * 2 - 1) * bound

        if kind == "wte":
            return torch.randn(shape, generator=g) * 0.02
        if kind in ("norm_w", "normf_w", "D"):
            return torch.ones(shape)
        if kind == "A_log":
            return torch.log(torch.arange(1, shape[1] + 1, dtype=torch.float32)).expand(shape)
        if kind == "dt_proj_b":
            dt = torch.exp(torch.rand(shape, generator=g) * (math.log(DT_MAX) - math.log(DT_MIN))
                           + math.log(DT_MIN)).clamp(min=DT_FLOOR)
            return dt + torch.log(-torch.expm1(-dt))  # softplus⁻¹(dt)
        if kind == "dt_proj_w":
            return uniform(shape[0] ** -0.5)
        if kind in ("conv_w", "conv_b"):
            return uniform(1 / math.sqrt(self.options["conv_kernel"]))
        bound = 1 / math.sqrt(shape[0])  # (din, dout): U(±1/√din)
        return uniform(bound / math.sqrt(self.n_layer) if kind == "out_proj_w" else bound)

    def hidden(self, idx: torch.Tensor,
               capture: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        M, B, S = idx.shape
        d = self.d_model
        x = self.embed(idx).reshape(M, B * S, d)
        for i, block in enumerate(self.blocks):
            x = block(x, B, capture_into(capture, f"blocks.{i}."))
        h = capture_into(capture, "")("wte", rms_norm(x, self.normf_w, EPS))
        return h.view(M, B, S, d)

    @property
    def head(self) -> torch.Tensor:
        return self.wte

    @staticmethod
    def input_axes(state: dict[str, torch.Tensor]) -> dict[str, int]:
        """The projections (din, dout) take their inputs along axis 0; the embedding and tied
        output projection reduce over d (axis 1). The depthwise conv taps and A_log are no
        matrix products, and a Δ projection of rank 1 (d ≤ 16) is one weight per output:
        they stay as they are."""
        return {k: 1 if k == "wte" else 0 for k, v in state.items()
                if v.dim() == 2 and k.endswith(("wte", "proj_w"))
                and (k == "wte" or v.shape[0] > 1)}

    def hf_config(self, tf: Any) -> Any:
        o = self.options
        return tf.MambaConfig(
            vocab_size=self.vocab_size, hidden_size=self.d_model, state_size=o["state_size"],
            num_hidden_layers=self.n_layer, expand=o["expand"], conv_kernel=o["conv_kernel"],
            time_step_rank=o["time_step_rank"], layer_norm_epsilon=EPS, use_bias=False,
            use_conv_bias=True, hidden_act="silu", residual_in_fp32=True,
            tie_word_embeddings=True, use_cache=False)

    def hf_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """transformers' Linear weights are (dout, din), its conv weight (E, 1, K)."""
        out = {"backbone.embeddings.weight": state["wte"],
               "backbone.norm_f.weight": state["normf_w"], "lm_head.weight": state["wte"]}
        for i in range(self.n_layer):
            b, hf = f"blocks.{i}.", f"backbone.layers.{i}."
            out |= {hf + "norm.weight": state[b + "norm_w"],
                    hf + "mixer.in_proj.weight": state[b + "in_proj_w"].T,
                    hf + "mixer.conv1d.weight": state[b + "conv_w"].unsqueeze(1),
                    hf + "mixer.conv1d.bias": state[b + "conv_b"],
                    hf + "mixer.x_proj.weight": state[b + "x_proj_w"].T,
                    hf + "mixer.dt_proj.weight": state[b + "dt_proj_w"].T,
                    hf + "mixer.dt_proj.bias": state[b + "dt_proj_b"],
                    hf + "mixer.A_log": state[b + "A_log"], hf + "mixer.D": state[b + "D"],
                    hf + "mixer.out_proj.weight": state[b + "out_proj_w"].T}
        return {k: v.contiguous() for k, v in out.items()}
