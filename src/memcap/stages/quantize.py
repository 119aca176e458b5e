"""The quantize stage: a trained cell's runs with their weights quantized by one scheme
(memcap.quantization; docs/science.md#quantization), each written to its own run folder.
The rule then scores and evaluates the quantized cell with the score and evaluate stages, as
any cell.
"""

from __future__ import annotations

from pathlib import Path

import torch

from memcap.cell import Cell
from memcap.io import write_json
from memcap.models import input_axes, load_packed
from memcap.quantization import Scheme, read_state, save_quantized
from memcap.streams import uniform_tokens


@torch.no_grad()
def calibration_inputs(cell: Cell, calibration_samples: int) -> list[dict[str, torch.Tensor]]:
    """Per seed of a synthetic cell, each weight matrix's inputs (T, din) on the trained model
    over `calibration_samples` fresh sequences of the seed's calibration stream
    (memcap.streams: never trained on, never scored)."""
    spec = cell.spec
    Scheme.parse(cell.scheme).check_kind(cell.kind)
    model = load_packed(spec.shape, [Path(d) / "model.safetensors" for d in cell.trained_dirs],
                        torch.device("cpu"))
    tokens = torch.stack([torch.from_numpy(uniform_tokens(seed, "calibration", 0,
                                                          calibration_samples, spec.seq_len,
                                                          spec.vocab_size))
                          for seed in cell.seeds])
    capture: dict[str, torch.Tensor] = {}
    model.eval()
    model.hidden(tokens, capture)
    return [{k: v[m] for k, v in capture.items()} for m in range(len(cell.seeds))]


def quantize_cell(cell: Cell, calibration_samples: int = 0) -> list[dict]:
    """Each trained run of a quantized cell (memcap.cell.Cell.quantized) quantized by the
    cell's scheme and written to its own run folder: model.safetensors as stored, quant.json
    with the run's identity, its trained run and its stored bits. GPTQ schemes calibrate on
    `calibration_samples` fresh sequences per run. Returns the quant.json records; the rule
    then runs the score and evaluate stages on the same cell."""

    if cell.scheme is None:
        raise ValueError(f"{cell.label}: the quantize stage needs a quantized cell (a scheme)")
    scheme = Scheme.parse(cell.scheme)
    for source in (Path(d) / "model.safetensors" for d in cell.trained_dirs):
        if not source.exists():
            raise FileNotFoundError(f"model weights {source} do not exist")
    inputs = (calibration_inputs(cell, calibration_samples) if scheme.method == "gptq"
              else [None] * len(cell.seeds))
    records = []
    for m, (seed, trained, out) in enumerate(zip(cell.seeds, cell.trained_dirs, cell.run_dirs,
                                                 strict=True)):
        state = read_state(Path(trained) / "model.safetensors")
        Path(out).mkdir(parents=True, exist_ok=True)
        record = save_quantized(state, input_axes(cell.spec.shape, state), scheme,
                                Path(out) / "model.safetensors",
                                what=f"architecture {cell.arch}", inputs=inputs[m])
        if scheme.method == "gptq":
            record["calibration_samples"] = calibration_samples
        trained_id = cell.run_ids[cell.seeds.index(seed)].rsplit("+", 1)[0]
        record = {**cell.identity(seed), "trained_run_id": trained_id, **record}
        write_json(Path(out) / "quant.json", record)
        records.append(record)
    return records
