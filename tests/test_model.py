import torch

from memcap.model import PackedGPT, param_count, sequence_nll_bits


def test_param_count_matches_the_papers_counts():
    assert param_count(2048, 64, 1, 32) == 80_352
    assert param_count(2048, 64, 2, 128) == 667_136
    assert param_count(2048, 64, 8, 256) == 6_859_264
    # the text models of the paper (GPT-2 tokenizer, 8 layers)
    assert [param_count(50257, 64, 8, d) for d in (32, 64, 128, 256)] == [
        1_711_968, 3_620_544, 8_027_520, 19_200_768]


def test_built_model_has_exactly_p_parameters():
    for n_layer, d in ((1, 32), (2, 128), (8, 256)):
        model = PackedGPT(1, 2048, 64, n_layer, d, max(1, d // 16))
        assert sum(p.numel() for p in model.parameters()) == param_count(2048, 64, n_layer, d)
    packed = PackedGPT(3, 64, 32, 1, 16, 1)
    assert packed.params_per_model() == param_count(64, 32, 1, 16)


def test_attention_is_causal():
    model = PackedGPT(2, 32, 12, 2, 16, 2)
    model.init_weights([0, 1])
    idx = torch.randint(0, 32, (2, 3, 12), generator=torch.Generator().manual_seed(0))
    changed = idx.clone()
    changed[:, :, 7] = (changed[:, :, 7] + 1) % 32
    a, b = model(idx), model(changed)
    assert torch.allclose(a[:, :, :7], b[:, :, :7], atol=1e-6)
    assert not torch.allclose(a[:, :, 7:], b[:, :, 7:], atol=1e-6)


def test_packed_models_are_independent_and_match_single_models():
    packed = PackedGPT(2, 32, 8, 1, 16, 1)
    packed.init_weights([3, 4])
    single = PackedGPT(1, 32, 8, 1, 16, 1)
    single.init_weights([4])
    assert torch.equal(packed.wte[1], single.wte[0])
    idx = torch.randint(0, 32, (2, 5, 8), generator=torch.Generator().manual_seed(1))
    out_packed = packed(idx)[1]
    out_single = single(idx[1:])[0]
    assert torch.allclose(out_packed, out_single, atol=1e-5)


def test_untrained_code_length_is_near_uniform():
    # an initialised GPT-2 predicts nearly uniformly: nll ≈ (S−1)·log2 V
    model = PackedGPT(1, 64, 16, 1, 16, 1)
    model.init_weights([0])
    idx = torch.randint(0, 64, (1, 50, 16), generator=torch.Generator().manual_seed(2))
    bits = sequence_nll_bits(model, idx, batch_size=16)
    assert bits.shape == (1, 50)
    assert abs(bits.mean().item() - 15 * 6) < 0.5


def test_train_flops_per_token_and_peaks():
    from memcap.shapes import peak_flops, train_flops_per_token

    # L2-d128, V 2048, S 64: 3 × (2·(2·12·128² + 4·64·128) + 2·2048·128)
    assert train_flops_per_token(2048, 64, 2, 128) == 3 * (2 * (24 * 128**2 + 4 * 64 * 128)
                                                          + 2 * 2048 * 128)
    assert peak_flops("NVIDIA H100 80GB HBM3", "bf16") == 989.4e12
    assert peak_flops("Some other GPU", "fp32") is None


def _trained_pair():
    model = PackedGPT(2, 64, 16, 1, 16, 1)
    model.init_weights([0, 1])
    idx = torch.randint(0, 64, (2, 10, 16), generator=torch.Generator().manual_seed(3))
    return model, idx


def test_chunked_loss_equals_the_whole_batch_loss_and_gradients():
    from memcap.model import mean_token_nll, sequences_per_chunk

    model, idx = _trained_pair()
    # a limit of 3 sequences per chunk: chunks of 3, 3, 3 and 1 over B = 10
    limit = 3 * 2 * 16 * 64
    assert sequences_per_chunk(2, 16, 64, limit) == 3
    grads = []
    for max_logits in (2**29, limit):
        model.zero_grad()
        loss = mean_token_nll(model, model.hidden(idx), idx, max_logits=max_logits)
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
    from memcap.model import sequences_per_chunk

    model, idx = _trained_pair()
    full = sequence_nll_bits(model, idx, batch_size=10)
    limit = 2 * 16 * 64  # one sequence per pass
    assert sequences_per_chunk(2, 16, 64, limit) == 1
    assert torch.allclose(sequence_nll_bits(model, idx, batch_size=10, max_logits=limit), full,
                          rtol=1e-9)
