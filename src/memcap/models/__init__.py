"""The model families memcap trains and scores, one module each behind one interface
(memcap.models.base.PackedLM): gpt2, llama, mamba. The stages build, save and load them here
and never name a family."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from memcap.models.base import PackedLM
from memcap.models.gpt2 import PackedGPT
from memcap.models.llama import PackedLlama
from memcap.models.mamba import PackedMamba
from memcap.quantization import read_state
from memcap.shapes import Shape

FAMILIES: dict[str, type[PackedLM]] = {c.family: c for c in (PackedGPT, PackedLlama, PackedMamba)}

__all__ = ["FAMILIES", "PackedLM", "build", "input_axes", "load_packed", "save_model"]


def build(shape: Shape, n_models: int) -> PackedLM:
    """n_models untrained (uninitialised) models of `shape`, of its family."""
    return FAMILIES[shape.family](n_models, shape)


def input_axes(shape: Shape, state: dict[str, torch.Tensor]) -> dict[str, int]:
    """The weight matrices of one model's state of `shape` and their input axes
    (PackedLM.input_axes)."""
    return FAMILIES[shape.family].input_axes(state)


def save_model(model: PackedLM, m: int, path: Path) -> None:
    """Packed model m as a single-model safetensors file (no model dimension)."""
    state = {k: v[m].detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path))


def load_packed(shape: Shape, model_paths: list[Path], device: torch.device) -> PackedLM:
    """Stack single-model safetensors files into one packed model of `shape`. A quantized
    model's file is dequantized (memcap.quantization.read_state)."""
    model = build(shape, len(model_paths))
    states = []
    for path in model_paths:
        if not Path(path).exists():
            raise FileNotFoundError(f"model weights {path} do not exist")
        states.append(read_state(path))
    model.load_state_dict({k: torch.stack([s[k] for s in states]) for k in states[0]})
    return model.to(device)
