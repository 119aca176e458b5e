import pytest
import torch

from memcap.loss import sequence_nll_bits
from memcap.models import PackedGPT
from memcap.shapes import Shape


def test_param_count_matches_the_papers_counts():
    assert Shape(2048, 64, 1, 32).params == 80_352
    assert Shape(2048, 64, 2, 128).params == 667_136
    assert Shape(2048, 64, 8, 256).params == 6_859_264
    # the text models of the paper (GPT-2 tokenizer, 8 layers)
    assert [Shape(50257, 64, 8, d).params for d in (32, 64, 128, 256)] == [
        1_711_968, 3_620_544, 8_027_520, 19_200_768]


def test_built_model_has_exactly_p_parameters():
    for n_layer, d in ((1, 32), (2, 128), (8, 256)):
        model = PackedGPT(1, Shape(2048, 64, n_layer, d))
        assert sum(p.numel() for p in model.parameters()) == Shape(2048, 64, n_layer, d).params
    packed = PackedGPT(3, Shape(64, 32, 1, 16))
    assert packed.params_per_model() == Shape(64, 32, 1, 16).params


def test_attention_is_causal():
    model = PackedGPT(2, Shape(32, 12, 2, 16, 16 // 2))
    model.init_weights([0, 1])
    idx = torch.randint(0, 32, (2, 3, 12), generator=torch.Generator().manual_seed(0))
    changed = idx.clone()
    changed[:, :, 7] = (changed[:, :, 7] + 1) % 32
    a, b = model(idx), model(changed)
    assert torch.allclose(a[:, :, :7], b[:, :, :7], atol=1e-6)
    assert not torch.allclose(a[:, :, 7:], b[:, :, 7:], atol=1e-6)


def test_packed_models_are_independent_and_match_single_models():
    packed = PackedGPT(2, Shape(32, 8, 1, 16))
    packed.init_weights([3, 4])
    single = PackedGPT(1, Shape(32, 8, 1, 16))
    single.init_weights([4])
    assert torch.equal(packed.wte[1], single.wte[0])
    idx = torch.randint(0, 32, (2, 5, 8), generator=torch.Generator().manual_seed(1))
    out_packed = packed(idx)[1]
    out_single = single(idx[1:])[0]
    assert torch.allclose(out_packed, out_single, atol=1e-5)


def test_untrained_code_length_is_near_uniform():
    # an initialised GPT-2 predicts nearly uniformly: nll ≈ (S−1)·log2 V
    model = PackedGPT(1, Shape(64, 16, 1, 16))
    model.init_weights([0])
    idx = torch.randint(0, 64, (1, 50, 16), generator=torch.Generator().manual_seed(2))
    bits = sequence_nll_bits(model, idx, batch_size=16)
    assert bits.shape == (1, 50)
    assert abs(bits.mean().item() - 15 * 6) < 0.5


def test_train_flops_per_token_and_peaks():
    from memcap.shapes import peak_flops, train_flops_per_token

    # L2-d128, V 2048, S 64: 3 × (2·(2·12·128² + 4·64·128) + 2·2048·128)
    assert train_flops_per_token(Shape(2048, 64, 2, 128)) == 3 * (2 * (24 * 128**2 + 4 * 64 * 128)
                                                          + 2 * 2048 * 128)
    assert peak_flops("NVIDIA H100 80GB HBM3", "bf16") == 989.4e12
    assert peak_flops("Some other GPU", "fp32") is None


def _trained_pair():
    model = PackedGPT(2, Shape(64, 16, 1, 16))
    model.init_weights([0, 1])
    idx = torch.randint(0, 64, (2, 10, 16), generator=torch.Generator().manual_seed(3))
    return model, idx


def test_chunked_loss_equals_the_whole_batch_loss_and_gradients():
    from memcap.loss import mean_token_nll, sequences_per_chunk

    model, idx = _trained_pair()
    # a limit of 3 sequences per chunk: chunks of 3, 3, 3 and 1 over B = 10
    limit = 3 * 2 * 16 * 64
    assert sequences_per_chunk(2, 16, 64, limit) == 3
    grads = []
    for max_logits in (2**29, limit):
        model.zero_grad()
        loss = mean_token_nll(model, model.hidden(idx), idx, max_logits=max_logits, fused=False)
        loss.sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
        if max_logits == 2**29:
            whole = loss.detach()
        else:
            chunked = loss.detach()
    assert torch.allclose(whole, chunked, rtol=1e-6)
    assert whole.shape == (2,) and abs(whole.mean().item() - torch.log(torch.tensor(64.0))) < 0.2
    for name, g in grads[0].items():
        assert torch.allclose(g, grads[1][name], rtol=1e-5, atol=1e-7), name


def test_scoring_lowers_its_batch_for_large_logits():
    from memcap.loss import sequences_per_chunk

    model, idx = _trained_pair()
    full = sequence_nll_bits(model, idx, batch_size=10)
    limit = 2 * 16 * 64  # one sequence per pass
    assert sequences_per_chunk(2, 16, 64, limit) == 1
    assert torch.allclose(sequence_nll_bits(model, idx, batch_size=10, max_logits=limit), full,
                          rtol=1e-9)


def _loss_and_grads(model, idx, fused, weights=None):
    from memcap.loss import mean_token_nll

    model.zero_grad()
    loss = mean_token_nll(model, model.hidden(idx), idx, fused=fused)
    (loss if weights is None else loss * weights).sum().backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("n_models, vocab, batch, seq, d_model", [
    (1, 64, 3, 37, 8),      # one model, B·(S−1) = 108 < one block of 1,024 rows
    (2, 64, 40, 33, 16),    # 1,280 rows: a whole block and a part
    (1, 2048, 5, 17, 8),    # 80 rows: blocks of 32, 32 and 16
    (2, 2048, 3, 64, 32),   # 189 rows, not a multiple of 32
    (2, 300, 7, 9, 8),      # a vocabulary that divides nothing
])
def test_fused_loss_equals_the_logits_loss_and_its_gradients(n_models, vocab, batch, seq,
                                                             d_model):
    from memcap.loss import fused_block_rows

    model = PackedGPT(n_models, Shape(vocab, seq, 1, d_model))
    model.init_weights(list(range(n_models)))
    g = torch.Generator().manual_seed(vocab + batch)
    idx = torch.randint(0, vocab, (n_models, batch, seq), generator=g)
    # unequal upstream gradients per model, as any use of the (M,) loss may give
    weights = torch.arange(1.0, n_models + 1)
    ref_loss, ref = _loss_and_grads(model, idx, fused=False, weights=weights)
    loss, got = _loss_and_grads(model, idx, fused=True, weights=weights)
    assert loss.dtype == torch.float32 and loss.shape == (n_models,)
    assert (loss - ref_loss).abs().max() < 1e-5
    for name, grad in ref.items():
        assert (got[name] - grad).abs().max() < 1e-5, name
    assert batch * (seq - 1) % fused_block_rows(vocab)  # a part block at the end


def test_fused_loss_is_the_default_on_a_cpu_and_any_block_size_gives_it():
    from memcap.loss import fused_mean_token_nll, mean_token_nll

    model, idx = _trained_pair()
    h = model.hidden(idx)
    default = mean_token_nll(model, h, idx)
    assert torch.equal(default, fused_mean_token_nll(h, model.wte, idx))
    for rows in (1, 7, 150, 10_000):
        assert (fused_mean_token_nll(h, model.wte, idx, rows=rows) - default).abs().max() < 1e-6


def test_fused_loss_under_autocast_is_the_fp32_loss_of_its_inputs():
    from memcap.loss import mean_token_nll

    model, idx = _trained_pair()
    h16 = model.hidden(idx).detach().bfloat16()
    grads = []
    for fused in (False, True):
        model.zero_grad()
        h = h16.clone().requires_grad_()
        if fused:  # bf16 states under autocast: upcast, then an fp32 loss
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = mean_token_nll(model, h, idx, fused=True)
        else:  # the same states upcast by hand, no autocast
            loss = mean_token_nll(model, h.float(), idx, fused=False)
        assert loss.dtype == torch.float32
        loss.sum().backward()
        assert h.grad.dtype == torch.bfloat16
        grads.append((loss.detach(), h.grad.float(), model.wte.grad.clone()))
    (ref_loss, ref_h, ref_w), (got_loss, got_h, got_w) = grads
    assert (got_loss - ref_loss).abs().max() < 1e-5
    assert (got_w - ref_w).abs().max() < 1e-5
    assert (got_h - ref_h).abs().max() < 1e-5


def test_fused_loss_trains_as_the_logits_loss_through_adam():
    from memcap.stages.train import train_step, training_loss

    idx = torch.randint(0, 2048, (2, 24, 20), generator=torch.Generator().manual_seed(5))
    data = idx  # (M, N, S): every step draws from these sequences
    params = []
    for fused in (False, True):
        model = PackedGPT(2, Shape(2048, 20, 1, 16))
        model.init_weights([7, 8])
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
        loss_fn = training_loss(model, torch.device("cpu"), "fp32")
        if not fused:
            def loss_fn(batch, model=model):
                from memcap.loss import mean_token_nll
                return mean_token_nll(model, model.hidden(batch), batch, fused=False)
        losses = []
        for step in range(4):
            sel = torch.arange(step * 6, step * 6 + 6).expand(2, 6)
            losses.append(train_step(loss_fn, opt, data, sel))
        params.append((torch.stack(losses), dict(model.named_parameters())))
    (ref_losses, ref), (losses, got) = params
    assert (losses - ref_losses).abs().max() < 1e-5
    for name, p in ref.items():
        assert (got[name] - p).abs().max() < 1e-5, name


def test_fused_scores_equal_the_logits_scores():
    from memcap.loss import sequence_scores

    model = PackedGPT(2, Shape(2048, 16, 1, 16))
    model.init_weights([0, 1])
    toks = torch.randint(0, 2048, (2, 21, 16), generator=torch.Generator().manual_seed(4))
    ref_nll, ref_k = sequence_scores(model, toks, 8, min_k_frac=0.2, fused=False)
    nll, k = sequence_scores(model, toks, 8, min_k_frac=0.2, fused=True)
    assert nll.dtype == torch.float64 and nll.shape == (2, 21)
    # per sequence: 15 tokens of fp32 losses, in bits
    assert ((nll - ref_nll).abs() / ref_nll).max() < 1e-6
    assert (k - ref_k).abs().max() < 1e-5
