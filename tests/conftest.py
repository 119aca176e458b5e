"""Shared fixtures: small real datasets and a helper that trains a real packed model."""

from __future__ import annotations

from pathlib import Path

import pytest

from memcap.data import write_seed_datasets
from memcap.train import TrainSpec

REPO = Path(__file__).resolve().parents[1]


def small_spec(**overrides) -> TrainSpec:
    base = dict(vocab_size=16, seq_len=16, n_layer=1, d_model=16, precision="fp32", n=8,
                steps=300, batch_size=32, lr=0.03, eval_every=50, eval_samples=4096)
    base.update(overrides)
    return TrainSpec(**base)


def write_data(root: Path, spec: TrainSpec, seeds: list[int], heldout: int = 64):
    """Train and held-out files for every seed; returns (train paths, held-out paths)."""
    return write_seed_datasets(root, seeds, spec.n, spec.seq_len, spec.vocab_size, heldout)


@pytest.fixture
def quiet():
    return lambda _line: None
