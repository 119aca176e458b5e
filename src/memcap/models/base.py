"""The one interface every model family implements (memcap.models.<family>).

A `PackedLM` holds M independent models of one `memcap.shapes.Shape`: every weight carries a
leading model dimension M, so the seeds of one cell train as a single batched model (one
kernel launch per layer for all of them). Nothing mixes across the model dimension: the loss
is a sum of per-model losses and Adam is elementwise, so model m trains exactly as it would
alone. The trainer, the scoring and the quantizer see only this interface:

  init_weights(seeds)      the family's initialisation, model m from a generator of seeds[m]
  hidden(idx, capture)     tokens (M, B, S) -> final normed states (M, B, S, d)
  head                     the output projection (M, V, d), tied or not
  input_axes(state)        the weight matrices of one model's state and their input axis
  hf_config(tf) / hf_state(state)   the equivalent transformers model (export, tests)

The loss and code lengths (memcap.loss) take hidden() and head, the same for every family.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from memcap.shapes import Shape


class PackedLM(nn.Module):
    """M models of one family and shape. forward(idx (M, B, S)) -> logits (M, B, S, V)."""

    family: ClassVar[str]

    def __init__(self, n_models: int, shape: Shape) -> None:
        super().__init__()
        if shape.family != self.family:
            raise ValueError(f"a {shape.family} shape for the {self.family} family")
        self.n_models, self.shape = n_models, shape
        self.vocab_size, self.seq_len = shape.vocab_size, shape.seq_len
        self.n_layer, self.d_model = shape.n_layer, shape.d_model

    # -- what each family defines ---------------------------------------------------------
    def init_values(self, name: str, shape: torch.Size, g: torch.Generator) -> torch.Tensor:
        """The initial value of one model's parameter `name` (its shape without M), drawn
        from g."""
        raise NotImplementedError

    def hidden(self, idx: torch.Tensor,
               capture: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """idx (M, B, S) -> the final normed states (M, B, S, d). With `capture`, every
        weight matrix's input (M, B·S, din), by its state name (GPTQ's calibration); the
        output projection's under the name of `head`."""
        raise NotImplementedError

    @property
    def head(self) -> torch.Tensor:
        """The output projection (M, V, d)."""
        raise NotImplementedError

    @staticmethod
    def input_axes(state: dict[str, torch.Tensor]) -> dict[str, int]:
        """The weight matrices of one model's state (save_model's layout) and the axis of each
        that holds its inputs, along which quantization groups run (memcap.quantization)."""
        raise NotImplementedError

    def hf_config(self, tf: Any) -> Any:
        """The transformers config of the equivalent model (tf: the transformers module)."""
        raise NotImplementedError

    def hf_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One model's state (save_model's layout) in the transformers model's names and
        layouts."""
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------
    def init_weights(self, seeds: list[int]) -> None:
        """The family's initialisation, model m drawn from its own generator seeded with
        seeds[m], parameter by parameter in their fixed order. The draws for one model do
        not depend on M or on the other seeds, so a packed run and separate runs with the
        same seeds start from identical weights."""
        if len(seeds) != self.n_models:
            raise ValueError(f"{len(seeds)} seeds for {self.n_models} packed models")
        with torch.no_grad():
            for m, seed in enumerate(seeds):
                g = torch.Generator().manual_seed(int(seed))
                for name, p in self.named_parameters():
                    p[m].copy_(self.init_values(name, p.shape[1:], g))

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """Token ids (M, B, S) -> their embeddings (M, B, S, d) from each model's own table
        `wte` (M, V, d): the ids are offset into the model's slice of the flattened
        (M·V, d) table, one lookup for all models."""
        M, V = idx.shape[0], self.vocab_size
        offsets = torch.arange(M, device=idx.device).view(M, 1, 1) * V
        return F.embedding(idx + offsets, self.wte.reshape(M * V, self.d_model))

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """States (M, B, S, d) -> logits (M, B, S, V) through the output projection."""
        M, B, S, d = h.shape
        return torch.bmm(h.reshape(M, B * S, d), self.head.transpose(1, 2)).view(M, B, S, -1)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.logits(self.hidden(idx))

    def params_per_model(self) -> int:
        return sum(p.numel() for p in self.parameters()) // self.n_models


def batched_linear(x: torch.Tensor, w: torch.Tensor,
                   b: torch.Tensor | None = None) -> torch.Tensor:
    """x (M, T, din) @ w (M, din, dout) (+ b (M, dout)) -> (M, T, dout)."""
    if b is None:
        return torch.bmm(x, w)
    return torch.baddbmm(b.unsqueeze(1), x, w)


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over d in fp32 (as transformers' Llama and Mamba norms), then the per-model
    gain w (M, d)."""
    normed = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)
    return w.unsqueeze(1) * normed.to(x.dtype)


def capture_into(capture: dict[str, torch.Tensor] | None, prefix: str):
    """A function that records a weight matrix's input under prefix + its name (when
    capturing) and returns the input."""
    def seen(name: str, value: torch.Tensor) -> torch.Tensor:
        if capture is not None:
            capture[prefix + name] = value.detach()
        return value
    return seen
