"""The loss and the code lengths of packed models (memcap.models), for every family.

Training minimises mean_token_nll and scoring sums token_nll in bits (sequence_scores): both
take the family's final states h (M, B, S, d) and its output projection `head` (M, V, d), so
every family trains with the same loss and is scored with the same code. On a CPU both run
fused: the projection, log-softmax and loss in blocks of rows that stay in cache, never the
whole batch's logits.
"""

from __future__ import annotations

import contextlib
import math
from typing import Protocol

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from memcap.memory import MAX_LOGITS


class PackedModel(Protocol):
    """What the loss and the scoring read of a packed model (memcap.models.PackedLM)."""

    vocab_size: int
    training: bool

    @property
    def head(self) -> torch.Tensor: ...  # the output projection (M, V, d)

    def hidden(self, idx: torch.Tensor) -> torch.Tensor: ...  # (M, B, S) -> (M, B, S, d)

    def logits(self, h: torch.Tensor) -> torch.Tensor: ...  # (M, B, S, d) -> (M, B, S, V)

    def __call__(self, idx: torch.Tensor) -> torch.Tensor: ...

    def train(self, mode: bool = True) -> PackedModel: ...

    def eval(self) -> PackedModel: ...


def token_nll(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Per-token negative log-likelihood in nats of x_t given x_<t, t = 2..S: (M, B, S-1)."""
    M, B, S, V = logits.shape
    lp = logits[:, :, :-1].float().reshape(-1, V)
    return F.cross_entropy(lp, idx[:, :, 1:].reshape(-1), reduction="none").view(M, B, S - 1)


# The most logits one pass materialises (M·B·S·V elements; 2^29 is 2 GiB in fp32). Beyond it
# the loss runs in chunks of sequences and scoring lowers its batch: the paper's text grid
# (V 50257, 5 seeds, batch 512) would otherwise hold 8.2e9 logits, over 100 GB with their fp32
# copies and gradients.


def sequences_per_chunk(n_models: int, seq_len: int, vocab_size: int,
                        max_logits: int = MAX_LOGITS) -> int:
    """How many sequences per model one pass may take without exceeding max_logits logits."""
    return max(1, max_logits // (n_models * seq_len * vocab_size))


def mean_token_nll(model: PackedModel, h: torch.Tensor, idx: torch.Tensor,
                   max_logits: int = MAX_LOGITS, fused: bool | None = None) -> torch.Tensor:
    """Mean next-token loss in nats of each model, (M,), from the final states h (M, B, S, d).

    fused (default: on a CPU, outside torch.compile): the output projection, log-softmax and
    loss in blocks of rows that stay in cache (fused_mean_token_nll); its memory is bounded by
    construction, so max_logits does not apply. Otherwise the logits of the whole batch, or,
    when they would exceed max_logits, of chunks of sequences under activation checkpointing
    (the chunk's logits are recomputed in the backward pass), so only one chunk's logits exist
    at a time. Every path takes the same mean over the same tokens."""
    if fused is None:
        fused = h.device.type == "cpu" and not torch.compiler.is_compiling()
    if fused:
        return fused_mean_token_nll(h, model.head, idx)
    M, B, S, _ = h.shape
    chunk = sequences_per_chunk(M, S, model.vocab_size, max_logits)
    if chunk >= B:
        return token_nll(model.logits(h), idx).mean(dim=(1, 2))

    def chunk_sum(h_c: torch.Tensor, idx_c: torch.Tensor) -> torch.Tensor:
        return token_nll(model.logits(h_c), idx_c).sum(dim=(1, 2))

    total = sum(checkpoint(chunk_sum, h[:, i:i + chunk], idx[:, i:i + chunk],
                           use_reentrant=False, preserve_rng_state=False)
                for i in range(0, B, chunk))
    return total / (B * (S - 1))


# The fused loss on a CPU works on blocks of rows (predicted tokens) of every model at once: a
# block holds FUSED_BLOCK_LOGITS logits per model (256 KiB in fp32, so a block of 2 models
# stays in a 1 MiB L2 cache), and at least FUSED_MIN_ROWS rows, below which the matmuls of a
# large vocabulary lose more to their shape than the cache saves (benchmarks/cpu_loss.py
# --sweep; docs/benchmarks.md#a-fused-loss-on-the-cpu).
FUSED_BLOCK_LOGITS = 2**16
FUSED_MIN_ROWS = 32


def fused_block_rows(vocab_size: int) -> int:
    """Rows per block of the fused loss at vocabulary size V."""
    return max(FUSED_MIN_ROWS, FUSED_BLOCK_LOGITS // vocab_size)


def blocked_token_nll(h: torch.Tensor, w: torch.Tensor, targets: torch.Tensor, rows: int,
                      grads: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Per-row negative log-likelihood in nats (M, T), fp32, of targets (M, T) under the logits
    h (M, T, d) @ w (M, V, d)^T, computed over blocks of `rows` rows: no more than one block's
    logits exist at a time.

    With grads = (grad_h (M, T, d), grad_w (M, V, d)), both overwritten, also writes the
    gradient of the per-model sum of the rows' losses: softmax − one-hot of each row, through
    the projection. The softmax's normaliser scales the block's small products (rows × d and
    d × V) instead of its logits, and the one-hot part is one gather and one index_add over all
    rows."""
    M, T, d = h.shape
    V = w.shape[1]
    wt = w.transpose(1, 2).contiguous()  # (M, d, V): both products below read it fastest
    nll = h.new_empty(M, T)
    if grads is not None:
        grad_h, grad_w = grads
        ht = h.transpose(1, 2).contiguous()  # (M, d, T)
        grad_wt = torch.zeros_like(wt)
    for r0 in range(0, T, rows):
        r1 = min(r0 + rows, T)
        z = torch.bmm(h[:, r0:r1], wt)  # the block's logits (M, r, V)
        z_target = z.gather(2, targets[:, r0:r1].unsqueeze(2)).squeeze(2)
        z_max = z.amax(2, keepdim=True)
        total = z.sub_(z_max).exp_().sum(2, keepdim=True)  # z is now exp(logit − max)
        torch.sub(total.log().add_(z_max).squeeze(2), z_target, out=nll[:, r0:r1])
        if grads is not None:
            inv = total.reciprocal_()  # (M, r, 1): softmax = z · inv
            torch.mul(torch.bmm(z, wt.transpose(1, 2)), inv, out=grad_h[:, r0:r1])
            grad_wt.baddbmm_(ht[:, :, r0:r1] * inv.transpose(1, 2), z)
    if grads is not None:
        # the one-hot part: row t's target embedding leaves grad_h, its state leaves grad_w
        flat = (targets + torch.arange(M, device=h.device).view(M, 1) * V).reshape(-1)
        grad_h.sub_(F.embedding(flat, w.reshape(M * V, d)).view(M, T, d))
        grad_w.copy_(grad_wt.transpose(1, 2))
        grad_w.view(M * V, d).index_add_(0, flat, h.reshape(M * T, d), alpha=-1)
    return nll


class _FusedMeanNLL(torch.autograd.Function):
    """Mean loss per model (M,) of blocked_token_nll. The gradient is computed in the forward
    pass, while each block's logits are in cache (the loss is linear in its upstream gradient,
    one scalar per model, so the backward pass only scales it): one projection per block
    instead of two, and only grad_h and grad_w (the sizes of h and w) are kept."""

    @staticmethod
    def forward(ctx, h, w, targets, rows, with_grad):
        T = h.shape[1]
        grads = (torch.empty_like(h), torch.empty_like(w)) if with_grad else None
        nll = blocked_token_nll(h, w, targets, rows, grads)
        if with_grad:
            ctx.save_for_backward(*grads)
        ctx.tokens = T
        return nll.mean(1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        grad_h, grad_w = ctx.saved_tensors
        scale = (grad_out / ctx.tokens).view(-1, 1, 1)
        return grad_h * scale, grad_w * scale, None, None, None


def fused_mean_token_nll(h: torch.Tensor, w: torch.Tensor, idx: torch.Tensor,
                         rows: int | None = None) -> torch.Tensor:
    """mean_token_nll through the output projection w (M, V, d) in fp32 blocks of rows
    (blocked_token_nll): no (M, B·S, V) tensor is ever formed. The last position of h predicts
    nothing and is dropped before the projection. Under autocast the loss is still fp32: the
    states and weights are upcast and the blocks run with autocast off."""
    rows = rows or fused_block_rows(w.shape[1])
    with torch.autocast(h.device.type, enabled=False):
        hf, targets = _predicting_rows(h, idx)
        w = w.float()
        with_grad = torch.is_grad_enabled() and (hf.requires_grad or w.requires_grad)
        return _FusedMeanNLL.apply(hf, w, targets, rows, with_grad)


def _predicting_rows(h: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The fp32 states (M, B·(S−1), d) of every position that predicts a token (the last one
    predicts nothing) and their targets (M, B·(S−1)), int64."""
    M, B, S, d = h.shape
    return (h[:, :, :-1].float().reshape(M, B * (S - 1), d),
            idx[:, :, 1:].reshape(M, B * (S - 1)).long())


@torch.no_grad()
def fused_token_nll(h: torch.Tensor, w: torch.Tensor, idx: torch.Tensor,
                    rows: int | None = None) -> torch.Tensor:
    """token_nll (M, B, S-1) from the final states h (M, B, S, d) through the output projection
    w in fp32 blocks of rows (blocked_token_nll), without the whole batch's logits."""
    M, B, S, _ = h.shape
    rows = rows or fused_block_rows(w.shape[1])
    with torch.autocast(h.device.type, enabled=False):
        hf, targets = _predicting_rows(h, idx)
        return blocked_token_nll(hf, w.float(), targets, rows).view(M, B, S - 1)


# A CPU scores in chunks of at most this many tokens over all packed models: a chunk's
# activations then stay in cache. At V 64, S 32 and 2 seeds, chunks of 64 sequences score
# llama-L1-d32 2.2× and L1-d32 1.2× faster than chunks of 512 (benchmarks/trainer_vs_hf.py,
# docs/benchmarks.md#model-families).
CPU_SCORE_TOKENS = 4096


@torch.no_grad()
def sequence_nll_bits(model: PackedModel, tokens: torch.Tensor, batch_size: int,
                      amp: contextlib.AbstractContextManager | None = None,
                      max_logits: int = MAX_LOGITS) -> torch.Tensor:
    """Code length nll(x | model) in bits of every sequence: tokens (M, N, S), any integer
    type, -> (M, N) fp64.

    Sums -log2 p(x_t | x_<t) over t = 2..S (the first token costs the same under every model,
    so it is left out; docs/science.md#code-length). The batch is lowered where its logits
    would exceed max_logits.
    """
    return sequence_scores(model, tokens, batch_size, amp, max_logits)[0]


@torch.no_grad()
def sequence_scores(model: PackedModel, tokens: torch.Tensor, batch_size: int,
                    amp: contextlib.AbstractContextManager | None = None,
                    max_logits: int = MAX_LOGITS,
                    min_k_frac: float | None = None, fused: bool | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(nll bits (M, N) fp64 as sequence_nll_bits, and with min_k_frac the Min-K% score: the
    mean code length in bits of the ⌈k·(S−1)⌉ least likely tokens of each sequence, else
    None), from one pass over the tokens. fused (default: on a CPU): the per-token losses
    through fused_token_nll, in blocks of rows, instead of the whole batch's logits. On a CPU
    the batch is lowered to CPU_SCORE_TOKENS tokens over all models."""
    was_training = model.training
    model.eval()
    if fused is None:
        fused = tokens.device.type == "cpu"
    M, _, S = tokens.shape
    batch_size = min(batch_size, sequences_per_chunk(M, S, model.vocab_size, max_logits))
    if tokens.device.type == "cpu":
        batch_size = min(batch_size, max(1, CPU_SCORE_TOKENS // (M * S)))
    k = None if min_k_frac is None else max(1, math.ceil(min_k_frac * (S - 1)))
    nll, min_k = [], []
    for start in range(0, tokens.shape[1], batch_size):
        chunk = tokens[:, start:start + batch_size].long()  # narrow ids, widened per chunk
        with amp or contextlib.nullcontext():
            if fused:
                per_token = fused_token_nll(model.hidden(chunk), model.head, chunk)
            else:
                per_token = token_nll(model(chunk), chunk)
        per_token = per_token.double() / math.log(2)
        nll.append(per_token.sum(-1))
        if k is not None:
            min_k.append(per_token.topk(k, dim=-1).values.mean(-1))
    model.train(was_training)
    return torch.cat(nll, dim=1), torch.cat(min_k, dim=1) if k is not None else None
