"""The packed trainer's optimizers (train.optimizer): Adam for every parameter, or Muon for the
blocks' weight matrices with Adam for the rest (embeddings, layer-norm gains, biases).

Every parameter carries a leading model dimension M (memcap.model). Adam is elementwise, and
PackedMuon orthogonalises each model's matrix on its own, so model m trains exactly as it
would alone under either optimizer.

Muon (Jordan et al. 2024; torch.optim.Muon is the same update for one 2-D matrix): momentum
(Nesterov), then the update replaced by the nearest semi-orthogonal matrix, approximated by five
quintic Newton-Schulz iterations, scaled by 0.2·sqrt(max(din, dout)) so that its RMS matches
Adam's (torch's adjust_lr_fn="match_rms_adamw"): one learning rate serves both parameter sets.
The iteration runs in fp32 here (torch's runs in bf16, slower on a CPU and less exact).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import torch
from torch import nn

# Newton-Schulz coefficients (Jordan et al. 2024, as in torch.optim.Muon)
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5
NS_EPS = 1e-7


def orthogonalize(g: torch.Tensor, steps: int = NS_STEPS) -> torch.Tensor:
    """(M, a, b) -> M approximately semi-orthogonal matrices (singular values near 1), each
    from its own matrix: the quintic Newton-Schulz iteration, batched over M, in fp32."""
    a, b, c = NS_COEFFICIENTS
    x = g.float()
    wide = x.shape[-2] > x.shape[-1]
    if wide:
        x = x.mT
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=NS_EPS)
    for _ in range(steps):
        gram = x @ x.mT
        x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.mT if wide else x


class PackedMuon(torch.optim.Optimizer):
    """Muon for packed weight matrices (M, din, dout). lr may be a tensor (a captured CUDA
    graph reads it from the device)."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float | torch.Tensor,
                 momentum: float = 0.95, nesterov: bool = True,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum, "nesterov": nesterov,
                                  "weight_decay": weight_decay})
        for group in self.param_groups:
            for p in group["params"]:
                if p.dim() != 3:
                    raise ValueError(f"PackedMuon takes (M, din, dout) matrices, got {p.shape}")

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 (torch's signature)
        for group in self.param_groups:
            lr, mom = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - mom)
                update = p.grad.lerp(buf, mom) if group["nesterov"] else buf
                scale = 0.2 * math.sqrt(max(p.shape[1], p.shape[2]))
                if group["weight_decay"]:
                    p.mul_(1 - lr * group["weight_decay"])
                p.sub_(orthogonalize(update).to(p.dtype) * (lr * scale))
        return None


class Optimizers:
    """Several optimizers stepped as one: the interface the training loop uses (param_groups,
    state, zero_grad, step, state_dict, load_state_dict)."""

    def __init__(self, *optimizers: torch.optim.Optimizer) -> None:
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict]:
        return [g for o in self.optimizers for g in o.param_groups]

    @property
    def state(self) -> _MergedState:
        return _MergedState(self.optimizers)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for o in self.optimizers:
            o.step()

    def state_dict(self) -> list[dict]:
        return [o.state_dict() for o in self.optimizers]

    def load_state_dict(self, states: list[dict]) -> None:
        for o, s in zip(self.optimizers, states, strict=True):
            o.load_state_dict(s)


class _MergedState:
    """Read access to the per-parameter state of several optimizers (disjoint parameters)."""

    def __init__(self, optimizers: tuple[torch.optim.Optimizer, ...]) -> None:
        self.optimizers = optimizers

    def _owner(self, p: torch.Tensor) -> torch.optim.Optimizer | None:
        return next((o for o in self.optimizers if p in o.state), None)

    def __contains__(self, p: torch.Tensor) -> bool:
        return self._owner(p) is not None

    def __getitem__(self, p: torch.Tensor) -> dict:
        """p's state; an empty one, stored nowhere, for a parameter without state yet (an
        optimizer's state_dict refuses entries for parameters it does not train)."""
        owner = self._owner(p)
        return owner.state[p] if owner is not None else {}

    def __iter__(self) -> Iterator[torch.Tensor]:
        return (p for o in self.optimizers for p in o.state)


def muon_parameters(model: nn.Module) -> list[str]:
    """Names of the parameters Muon trains: the blocks' weight matrices (M, din, dout), as the
    family lists them (memcap.models.base.PackedLM.input_axes). The embeddings (wte, also the
    output layer, and wpe), gains, biases and a Mamba's conv taps and A_log stay with Adam."""
    params = dict(model.named_parameters())
    matrices = model.input_axes({k: p[0] for k, p in params.items()})
    return [name for name in params if name in matrices and name.startswith("blocks.")]


def make_optimizer(model: nn.Module, spec, lr: float | torch.Tensor,
                   capturable: bool = False) -> torch.optim.Optimizer | Optimizers:
    """The optimizer a cell's spec names (spec.optimizer: adam | muon); fused Adam (one
    vectorised loop on a CPU, one kernel on CUDA) for whatever Adam trains."""
    def adam(params: list[torch.Tensor]) -> torch.optim.Adam:
        return torch.optim.Adam(params, lr=lr, betas=(spec.beta1, spec.beta2), eps=spec.eps,
                                weight_decay=spec.weight_decay, fused=True,
                                capturable=capturable)

    if spec.optimizer == "adam":
        return adam(list(model.parameters()))
    if spec.optimizer != "muon":
        raise ValueError(f"train.optimizer must be adam or muon, got {spec.optimizer!r}")
    matrices = set(muon_parameters(model))
    named = list(model.named_parameters())
    return Optimizers(
        PackedMuon([p for n, p in named if n in matrices], lr=lr,
                   momentum=spec.muon_momentum, weight_decay=spec.weight_decay),
        adam([p for n, p in named if n not in matrices]))
