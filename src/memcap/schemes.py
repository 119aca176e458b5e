"""Quantization schemes by name, torch-free (config checks import this; memcap.quantization
applies them; docs/science.md#quantization)."""

from __future__ import annotations

import re
from dataclasses import dataclass

SCHEME_GRAMMAR = ("bf16, int{b}, int{b}-g{G}, gptq-int{b} or gptq-int{b}-g{G} with 2 <= b <= 8 "
                  "and G >= 1 (e.g. int4-g32)")
# the kinds of runs each method quantizes: GPTQ calibrates on fresh samples of the training
# distribution, which memcap draws for uniform random tokens only (docs/science.md#quantization)
METHOD_KINDS = {"round": ("synthetic", "text", "audit"), "gptq": ("synthetic",)}
# the trained weights, stored as trained: how tables name the unquantized model
TRAINED = "none"


class SchemeError(ValueError):
    """A quantization scheme that does not exist or does not fit a model."""


@dataclass(frozen=True)
class Scheme:
    """One quantization scheme: `bits` per stored weight, groups of `group` inputs (None: a
    whole row, per output channel); `float` for bf16 (no integers, no scales); `method`:
    "round" (round to nearest) or "gptq" (error-compensating, on calibration inputs)."""

    name: str
    bits: int
    group: int | None = None
    float: bool = False
    method: str = "round"

    @classmethod
    def parse(cls, name: str) -> Scheme:
        if name == "bf16":
            return cls(name, 16, None, True)
        m = re.fullmatch(r"(gptq-)?int([0-9]+)(?:-g([0-9]+))?", str(name))
        if m is None or not 2 <= int(m[2]) <= 8 or (m[3] is not None and int(m[3]) < 1):
            raise SchemeError(f"unknown quantization scheme {name!r}: expected {SCHEME_GRAMMAR}")
        return cls(name, int(m[2]), None if m[3] is None else int(m[3]),
                   method="gptq" if m[1] else "round")

    def check_kind(self, kind: str) -> None:
        """Raise when the scheme cannot quantize runs of this kind (synthetic, text, audit)."""
        if kind not in METHOD_KINDS[self.method]:
            raise SchemeError(f"quantization scheme {self.name} cannot quantize {kind} models: "
                              "GPTQ calibrates on fresh samples of the training distribution, "
                              "which memcap draws for synthetic data only (list it in a config "
                              "without text, e.g. configs/laptop.yaml)")

    def check_width(self, width: int, what: str) -> None:
        """Raise when the groups do not tile a row of `width` inputs (`what` names the
        matrix and where it comes from)."""
        if self.group is not None and width % self.group:
            raise SchemeError(f"quantization scheme {self.name}: group size {self.group} does "
                              f"not divide the input width {width} of {what}")
