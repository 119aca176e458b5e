"""Shared fixtures: small real datasets, cells and runtimes for the real stage functions, and
the registry corpora (each artifact downloaded once per test session)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from memcap.cell import Cell, Runtime, TrainSpec, make_spec
from memcap.config import defaults
from memcap.corpus import ARTIFACTS, extract_documents, fetch_artifact
from memcap.stages.data import write_seed_datasets

REPO = Path(__file__).resolve().parents[1]


def small_spec(**overrides) -> TrainSpec:
    """A small cell's spec: the schema's train defaults, a tiny shape, overrides on top."""
    base = dict(vocab_size=16, seq_len=16, n_layer=1, d_model=16, precision="fp32", n=8,
                steps=300, batch_size=32, lr=0.03, eval_every=50, eval_samples=4096)
    base.update(overrides)
    return make_spec(**base)


def runtime(**overrides) -> Runtime:
    """The schema's runtime defaults on the CPU, with overrides."""
    return Runtime.defaults(**{"device": "cpu", **overrides})


CPU = runtime()


def evaluate_settings(**overrides) -> dict:
    """The schema's `evaluate:` defaults, with overrides."""
    return {**defaults("evaluate"), **overrides}


def make_cell(tmp_path: Path, spec: TrainSpec, seeds: list[int], train: list[Path],
              heldout: list[Path], name: str = "run", checkpoint: str = "ckpt.pt",
              **kwargs) -> Cell:
    """A synthetic cell (or kind=... in kwargs) over existing data files, its run folders
    tmp_path/<name>-<seed>."""
    return Cell(kind=kwargs.pop("kind", "synthetic"), spec=spec, seeds=seeds, train_data=train,
                heldout_data=heldout, run_dirs=[tmp_path / f"{name}-{s}" for s in seeds],
                checkpoint=tmp_path / checkpoint, **kwargs)


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


SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]


def snakemake(workdir, *args, configfile=None, timeout=900):
    """Run the workflow in workdir (the smoke config unless told otherwise)."""
    cmd = [*SNAKEMAKE, "--directory", str(workdir),
           "--configfile", str(configfile or REPO / "configs/smoke.yaml"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def smoke(tmp_path_factory):
    """The smoke config run locally once per test session: its working directory."""
    workdir = tmp_path_factory.mktemp("smoke")
    shutil.copy(REPO / "config.yaml", workdir / "config.yaml")
    out = snakemake(workdir, "--cores", "2")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return workdir
