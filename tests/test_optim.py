import pytest
import torch

from conftest import CPU, make_cell, small_spec, write_data
from memcap.models import PackedGPT
from memcap.optim import Optimizers, PackedMuon, make_optimizer, muon_parameters, orthogonalize
from memcap.shapes import Shape
from memcap.stages.train import train_cell


def test_orthogonalize_gives_each_model_a_near_orthogonal_matrix_of_its_own():
    g = torch.randn(3, 16, 48, generator=torch.Generator().manual_seed(0))
    g[1] *= 1e3  # the scale of one model's gradient must not reach another's
    o = orthogonalize(g)
    for m in range(3):
        s = torch.linalg.svdvals(o[m])
        # the quintic iteration lands the singular values in about (0.7, 1.2), not exactly 1
        assert 0.6 < float(s.min()) and float(s.max()) < 1.25
        assert torch.allclose(orthogonalize(g[m:m + 1])[0], o[m], atol=1e-6)
    # tall matrices are handled through their transpose
    assert torch.allclose(orthogonalize(g.mT), o.mT, atol=1e-6)


def test_packed_muon_step_is_torch_muons_update_per_model():
    # torch.optim.Muon (one 2-D matrix, (out, in), its Newton-Schulz iteration in bf16) and
    # PackedMuon ((M, in, out), fp32) take the same step up to bf16 rounding
    torch.manual_seed(0)
    w = torch.randn(2, 24, 40)
    grads = [torch.randn(2, 24, 40) for _ in range(3)]
    packed = w.clone().requires_grad_()
    ref = [w[m].T.clone().requires_grad_() for m in range(2)]
    ours = PackedMuon([packed], lr=0.02)
    theirs = [torch.optim.Muon([r], lr=0.02, weight_decay=0.0, adjust_lr_fn="match_rms_adamw")
              for r in ref]
    for g in grads:
        packed.grad = g.clone()
        ours.step()
        for m in range(2):
            ref[m].grad = g[m].T.clone()
            theirs[m].step()
    for m in range(2):
        moved = (ref[m].detach().T - w[m]).norm()
        assert (packed.detach()[m] - ref[m].detach().T).norm() < 0.02 * moved


def test_muon_takes_the_block_matrices_and_adam_the_rest():
    model = PackedGPT(2, Shape(32, 8, 2, 16))
    names = set(muon_parameters(model))
    assert names == {f"blocks.{i}.{w}" for i in range(2)
                     for w in ("attn_w", "attn_proj_w", "fc_w", "fc_proj_w")}
    opt = make_optimizer(model, small_spec(optimizer="muon"), lr=0.01)
    assert isinstance(opt, Optimizers)
    muon, adam = opt.optimizers
    assert sum(p.numel() for g in muon.param_groups for p in g["params"]) + sum(
        p.numel() for g in adam.param_groups for p in g["params"]) == sum(
        p.numel() for p in model.parameters())
    with pytest.raises(ValueError, match="M, din, dout"):
        PackedMuon([model.lnf_w], lr=0.01)


def test_muon_memorizes_a_small_dataset(tmp_path, quiet):
    # 8 sequences × 15 × 4 bits = 480 bits, far below the model's capacity: Muon must hold
    # nearly all of them, as Adam does (test_train)
    spec = small_spec(n=8, steps=300, optimizer="muon")
    train, held = write_data(tmp_path, spec, [0])
    records = train_cell(make_cell(tmp_path, spec, [0], train, held), CPU, echo=quiet)
    assert records[0]["final_mem_bits_estimate"] >= 0.9 * spec.memorizable_bits
