"""Model families (docs/science.md#model-families): the parameter count of every architecture
in the shipped configs equals the transformers model's; a trained run of each family,
exported, codes its samples in transformers as memcap scored them; bad family input is a
named config error; the family enters the run id, the records and the database."""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
import torch
import yaml

from conftest import CPU, REPO, evaluate_settings, make_cell, small_spec, write_data
from memcap.config import (
    ConfigError,
    arch_id,
    arch_shape,
    architectures,
    load_config,
    validate_config,
)
from memcap.io import read_json
from memcap.models import FAMILIES, build
from memcap.models.causal_lm import HF_CLASSES, load_causal_lm
from memcap.shapes import Shape, ShapeError, llama_intermediate_size
from memcap.stages.aggregate import collect_tables
from memcap.stages.evaluate import evaluate_cell
from memcap.stages.quantize import quantize_cell
from memcap.stages.score import score_cell
from memcap.stages.train import train_cell
from memcap.tokens import read_tokens

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
CONFIGS = sorted([REPO / "config.yaml", *(REPO / "configs").glob("*.yaml")])


def hf_param_count(shape: Shape) -> int:
    """sum(p.numel()) of the transformers model of the shape (built on the meta device: no
    memory; tied weights count once)."""
    config = build(shape, 1).hf_config(transformers)
    with torch.device("meta"):
        model = getattr(transformers, HF_CLASSES[shape.family])(config)
    return sum(p.numel() for p in model.parameters())


def test_every_configured_architecture_has_the_transformers_models_parameter_count():
    shapes = {}
    for path in CONFIGS:
        cfg = load_config(REPO / "config.yaml", path)  # as snakemake --configfile merges it
        shapes |= {repr(s): s for kind in ("synthetic", "text") if cfg[kind]["enabled"]
                   for s in (arch_shape(cfg, kind, a) for a in architectures(cfg, kind))}
    assert {s.family for s in shapes.values()} == set(FAMILIES) and len(shapes) > 20
    for shape in shapes.values():
        assert shape.params == hf_param_count(shape), shape


@pytest.mark.parametrize("family,options", [
    ("gpt2", {}), ("llama", {}), ("llama", {"tie_embeddings": False, "intermediate_size": 40}),
    ("mamba", {}), ("mamba", {"state_size": 8, "expand": 3, "conv_kernel": 2,
                              "time_step_rank": 3})])
def test_param_count_formula_equals_the_module_and_transformers(family, options):
    for n_layer, d in ((1, 16), (2, 32), (3, 48)):
        shape = Shape(100, 24, n_layer, d, 16, family, options)
        assert build(shape, 2).params_per_model() == shape.params == hf_param_count(shape)


def test_llama_intermediate_size_rule():
    # 8d/3 rounded up to a multiple of 8: three d × I matrices hold GPT-2's two d × 4d
    assert [llama_intermediate_size(d) for d in (8, 16, 32, 48, 64, 128)] == [
        24, 48, 88, 128, 176, 344]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny trained, scored and evaluated cell of each family (2 seeds, N 32)."""
    root = tmp_path_factory.mktemp("families")
    cells = {}
    for family in FAMILIES:
        spec = small_spec(family=family, options={}, n=32, steps=150, lr=0.02)
        train, held = write_data(root / "data", spec, [0, 1])
        cell = make_cell(root, spec, [0, 1], train, held, name=family,
                         checkpoint=f"{family}.pt")
        train_cell(cell, CPU, echo=lambda _line: None)
        score_cell(cell, CPU)
        evaluate_cell(cell, CPU, **evaluate_settings(mia_samples=32))
        cells[family] = cell
    return cells


@pytest.mark.parametrize("family", list(FAMILIES))
def test_an_exported_run_codes_its_samples_in_transformers_as_memcap_scored_them(
        trained, family, tmp_path):
    cell = trained[family]
    run = cell.run_dirs[1]
    out = subprocess.run([sys.executable, "-m", "memcap", "export-run", "--run", run, "--out",
                          str(tmp_path / "hf")], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert out.returncode == 0, out.stderr[-2000:]
    assert family in out.stdout
    assert read_json(tmp_path / "hf" / "config.json")["model_type"] == family
    theirs = load_causal_lm(tmp_path / "hf", "t", cell.spec.seq_len, torch.device("cpu"),
                            native=False)
    assert theirs.loader == "transformers" and theirs.params == cell.spec.params
    scores = pl.read_parquet(f"{run}/scores.parquet", hive_partitioning=False)
    members = scores.filter(pl.col("member") & pl.col("primary_reference")).sort("sample_id")
    ids, tokens = read_tokens(cell.train_data[1])
    order = np.argsort(ids)
    code = theirs.nll_bits(tokens[order], 64)
    assert len(code) == members.height == cell.spec.n
    assert np.abs(code - members["nll_bits"].to_numpy()).max() < 1e-3
    # and the run memorized: below the uniform code of (S−1)·log2 V bits
    assert code.mean() < 0.8 * (cell.spec.seq_len - 1) * math.log2(cell.spec.vocab_size)


@pytest.mark.parametrize("family", ["llama", "mamba"])
def test_every_family_quantizes_through_the_grids_stage(trained, family, tmp_path):
    """int8 keeps nearly every memorized bit of a llama and a mamba; GPTQ calibrates on the
    inputs each family's hidden() captures for every quantized matrix."""
    cell = trained[family]
    trained_bits = [read_json(f"{d}/score.json")["mem_bits"] for d in cell.run_dirs]
    for name in ("int8", "gptq-int4"):
        qcell = dataclasses.replace(cell.quantized(name),
                                    run_dirs=[tmp_path / f"{name}-{s}" for s in cell.seeds])
        records = quantize_cell(qcell, calibration_samples=32)
        assert records[0]["stored_bits_per_param"] < 16  # int8 and int4 matrices, fp32 rest
        bits = [r["mem_bits"] for r in score_cell(qcell, CPU)]
        if name == "int8":
            assert min(q / t for q, t in zip(bits, trained_bits, strict=True)) > 0.95


def test_the_family_is_in_the_run_id_records_and_tables(trained):
    ids = {f: trained[f].run_ids[0] for f in FAMILIES}
    assert ids == {"gpt2": "synthetic:V16:S16:L1-d16:fp32:n32:s0",
                   "llama": "synthetic:V16:S16:llama-L1-d16:fp32:n32:s0",
                   "mamba": "synthetic:V16:S16:mamba-L1-d16:fp32:n32:s0"}
    records = {f: read_json(f"{trained[f].run_dirs[0]}/run.json") for f in FAMILIES}
    assert {f: r["family"] for f, r in records.items()} == {f: f for f in FAMILIES}
    assert records["llama"]["options"] == {"tie_embeddings": True, "intermediate_size": 48}
    runs = collect_tables([d for f in FAMILIES for d in trained[f].run_dirs])["runs"]
    assert sorted(runs["family"].unique().to_list()) == sorted(FAMILIES)
    assert dict(runs.select("family", "params").unique().iter_rows()) == {
        f: trained[f].spec.params for f in FAMILIES}


def test_a_gpt2_cells_json_and_checkpoint_identity_carry_no_family():
    """A gpt2 cell's rule params and checkpoint identity read as before families existed, so
    adding families reruns nothing of a gpt2 grid; another family's carry it."""
    from memcap.cell import Cell, spec_record

    gpt2 = small_spec()
    assert "family" not in spec_record(gpt2) and "options" not in spec_record(gpt2)
    llama = small_spec(family="llama", options={"tie_embeddings": False})
    assert spec_record(llama)["options"] == {"tie_embeddings": False, "intermediate_size": 48}
    for spec in (gpt2, llama):
        cell = Cell("synthetic", spec, (0,), ("a",), ("b",), ("c",), "d")
        assert Cell.from_json(cell.to_json()) == cell


@pytest.fixture
def cfg():
    return yaml.safe_load((REPO / "config.yaml").read_text())


def _error(cfg) -> str:
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    return str(err.value)


def test_bad_family_input_is_a_named_config_error(cfg):
    bad = copy.deepcopy(cfg)
    bad["architectures"].append({"family": "rwkv", "n_layer": 1, "d_model": 16})
    assert "architectures[4].family" in _error(bad)
    bad = copy.deepcopy(cfg)
    bad["architectures"].append({"n_layer": 1, "d_model": 16, "state_size": 8})
    message = _error(bad)
    assert "'architectures[4].state_size'" in message and "mamba" in message
    assert "gpt2" in message
    bad = copy.deepcopy(cfg)
    bad["text"]["architectures"].append({"family": "mamba", "n_layer": 1, "d_model": 16,
                                         "tie_embeddings": False})
    assert "'text.architectures[2].tie_embeddings'" in _error(bad)
    bad = copy.deepcopy(cfg)
    bad["architectures"].append({"family": "llama", "n_layer": 1, "d_model": 24})
    message = _error(bad)
    assert "'architectures[4].d_model'" in message and "head_dim 16" in message
    bad["architectures"][-1]["d_model"] = 9  # one head of odd width: rotary cannot turn it
    assert "even head width" in _error(bad)
    with pytest.raises(ShapeError, match="unknown model family"):
        Shape(16, 16, 1, 16, 16, "rwkv")


def test_families_take_their_ids_and_options(cfg):
    cfg["architectures"] += [
        {"family": "llama", "n_layer": 1, "d_model": 16},
        {"family": "llama", "n_layer": 1, "d_model": 16, "tie_embeddings": False},
        {"family": "mamba", "n_layer": 2, "d_model": 8, "state_size": 16},  # the default
        {"family": "mamba", "n_layer": 2, "d_model": 8, "state_size": 4},
        {"family": "mamba", "n_layer": 2, "d_model": 24}]  # any width
    out = validate_config(cfg)
    assert [arch_id(a) for a in out["architectures"][4:]] == [
        "llama-L1-d16", "llama-L1-d16-untied", "mamba-L2-d8", "mamba-L2-d8-n4",
        "mamba-L2-d24"]
    assert [arch_id(a) for a in out["architectures"][:4]] == [
        "L1-d8", "L1-d16", "L2-d16", "L1-d32"]


def test_the_report_sets_each_familys_alpha_beside_gpt2s():
    from memcap.stages.report import _family_note

    laws = pl.DataFrame({"law": ["capacity"] * 3, "parameter": ["alpha"] * 3,
                         "family": ["gpt2", "llama", "mamba"], "precision": ["fp32"] * 3,
                         "value": [2.0, 2.2, 1.5], "ci_low": [1.9, 2.1, 1.4],
                         "ci_high": [2.1, 2.3, 1.6]})
    (note,) = _family_note(laws)
    assert "llama fp32: α 2.200 (2.100–2.300), 1.10× GPT-2's" in note
    assert "mamba fp32: α 1.500 (1.400–1.600), 0.75× GPT-2's" in note
    assert _family_note(laws.filter(pl.col("family") == "gpt2")) == []
