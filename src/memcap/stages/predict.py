"""`memcap predict`: capacity, dataset-to-capacity ratio and membership F1 for a planned run.

The practitioner's question: if I train P parameters on N sequences, can membership be
inferred? α and the law's constants come from the latest fit in the database when there is one
(by default results/memcap.duckdb), else from the paper.
"""

from __future__ import annotations

import math
from pathlib import Path

import duckdb
import numpy as np

from memcap.paper import PAPER_ALPHA_BF16, PAPER_MIA
from memcap.quantities import LAW_SEQ_LEN, mia_f1, sequences_per_param


def fitted_constants(db: Path | None, precision: str, kind: str = "synthetic",
                     family: str = "gpt2") -> tuple[float, str, dict, str]:
    """(α, its source, law constants, their source) from the database or the paper. α is the
    synthetic capacity slope of the model family (capacity belongs to the architecture); the
    membership law is the family's fitted on `kind`'s grid (synthetic or text), never the
    other kind's."""
    alpha, alpha_src = PAPER_ALPHA_BF16, "the paper (bf16 slope)"
    law, law_src = dict(PAPER_MIA), f"the paper (no {kind} law fitted in the database)"
    if db is None or not Path(db).exists():
        return alpha, alpha_src, law, "the paper"
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute("""SELECT law, kind, parameter, value, lower_bound FROM laws
                              WHERE precision = ? AND family = ?""",
                           [precision, family]).fetchall()
    finally:
        con.close()
    for law_name, law_kind, parameter, value, lower in rows:
        if law_name == "capacity" and parameter == "alpha" and law_kind == "synthetic":
            alpha = value
            alpha_src = (f"{db} ({family}, synthetic, {precision}"
                         f"{', a lower bound' if lower else ''})")
    fit = {p: v for name, k, p, v, _ in rows if name == "mia_f1" and k == kind}
    if set(fit) == {"c1", "c2", "c3"}:
        law, law_src = fit, f"{db} ({family} {kind} law, {precision})"
    return alpha, alpha_src, law, law_src


def predict(params: int, n: int, seq_len: int = LAW_SEQ_LEN, bits_per_token: float | None = None,
            alpha: float = PAPER_ALPHA_BF16, law: dict | None = None) -> dict:
    """Predicted capacity α·P, the dataset-to-capacity ratio and the membership F1."""
    if params < 1 or n < 1 or seq_len < 2:
        raise ValueError("--params and --n must be positive and --seq-len at least 2")
    law = law or PAPER_MIA
    capacity = alpha * params
    dataset_bits = None if bits_per_token is None else n * (seq_len - 1) * bits_per_token
    x = sequences_per_param(n, seq_len, params)
    return {
        "capacity_bits": capacity,
        "dataset_bits": dataset_bits,
        "capacity_ratio": None if dataset_bits is None else dataset_bits / capacity,
        "sequences_per_param": x,
        "f1": float(mia_f1(np.array([x]), **law)[0]),
    }


def law_kind(kind: str | None, bits_per_token: float | None) -> str:
    """Which fitted membership law answers: the one asked for, else text when the data's bits
    per token are given (real data), else synthetic."""
    return kind or ("text" if bits_per_token is not None else "synthetic")


def answer(params: int, n: int, seq_len: int, bits_per_token: float | None,
           vocab_size: int | None, precision: str, db: Path | None,
           kind: str | None = None, family: str = "gpt2") -> str:
    """`memcap predict`: the prediction for P parameters on N sequences, as text. The data's
    bits per token: given, or log2 V for uniform tokens over V ids, or unknown. Constants from
    the database `db` when it has them (None: the paper's), of the model's family; the
    membership law of `kind` (law_kind)."""
    alpha, alpha_src, law, law_src = fitted_constants(db, precision,
                                                      law_kind(kind, bits_per_token), family)
    if bits_per_token is None and vocab_size is not None:
        bits_per_token = math.log2(vocab_size)
    result = predict(params, n, seq_len, bits_per_token, alpha, law)
    return format_prediction(params, n, seq_len, result, alpha, alpha_src, law, law_src)


def format_prediction(params: int, n: int, seq_len: int, result: dict, alpha: float,
                      alpha_src: str, law: dict, law_src: str) -> str:
    lines = [
        f"model: {params:,} parameters; data: {n:,} sequences of {seq_len} tokens",
        f"capacity:  {result['capacity_bits']:,.0f} bits  (α = {alpha:.3f} bits/parameter "
        f"from {alpha_src})",
    ]
    if result["capacity_ratio"] is None:
        lines.append("dataset-to-capacity ratio: give --bits-per-token (text: the entropy per "
                     "token under a reference model) or --vocab-size (uniform random tokens)")
    else:
        r = result["capacity_ratio"]
        verdict = ("the data fits in the model: expect near-total memorization" if r < 1 else
                   "the data exceeds capacity: the model cannot memorize all of it")
        lines.append(f"dataset-to-capacity ratio: {r:,.3f}  ({result['dataset_bits']:,.0f} "
                     f"bits of data; {verdict})")
    f1 = result["f1"]
    verdict = ("membership is inferable" if f1 >= 0.75 else
               "membership is weakly inferable" if f1 >= 0.55 else
               "membership inference is near chance (0.5)")
    lines.append(f"membership F1 (loss attack, median threshold): {f1:.4f} at N/P = "
                 f"{result['sequences_per_param']:.4g} 64-token sequences per parameter; "
                 f"{verdict}")
    lines.append(f"law: c1 {law['c1']:.4g}, c2 {law['c2']:.4g}, c3 {law['c3']:.4g} "
                 f"from {law_src}")
    return "\n".join(lines)
