import copy
import math

import pytest
import yaml

from conftest import REPO
from memcap.config import (
    ConfigError,
    cells,
    load_config,
    text_vocab_size,
    train_spec,
    validate_config,
)
from memcap.shapes import Shape


@pytest.fixture
def cfg():
    return yaml.safe_load((REPO / "config.yaml").read_text())


@pytest.mark.parametrize("name", ["config.yaml", "configs/smoke.yaml",
                                  "configs/paper-synthetic.yaml"])
def test_shipped_configs_are_valid(name):
    cfg = load_config(str(REPO / name))
    assert cfg["train"]["steps"] >= 1


def test_the_paper_shape_configs_put_n_on_both_sides_of_each_capacity():
    """gpu-small and laptop: N below and above each architecture's capacity at the paper's
    3.6 bits per parameter (693 bits per sequence at V 2048, S 64)."""
    for name in ("configs/gpu-small.yaml", "configs/laptop.yaml"):
        cfg = merged(name)
        assert (cfg["synthetic"]["vocab_size"], cfg["synthetic"]["seq_len"]) == (2048, 64)
        assert cfg["train"]["schedule"] == "plateau" and not cfg["text"]["enabled"]
        for a in cfg["architectures"]:
            capacity_n = 3.6 * Shape(2048, 64, a["n_layer"], a["d_model"]).params / (63 * 11)
            assert min(a["dataset_sizes"]) < capacity_n < max(a["dataset_sizes"]), a


def merged(name: str) -> dict:
    """A named config merged over config.yaml, as `snakemake --configfile NAME` does."""
    def merge(base: dict, over: dict) -> dict:
        for key, value in over.items():
            base[key] = (merge(base[key], value) if isinstance(value, dict)
                         and isinstance(base.get(key), dict) else value)
        return base
    base = yaml.safe_load((REPO / "config.yaml").read_text())
    return validate_config(merge(base, yaml.safe_load((REPO / name).read_text())))


def test_paper_text_config_is_the_papers_text_setup():
    cfg = merged("configs/paper-text.yaml")
    assert not cfg["synthetic"]["enabled"] and cfg["text"]["enabled"]
    assert cfg["text"]["tokenizer"] == "gpt2" and text_vocab_size(cfg) == 50257
    assert cfg["text"]["seq_len"] == 64
    archs = [(a["n_layer"], a["d_model"]) for a in cfg["text"]["architectures"]]
    assert archs == [(8, 32), (8, 64), (8, 128), (8, 256)]
    assert [Shape(50257, 64, L, d).params for L, d in archs] == [
        1_711_968, 3_620_544, 8_027_520, 19_200_768]
    sizes = cfg["text"]["dataset_sizes"]
    assert all(n & (n - 1) == 0 for n in sizes)
    assert cells(cfg, "synthetic") == [] and len(cells(cfg, "text")) == 4 * len(sizes)


def test_text_section_rules(cfg):
    text = copy.deepcopy(cfg)
    del text["text"]["dataset_sizes"]
    assert "text.dataset_sizes" in _error(text)
    local = copy.deepcopy(cfg)
    local["text"]["source"] = "local"
    assert "text.local_path" in _error(local)
    oracle = copy.deepcopy(cfg)
    oracle["text"]["oracle"] = "L1-d32:fp32:n999:s0"
    assert "text.oracle" in _error(oracle) and "999" in _error(oracle)
    none = copy.deepcopy(cfg)
    none["synthetic"]["enabled"] = none["text"]["enabled"] = False
    assert "nothing to run" in _error(none)
    bad = copy.deepcopy(cfg)
    bad["text"]["corpora"] = ["wikipedia"]
    assert "text.corpora" in _error(bad)
    # text-only training overrides reach text cells, not synthetic ones
    cfg["text"]["train"] = {"lr": 0.005}
    cfg = validate_config(cfg)
    assert train_spec(cfg, "text", "L1-d16", "fp32", 32)["lr"] == 0.005
    assert train_spec(cfg, "text", "L1-d16", "fp32", 32)["vocab_size"] == 512
    assert train_spec(cfg, "synthetic", "L1-d16", "fp32", 32)["lr"] == cfg["train"]["lr"]


def test_paper_config_is_the_papers_grid():
    cfg = load_config(str(REPO / "configs/paper-synthetic.yaml"))
    assert (cfg["synthetic"]["vocab_size"], cfg["synthetic"]["seq_len"]) == (2048, 64)
    shapes = {(a["n_layer"], a["d_model"]) for a in cfg["architectures"]}
    assert shapes == {(L, d) for L in (1, 2, 4, 8) for d in (32, 64, 128, 256)}
    assert cfg["synthetic"]["dataset_sizes"][0] == 2**12
    assert all(n & (n - 1) == 0 for n in cfg["synthetic"]["dataset_sizes"])
    assert len(cfg["seeds"]) == 5 and set(cfg["precisions"]) == {"bf16", "fp32"}
    assert (cfg["train"]["max_steps"], cfg["train"]["batch_size"]) == (10**6, 2048)
    # the adaptive budget: the paper's 10^6 steps only where 250 passes call for them
    assert cfg["train"]["schedule"] == "plateau"
    steps = {(a, n): train_spec(cfg, "synthetic", a, "bf16", n)["steps"]
             for a in ("L1-d32", "L8-d256") for n in (2**12, 2**20, 2**23)}
    assert steps["L1-d32", 2**12] == 2000  # the floor
    assert steps["L1-d32", 2**20] == 250 * 2**20 // 2048
    assert steps["L1-d32", 2**23] == steps["L8-d256", 2**23] == 10**6  # the cap
    p = Shape(2048, 64, 8, 256).params  # 1,000 tokens per parameter
    assert steps["L8-d256", 2**12] == math.ceil(1000 * p / (2048 * 64))


def test_defaults_are_filled(cfg):
    del cfg["train"]["schedule"]
    del cfg["runtime"]
    out = validate_config(cfg)
    assert out["train"]["schedule"] == "cosine" and out["runtime"]["threads"] == 1
    assert out["runtime"]["compile"] == "auto" and out["runtime"]["cuda_graphs"] is True


def test_compile_setting_is_checked(cfg):
    cfg["runtime"]["compile"] = "sometimes"
    msg = _error(cfg)
    assert "runtime.compile" in msg and "auto" in msg


def _error(cfg) -> str:
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    return str(err.value)


def test_unknown_key_is_named(cfg):
    cfg["train"]["learning_rate"] = 0.1
    msg = _error(cfg)
    assert "'train'" in msg and "learning_rate" in msg


def test_unknown_top_level_key_is_named(cfg):
    cfg["sedes"] = [0]
    assert "sedes" in _error(cfg)


def test_wrong_type_is_named(cfg):
    cfg["train"]["eps"] = "1e-8"  # what YAML makes of 1e-8 without a dot
    msg = _error(cfg)
    assert "train.eps" in msg and "number" in msg


def test_non_finite_number_is_named(cfg):
    cfg["train"]["lr"] = float("nan")  # YAML .nan: passes every schema bound
    msg = _error(cfg)
    assert "train.lr" in msg and "finite" in msg


def test_empty_grid_is_named(cfg):
    cfg["synthetic"]["dataset_sizes"] = []
    msg = _error(cfg)
    assert "synthetic.dataset_sizes" in msg and "empty" in msg


def test_negative_size_is_named(cfg):
    cfg["synthetic"]["dataset_sizes"] = [16, -4]
    assert "synthetic.dataset_sizes[1]" in _error(cfg)


def test_negative_architecture_size_is_named(cfg):
    cfg["architectures"][1]["d_model"] = -16
    assert "architectures[1].d_model" in _error(cfg)


def test_duplicate_architecture_and_head_dim(cfg):
    dup = copy.deepcopy(cfg)
    dup["architectures"].append(dict(dup["architectures"][0]))
    assert "more than once" in _error(dup)
    cfg["architectures"].append({"n_layer": 1, "d_model": 24})
    assert "head_dim" in _error(cfg)


def test_architecture_override_reaches_only_its_cells(cfg):
    cfg["architectures"][0]["train"] = {"lr": 0.1}
    cfg = validate_config(cfg)
    assert train_spec(cfg, "synthetic", "L1-d8", "fp32", 16)["lr"] == 0.1
    assert train_spec(cfg, "synthetic", "L1-d16", "fp32", 16)["lr"] == cfg["train"]["lr"]


def test_verify_defaults_to_the_largest_model(cfg):
    out = validate_config(cfg)
    assert out["verify"]["arch"] == "L1-d32" and out["verify"]["precision"] == "fp32"
    cfg["verify"] = {"arch": "L9-d9"}
    assert "verify.arch" in _error(cfg)


def test_min_passes_raises_the_steps_of_large_datasets_only(cfg):
    cfg["train"].update(steps=1500, batch_size=64, min_passes=150)
    cfg["architectures"][0]["train"] = {"min_passes": 300}
    out = validate_config(cfg)
    steps = {(a, n): train_spec(out, "synthetic", a, "fp32", n)["steps"]
             for a in ("L1-d8", "L1-d32") for n in (16, 512, 9459)}
    # 1,500 steps at batch 64 already give 512 samples 187.5 passes
    assert steps["L1-d32", 16] == steps["L1-d32", 512] == 1500
    assert steps["L1-d32", 9459] == math.ceil(150 * 9459 / 64)  # 22,170
    assert steps["L1-d8", 512] == 2400 and steps["L1-d8", 9459] == math.ceil(300 * 9459 / 64)
    # a budget key is resolved, not a field of the spec: editing it where it changes no step
    # count leaves those cells' specs (and so their cached results) as they were
    spec = train_spec(out, "synthetic", "L1-d32", "fp32", 16)
    assert "min_passes" not in spec
    cfg["train"]["min_passes"] = 100
    assert train_spec(validate_config(cfg), "synthetic", "L1-d32", "fp32", 16) == spec
    cfg["train"]["min_passes"] = -1
    assert "train.min_passes" in _error(cfg)


def test_budget_follows_model_size_within_a_cap(cfg):
    cfg["train"].update(steps=100, batch_size=64, min_passes=0, tokens_per_param=200,
                        max_steps=5000)
    out = validate_config(cfg)
    seq = cfg["synthetic"]["seq_len"]

    def steps(arch, n):
        return train_spec(out, "synthetic", arch, "fp32", n)["steps"]

    p8, p32 = (Shape(64, seq, 1, d).params for d in (8, 32))
    # at least 200 tokens per parameter: the larger model gets the larger budget
    assert steps("L1-d8", 512) == math.ceil(200 * p8 / (64 * seq))  # 162
    assert steps("L1-d32", 512) == math.ceil(200 * p32 / (64 * seq))  # 1,547
    assert steps("L1-d8", 16) == math.ceil(200 * p8 / (16 * seq))  # batch: all 16 samples
    cfg["train"]["tokens_per_param"] = 2000  # L1-d32 would want 15,469 steps: capped
    assert train_spec(validate_config(cfg), "synthetic", "L1-d32", "fp32", 512)["steps"] == 5000


def test_dataset_sizes_per_architecture(cfg):
    cfg["architectures"][0]["dataset_sizes"] = [4, 8]
    out = validate_config(cfg)
    ns = {(c["arch"], c["n"]) for c in cells(out, "synthetic")}
    assert {n for a, n in ns if a == "L1-d8"} == {4, 8}
    assert {n for a, n in ns if a == "L1-d32"} == set(cfg["synthetic"]["dataset_sizes"])
    cfg["architectures"][0]["dataset_sizes"] = [0]
    assert "architectures[0].dataset_sizes[0]" in _error(cfg)
    del cfg["architectures"][0]["dataset_sizes"]
    cfg["text"]["architectures"][0]["dataset_sizes"] = [16]
    assert "text.architectures[0].dataset_sizes" in _error(cfg)


@pytest.mark.parametrize("setting, key, value", [
    ({"schedule": "plateau"}, "decay_frac", 0.25),
    ({"optimizer": "muon"}, "muon_momentum", 0.9)])
def test_keys_of_one_setting_reach_only_its_cells(cfg, setting, key, value):
    cfg["train"]["schedule"] = "cosine"
    cfg["architectures"][0]["train"] = setting
    before = validate_config(copy.deepcopy(cfg))
    cfg["train"][key] = value
    after = validate_config(cfg)
    # a cell on another setting: its spec (its identity, its cached results) does not move ...
    assert (train_spec(after, "synthetic", "L1-d32", "fp32", 64)
            == train_spec(before, "synthetic", "L1-d32", "fp32", 64))
    # ... the cell that reads the key: its spec does
    assert train_spec(after, "synthetic", "L1-d8", "fp32", 64)[key] == value


def test_an_unknown_optimizer_is_refused(cfg):
    cfg["train"]["optimizer"] = "sgd"
    assert "train.optimizer" in _error(cfg)
