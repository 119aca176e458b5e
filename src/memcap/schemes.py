"""Quantization schemes by name, torch-free (config checks import this; memcap.quantize
applies them; docs/science.md#quantization)."""

from __future__ import annotations

import re
from dataclasses import dataclass

SCHEME_GRAMMAR = "bf16, int{b} or int{b}-g{G} with 2 <= b <= 8 and G >= 1 (e.g. int4-g32)"
# the trained weights, stored as trained: how tables name the unquantized model
TRAINED = "none"


class SchemeError(ValueError):
    """A quantization scheme that does not exist or does not fit a model."""


@dataclass(frozen=True)
class Scheme:
    """One quantization scheme: `bits` per stored weight, groups of `group` inputs (None: a
    whole row, per output channel); `float` for bf16 (no integers, no scales)."""

    name: str
    bits: int
    group: int | None = None
    float: bool = False

    @classmethod
    def parse(cls, name: str) -> Scheme:
        if name == "bf16":
            return cls(name, 16, None, True)
        m = re.fullmatch(r"int([0-9]+)(?:-g([0-9]+))?", str(name))
        if m is None or not 2 <= int(m[1]) <= 8 or (m[2] is not None and int(m[2]) < 1):
            raise SchemeError(f"unknown quantization scheme {name!r}: expected {SCHEME_GRAMMAR}")
        return cls(name, int(m[1]), None if m[2] is None else int(m[2]))

    def check_width(self, width: int, what: str) -> None:
        """Raise when the groups do not tile a row of `width` inputs (`what` names the
        matrix and where it comes from)."""
        if self.group is not None and width % self.group:
            raise SchemeError(f"quantization scheme {self.name}: group size {self.group} does "
                              f"not divide the input width {width} of {what}")
