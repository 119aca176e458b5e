import numpy as np
import pytest

from memcap.stages.data import write_synthetic
from memcap.streams import uniform_tokens
from memcap.tokens import HELDOUT_ID_OFFSET, read_tokens


def test_dataset_of_size_n_is_a_prefix_of_any_larger_one(tmp_path):
    write_synthetic(tmp_path / "a.parquet", seed=3, split="train", n=50, seq_len=8, vocab_size=100)
    write_synthetic(tmp_path / "b.parquet", seed=3, split="train", n=200, seq_len=8,
                    vocab_size=100, chunk=64)
    ids_a, a = read_tokens(tmp_path / "a.parquet")
    ids_b, b = read_tokens(tmp_path / "b.parquet")
    assert np.array_equal(a, b[:50])
    assert np.array_equal(ids_a, np.arange(50)) and np.array_equal(ids_b, np.arange(200))


def test_random_access_matches_sequential_generation():
    whole = uniform_tokens(1, "train", 0, 100, 16, 2048)
    middle = uniform_tokens(1, "train", 40, 10, 16, 2048)
    assert np.array_equal(whole[40:50], middle)


def test_streams_and_seeds_differ():
    a = uniform_tokens(0, "train", 0, 64, 16, 2048)
    assert not np.array_equal(a, uniform_tokens(1, "train", 0, 64, 16, 2048))
    assert not np.array_equal(a, uniform_tokens(0, "heldout", 0, 64, 16, 2048))
    assert (a[:, :, None] == uniform_tokens(0, "heldout", 0, 64, 16, 2048)[:, None, :]).mean() \
        < 0.01


def test_tokens_are_uniform_over_the_vocabulary():
    toks = uniform_tokens(7, "train", 0, 4000, 32, 64)  # 128,000 draws over 64 ids
    assert toks.min() == 0 and toks.max() == 63
    counts = np.bincount(toks.ravel(), minlength=64)
    expected = toks.size / 64
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 120  # 63 degrees of freedom: p ≈ 3e-5 above 120


def test_heldout_ids_never_collide_with_train_ids(tmp_path):
    write_synthetic(tmp_path / "h.parquet", seed=0, split="heldout", n=10, seq_len=4,
                    vocab_size=5)
    ids, toks = read_tokens(tmp_path / "h.parquet")
    assert ids.min() == HELDOUT_ID_OFFSET and toks.shape == (10, 4)


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="dataset size"):
        write_synthetic(tmp_path / "x.parquet", seed=0, split="train", n=0, seq_len=4,
                        vocab_size=5)
    with pytest.raises(ValueError, match="split"):
        uniform_tokens(0, "test", 0, 1, 4, 5)
    with pytest.raises(FileNotFoundError, match="missing.parquet"):
        read_tokens(tmp_path / "missing.parquet")
