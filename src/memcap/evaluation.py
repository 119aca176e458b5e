"""The evaluation of one scored model, shared by the grid's evaluate stage, the collect stage
and the audit (docs/science.md#membership-inference, #memorization, #audit): from its
per-sample scores against its primary reference, the membership attacks on members and
non-members drawn alike, the TF-IDF correlation and the most memorized samples
(evaluate_scores), and its memorization row with the false-positive floor, the excess and
the reference's quality (memorization_row). Greedy extraction needs the model and stays with
each stage; its rows are built here.

Torch-free and duckdb-free.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from memcap.metrics import attack_frame, draw_sets, membership_inference, spearman
from memcap.samples import memorization_totals, top_samples, with_zlib_bits

# the columns of a scores frame the evaluation reads (one row per sample, one reference)
SCORE_COLUMNS = ("sample_id", "member", "nll_bits", "ref_nll_bits", "mem_bits", "tfidf",
                 "min_k_bits", "stratum")


@dataclass(frozen=True)
class Evaluation:
    """What `evaluate_scores` finds for one model: the attacks' rows (`mia`), the drawn sets
    with every attack's score (`sets`), the TF-IDF correlation and the most memorized members
    (None without a reference). Its memorization is `memorization_row`'s."""

    mia: list[dict]
    sets: pl.DataFrame
    tfidf_mem_spearman: float | None
    top: pl.DataFrame | None


def evaluate_scores(run_id: str, scores: pl.DataFrame, members_path: Path,
                    nonmembers_path: Path, *, mia_samples: int, mia_seed: int, run_seed: int,
                    decode: Callable[[list[int]], str] | None,
                    oracle: pl.DataFrame | None = None) -> Evaluation:
    """Evaluate one model from its scores (SCORE_COLUMNS against its primary reference;
    ref_nll_bits null where there is none). members_path / nonmembers_path: the token files
    the members and non-members come from (the zlib attack and the top samples read them);
    decode: a tokenizer's decode for text (None: token ids); oracle: sample_id and
    oracle_nll_bits, a second reference for the `reference_oracle` attack (text runs).
    The membership sets are drawn with (mia_seed, run_seed)."""
    scores = scores.select(SCORE_COLUMNS)
    members, others, draw = draw_sets(scores, mia_samples, mia_seed, run_seed)
    if oracle is not None and oracle.height:
        members, others = (f.join(oracle, on="sample_id", how="left") for f in (members, others))
    sets = attack_frame(with_zlib_bits(members, members_path, decode),
                        with_zlib_bits(others, nonmembers_path, decode))
    mia = [{"run_id": run_id, **r} for r in membership_inference(sets, draw)]
    has_reference = scores["ref_nll_bits"].null_count() < scores.height
    if not has_reference:
        return Evaluation(mia, sets, None, None)
    member_rows = scores.filter(pl.col("member"))
    rho = spearman(member_rows["tfidf"].to_numpy(), member_rows["mem_bits"].to_numpy())
    top = top_samples(scores.with_columns(run_id=pl.lit(run_id)), members_path, decode=decode)
    return Evaluation(mia, sets, rho if np.isfinite(rho) else None, top)


def reference_quality(scores: pl.DataFrame, seq_len: int, vocab_size: int,
                      reference: str) -> dict:
    """How well the reference codes the samples the model never saw, beside the model and the
    uniform code (docs/science.md#audit): mean code length of the
    non-members per predicted token, in bits, under the reference and under the model, and
    log2 V. reference_flag names what is wrong, null when nothing is: a reference that codes
    non-members worse than the uniform code, or worse than the model, credits memorization
    to samples the model never saw."""
    others = scores.filter(~pl.col("member"))
    tokens = seq_len - 1
    row = {"uniform_bits_per_token": float(np.log2(vocab_size)),
           "heldout_bits_per_token": float(others["nll_bits"].mean()) / tokens
           if others.height else None,
           "reference_heldout_bits_per_token": None, "reference_flag": None}
    if not others.height or others["ref_nll_bits"].null_count() == others.height:
        return row
    ref = float(others["ref_nll_bits"].mean()) / tokens
    row["reference_heldout_bits_per_token"] = ref
    worse = []
    if ref > row["uniform_bits_per_token"] * (1 + 1e-12):  # the uniform code itself is not
        worse.append(f"worse than the uniform code ({ref:.3f} against log2 V = "
                     f"{row['uniform_bits_per_token']:.3f} bits per token)")
    if ref > row["heldout_bits_per_token"]:
        worse.append(f"worse than the model ({ref:.3f} against "
                     f"{row['heldout_bits_per_token']:.3f} bits per token)")
    if worse:
        row["reference_flag"] = (f"reference {reference} codes the non-members "
                                 + " and ".join(worse))
    return row


def memorization_row(run_id: str, scores: pl.DataFrame, *, seq_len: int, vocab_size: int,
                     params: int, reference: str, reference_label: str | None = None) -> dict:
    """A model's row of the `memorization` table from its scores against one reference: the
    totals with the false-positive floor and the excess (memcap.samples.memorization_totals),
    bits per parameter and the reference's quality (reference_quality, naming the reference
    by reference_label, default its name)."""
    totals = memorization_totals(scores)
    return {"run_id": run_id, "reference": reference, **totals,
            "memorizable_fraction": (totals["mem_bits"] / totals["dataset_bits"]
                                     if totals["dataset_bits"] else None),
            "bits_per_param": totals["mem_bits"] / params,
            **reference_quality(scores, seq_len, vocab_size, reference_label or reference)}


def extraction_rows(run_id: str, rates: dict[tuple[str, int], float],
                    n_samples: int) -> list[dict]:
    """The `extraction` rows of one model: rates[(split, k)], the extracted share of the first
    n_samples training (`train`) or held-out (`heldout`) samples from a k-token prefix."""
    return [{"run_id": run_id, "prefix_len": k, "split": split, "rate": float(rate),
             "n_samples": n_samples} for (split, k), rate in rates.items()]
