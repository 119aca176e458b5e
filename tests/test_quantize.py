"""Post-training quantization (memcap.quantization, the quantize stage): schemes, error
bounds, exact bit counts, a lossless scheme that scores as the original, and the stage
followed by the real score and evaluate stages on a trained cell."""

import copy
import dataclasses

import pytest
import torch

from conftest import CPU, evaluate_settings, make_cell, small_spec, write_data
from memcap.config import ConfigError, load_config, validate_config
from memcap.io import read_json
from memcap.loss import sequence_nll_bits
from memcap.models import PackedGPT, load_packed, save_model
from memcap.quantization import (
    QuantizedMatrix,
    Scheme,
    SchemeError,
    gptq_matrix,
    quantize_matrix,
    quantize_state,
    read_state,
    save_quantized,
    torchao_dequantize,
)
from memcap.shapes import Shape
from memcap.stages.evaluate import evaluate_cell
from memcap.stages.quantize import quantize_cell
from memcap.stages.score import score_cell
from memcap.stages.train import train_cell

INT_SCHEMES = ["int8", "int4", "int4-g8", "int3-g8", "int2-g8", "int2"]


@pytest.mark.parametrize("name", [*INT_SCHEMES, "bf16"])
def test_a_scheme_name_round_trips(name):
    scheme = Scheme.parse(name)
    assert scheme.name == name and scheme.bits == (16 if name == "bf16" else int(name[3]))


@pytest.mark.parametrize("name", ["int1", "int9", "int16", "fp8", "int4-g0", "int4g8", "INT4"])
def test_an_unknown_scheme_is_named(name):
    with pytest.raises(SchemeError, match="unknown quantization scheme.*int{b}-g{G}"):
        Scheme.parse(name)


@pytest.mark.parametrize("name", INT_SCHEMES)
@pytest.mark.parametrize("axis", [0, 1])
def test_dequantized_weights_lie_within_half_a_step(name, axis):
    scheme = Scheme.parse(name)
    g = torch.Generator().manual_seed(0)
    w = torch.randn(24, 32, generator=g) * 0.05 + 0.01 * torch.randn(24, 1, generator=g)
    m = quantize_matrix(w, axis, scheme, "a test matrix")
    rows = 32 if axis == 0 else 24
    inputs = 24 if axis == 0 else 32
    group = scheme.group or inputs
    assert m.q.shape == (rows, inputs) and m.scale.shape == (rows, inputs // group)
    assert int(m.q.max()) <= 2 ** scheme.bits - 1 and m.q.dtype == torch.uint8
    deq = m.dequantize()
    assert deq.shape == w.shape
    step = m.scale.float().repeat_interleave(group, 1)
    step = step if axis == 1 else step.t()
    # half a step, plus the fp16 rounding of the step across 2^b levels at the far end
    bound = step * (0.5 + 2 ** scheme.bits * 2 ** -11)
    assert bool(((w - deq).abs() <= bound).all())
    # memcap's dequantization is torchao's, to the bit
    assert torch.equal(torchao_dequantize(m), deq)


@pytest.mark.parametrize("name", ["int8", "int4-g8", "int2"])
def test_a_row_of_tiny_weights_keeps_the_bound(name):
    """A row whose range is below 255 fp16 subnormals: its step is held at fp16's smallest
    normal number, so the grid still covers the row (a subnormal step would not)."""
    scheme = Scheme.parse(name)
    w = torch.linspace(0.0017, 0.0038, 64).reshape(4, 16)
    w[0] = torch.linspace(-0.3, 0.4, 16)  # one ordinary row beside
    m = quantize_matrix(w, 1, scheme, "tiny rows")
    step = m.scale.float().repeat_interleave(scheme.group or 16, 1)
    assert float(m.scale.float().min()) >= torch.finfo(torch.float16).tiny
    assert bool(((w - m.dequantize()).abs() <= step * (0.5 + 2 ** scheme.bits * 2 ** -11)).all())


def test_stored_bits_are_counted_exactly():
    state = {"wte": torch.randn(64, 16), "blocks.0.fc_w": torch.randn(16, 64),
             "blocks.0.fc_b": torch.randn(64)}
    axes = {"wte": 1, "blocks.0.fc_w": 0}
    _, stored = quantize_state(state, axes, Scheme.parse("int4-g8"))
    # 2 matrices of 1,024 weights at 4 bits, 2 × 128 groups of (fp16 scale + 4-bit zero), and
    # 64 fp32 biases
    assert stored["record"]["stored_bits"] == 2048 * 4 + 256 * (16 + 4) + 64 * 32
    _, stored = quantize_state(state, axes, Scheme.parse("int8"))  # one group per row
    assert stored["record"]["stored_bits"] == 2048 * 8 + (64 + 64) * (16 + 8) + 64 * 32
    _, stored = quantize_state(state, axes, Scheme.parse("bf16"))
    assert stored["record"]["stored_bits"] == 16 * (2048 + 64)


def test_a_group_that_does_not_divide_the_width_is_named():
    with pytest.raises(SchemeError, match="group size 16 does not divide the input width 8 of "
                                          "wte of L1-d8"):
        quantize_state({"wte": torch.randn(64, 8)}, {"wte": 1}, Scheme.parse("int4-g16"),
                       "L1-d8")


def _on_int8_grid(model: PackedGPT) -> None:
    """Put every weight matrix on a per-row int8 grid that asymmetric RTN keeps: each row's
    integers span 0..255 around a zero point, with a power-of-two scale (exact in fp16)."""
    g = torch.Generator().manual_seed(1)
    axes = model.input_axes({k: v[0] for k, v in model.state_dict().items()})
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name not in axes:
                continue
            for m in range(p.shape[0]):
                rows = p[m] if axes[name] == 1 else p[m].t()
                q = torch.randint(0, 256, rows.shape, generator=g).float()
                q[:, 0], q[:, 1] = 0, 255
                zero = torch.randint(1, 255, (rows.shape[0], 1), generator=g).float()
                rows.copy_((q - zero) * 2.0 ** -9)


def test_a_scheme_that_keeps_every_weight_scores_as_the_original(tmp_path):
    spec = small_spec(vocab_size=32, d_model=16)
    model = PackedGPT(1, Shape(spec.vocab_size, spec.seq_len, 1, 16))
    model.init_weights([0])
    _on_int8_grid(model)
    save_model(model, 0, tmp_path / "trained.safetensors")
    state = read_state(tmp_path / "trained.safetensors")
    record = save_quantized(state, PackedGPT.input_axes(state), Scheme.parse("int8"),
                            tmp_path / "int8.safetensors")
    assert record["max_error_steps"] == 0.0 and record["torchao_max_abs_diff"] == 0.0
    tokens = torch.randint(0, spec.vocab_size, (1, 64, spec.seq_len))
    trained = load_packed(spec.shape, [tmp_path / "trained.safetensors"], torch.device("cpu"))
    quantized = load_packed(spec.shape, [tmp_path / "int8.safetensors"], torch.device("cpu"))
    a = sequence_nll_bits(trained, tokens, 64)
    b = sequence_nll_bits(quantized, tokens, 64)
    assert float((a - b).abs().max()) < 1e-3
    # int4 on the same weights loses information: the scores move
    save_quantized(state, PackedGPT.input_axes(state), Scheme.parse("int4"),
                   tmp_path / "int4.safetensors")
    c = sequence_nll_bits(load_packed(spec.shape, [tmp_path / "int4.safetensors"],
                                      torch.device("cpu")), tokens, 64)
    assert float((a - c).abs().max()) > 1e-2


def test_the_stored_file_holds_integers_and_reads_back_dequantized(tmp_path):
    state = {"wte": torch.randn(32, 8), "lnf_w": torch.ones(8)}
    save_quantized(state, {"wte": 1}, Scheme.parse("int3-g4"), tmp_path / "m.safetensors")
    from safetensors import safe_open
    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as fh:
        stored = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    assert sorted(stored) == ["lnf_w", "wte.q", "wte.scale", "wte.zero"]
    assert stored["wte.q"].dtype == torch.uint8 and int(stored["wte.q"].max()) <= 7
    assert stored["wte.scale"].dtype == torch.float16 and stored["wte.scale"].shape == (32, 2)
    back = read_state(tmp_path / "m.safetensors")
    m = QuantizedMatrix(stored["wte.q"], stored["wte.scale"], stored["wte.zero"], 1)
    assert torch.equal(back["wte"], m.dequantize()) and torch.equal(back["lnf_w"], state["lnf_w"])


def test_the_stage_quantizes_scores_and_evaluates_a_trained_cell(tmp_path, quiet):
    """A trained cell, memorizing nearly all of a small dataset: int8 keeps nearly every bit
    and the membership signal; int2 loses most bits. Scored and evaluated by the grid's own
    stage functions, under run ids that carry the scheme."""
    spec = small_spec(n=16, steps=300, lr=0.03)
    seeds = [0, 1]
    train, held = write_data(tmp_path / "data", spec, seeds)
    cell = make_cell(tmp_path, spec, seeds, train, held)
    train_cell(cell, CPU, echo=quiet)
    trained = score_cell(cell, CPU)
    evaluate_cell(cell, CPU, **evaluate_settings(mia_samples=16))
    kept = {}
    for name in ("int8", "int2"):
        qcell = cell.quantized(name)
        # the quantized runs' folders are their own (the path template), not the trained runs'
        qcell = dataclasses.replace(qcell, run_dirs=[tmp_path / f"{name}-{s}" for s in seeds])
        records = quantize_cell(qcell)
        score_cell(qcell, CPU)  # the rule's next two stages, on the quantized cell
        evaluate_cell(qcell, CPU, **evaluate_settings(mia_samples=16))
        assert [r["run_id"] for r in records] == [f"{r}+{name}" for r in cell.run_ids]
        assert [r["trained_run_id"] for r in records] == cell.run_ids
        scores = [read_json(f"{d}/score.json") for d in qcell.run_dirs]
        evaluation = [read_json(f"{d}/evaluation.json") for d in qcell.run_dirs]
        assert [s["run_id"] for s in scores] == [e["run_id"] for e in evaluation] == qcell.run_ids
        kept[name] = [q["mem_bits"] / t["mem_bits"] for q, t in zip(scores, trained,
                                                                      strict=True)]
        if name == "int8":
            assert all(ev["mia"][0]["auc"] > 0.9 for ev in evaluation)
    assert min(kept["int8"]) > 0.95
    assert max(kept["int2"]) < 0.5


def test_config_names_bad_schemes_before_any_job():
    base = load_config("config.yaml")
    for schemes, match in ((["int9"], r"'quantize.schemes\[0\]': unknown quantization scheme"),
                           (["int8", "int4-g32"], r"'quantize.schemes\[1\]'.*group size 32 "
                                                  "does not divide the input width 8 of "
                                                  "synthetic architecture L1-d8")):
        cfg = copy.deepcopy(base)
        cfg["quantize"] = {"schemes": schemes}
        with pytest.raises(ConfigError, match=match):
            validate_config(cfg)
    cfg = copy.deepcopy(base)
    cfg["audit"] = {"enabled": False, "quantize": ["int5-x"]}
    with pytest.raises(ConfigError, match=r"'audit.quantize\[0\]': unknown"):
        validate_config(cfg)
    assert validate_config(base)["quantize"]["schemes"] == ["int8", "int4"]


def test_gptq_fits_the_layer_outputs_better_than_rounding():
    """GPTQ's objective: the error of the layer's outputs on its calibration inputs, below
    round to nearest's on the same grid for every bit width, per channel and in groups."""
    g = torch.Generator().manual_seed(0)
    # correlated inputs, as activations are: rounding errors can be compensated
    x = torch.randn(512, 32, generator=g) @ (torch.eye(32) + 0.5 * torch.randn(32, 32,
                                                                               generator=g))
    w = torch.randn(32, 48, generator=g) * 0.1  # (din, dout): inputs along axis 0
    for name in ("int4", "int3-g8", "int2"):
        rtn = quantize_matrix(w, 0, Scheme.parse(name), "w").dequantize()
        gptq_m = gptq_matrix(w, 0, Scheme.parse(f"gptq-{name}"), x, "w")
        gptq = gptq_m.dequantize()
        assert torch.equal(torchao_dequantize(gptq_m), gptq)
        err_rtn = float((x @ (w - rtn)).pow(2).mean())
        err_gptq = float((x @ (w - gptq)).pow(2).mean())
        assert err_gptq < 0.8 * err_rtn, (name, err_gptq, err_rtn)


def test_gptq_on_a_trained_cell_keeps_more_than_rounding(tmp_path, quiet):
    """On a trained synthetic cell, calibrated on fresh sequences of the seed's calibration
    stream: GPTQ at 3 bits keeps at least as many memorized bits as rounding does; the
    calibration stream is neither the training nor the held-out data."""
    from memcap.streams import uniform_tokens
    spec = small_spec(n=16, steps=300, lr=0.03)
    seeds = [0]
    train, held = write_data(tmp_path / "data", spec, seeds)
    cell = make_cell(tmp_path, spec, seeds, train, held)
    train_cell(cell, CPU, echo=quiet)
    calib = uniform_tokens(0, "calibration", 0, 16, spec.seq_len, spec.vocab_size)
    for split in ("train", "heldout"):
        other = uniform_tokens(0, split, 0, 16, spec.seq_len, spec.vocab_size)
        assert not (calib == other).all(1).any()
    kept = {}
    for name in ("int3", "gptq-int3"):
        qcell = dataclasses.replace(cell.quantized(name),
                                    run_dirs=[tmp_path / f"{name}-{s}" for s in seeds])
        records = quantize_cell(qcell, calibration_samples=64)
        score_cell(qcell, CPU)
        assert records[0]["method"] == ("gptq" if name.startswith("gptq") else "round")
        kept[name] = read_json(f"{qcell.run_dirs[0]}/score.json")["mem_bits"]
    assert kept["gptq-int3"] >= kept["int3"], kept


def test_gptq_is_refused_where_it_has_no_calibration_data():
    base = load_config("config.yaml")  # text enabled
    cfg = copy.deepcopy(base)
    cfg["quantize"] = {"schemes": ["gptq-int4"]}
    with pytest.raises(ConfigError, match=r"'quantize.schemes\[0\]'.*cannot quantize text"):
        validate_config(cfg)
    cfg = copy.deepcopy(base)
    cfg["audit"] = {"enabled": False, "quantize": ["gptq-int4"]}
    with pytest.raises(ConfigError, match=r"'audit.quantize\[0\]'.*cannot quantize audit"):
        validate_config(cfg)
    cfg = copy.deepcopy(base)
    cfg["text"]["enabled"] = False
    cfg["quantize"] = {"schemes": ["gptq-int4", "gptq-int3-g8"]}
    assert validate_config(cfg)["quantize"]["calibration_samples"] == 256
