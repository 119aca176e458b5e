"""Membership-inference metrics, ROC, TF-IDF and rank correlation
(docs/science.md#membership-inference).

Torch-free and duckdb-free: scoring, evaluation and the figures all import these.

Attack scores are "higher = more member-like":
  loss attack                  −nll(x | θ̂)
  reference-calibrated attack  nll(x | θ) − nll(x | θ̂)
For uniform synthetic data the reference is constant, so both attacks rank alike.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

ATTACKS = ("loss", "reference")


def roc_curve(member: np.ndarray, nonmember: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) of the rule "score ≥ t" over every threshold t, from (0, 0) to (1, 1)."""
    scores = np.concatenate([member, nonmember])
    labels = np.concatenate([np.ones(len(member)), np.zeros(len(nonmember))])
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    last_of_tie = np.r_[np.diff(scores) != 0, True]
    tp, fp = np.cumsum(labels)[last_of_tie], np.cumsum(1 - labels)[last_of_tie]
    tpr = np.r_[0.0, tp / max(len(member), 1)]
    fpr = np.r_[0.0, fp / max(len(nonmember), 1)]
    return fpr, tpr


def auc(member: np.ndarray, nonmember: np.ndarray) -> float:
    """P(score of a member > score of a non-member) + ½ P(tie) (Mann–Whitney)."""
    scores = np.concatenate([member, nonmember])
    ranks = pl.Series(scores).rank("average").to_numpy()
    n1, n0 = len(member), len(nonmember)
    return float((ranks[:n1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """Highest TPR among thresholds whose FPR is at most `target`."""
    return float(tpr[fpr <= target + 1e-12].max())


def f1_median(member: np.ndarray, nonmember: np.ndarray, seed: int = 0) -> float:
    """F1 when the upper half of the pooled scores is called member (ties broken at random).

    With balanced classes precision = recall = the share of members in the upper half, so a
    random attack scores 0.5.
    """
    scores = np.concatenate([member, nonmember])
    jitter = np.random.default_rng(seed).random(len(scores))
    order = np.lexsort((jitter, -scores))
    top = order[: len(scores) // 2]
    tp = (top < len(member)).sum()
    precision = tp / max(len(top), 1)
    recall = tp / max(len(member), 1)
    return float(2 * precision * recall / (precision + recall)) if tp else 0.0


def f1_best(fpr: np.ndarray, tpr: np.ndarray, n_member: int, n_nonmember: int) -> float:
    """F1 at the best threshold (optimistic: the threshold is chosen on the evaluated data)."""
    tp, fp = tpr * n_member, fpr * n_nonmember
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = 2 * tp / (2 * tp + fp + (n_member - tp))
    return float(np.nanmax(f1))


def attack_metrics(member: np.ndarray, nonmember: np.ndarray) -> dict[str, float]:
    fpr, tpr = roc_curve(member, nonmember)
    return {
        "auc": auc(member, nonmember),
        "f1_median": f1_median(member, nonmember),
        "f1_best": f1_best(fpr, tpr, len(member), len(nonmember)),
        "tpr_at_1pct_fpr": tpr_at_fpr(fpr, tpr, 0.01),
        "tpr_at_0_1pct_fpr": tpr_at_fpr(fpr, tpr, 0.001),
    }


def balanced_sets(scores: pl.DataFrame, max_per_class: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The first m members and the first m non-members by sample_id, m = min of the three."""
    members = scores.filter(pl.col("member")).sort("sample_id")
    others = scores.filter(~pl.col("member")).sort("sample_id")
    m = min(members.height, others.height, max_per_class)
    return members.head(m), others.head(m)


def attack_scores(frame: pl.DataFrame, attack: str) -> np.ndarray:
    """Each sample's score under `attack` (columns of a scores table)."""
    if attack == "loss":
        return -frame["nll_bits"].to_numpy()
    if attack == "reference":
        return (frame["ref_nll_bits"] - frame["nll_bits"]).to_numpy()
    raise ValueError(f"unknown attack {attack!r}; known: {ATTACKS}")


def membership_inference(scores: pl.DataFrame, max_per_class: int,
                         attacks: tuple[str, ...] = ATTACKS) -> list[dict]:
    """Every attack (or the given ones: an audit without a reference model has no
    reference-calibrated attack) on one run's scores (columns of scores.parquet). One row per
    attack."""
    members, others = balanced_sets(scores, max_per_class)
    return [{"attack": attack, "n_members": members.height, "n_nonmembers": others.height,
             **attack_metrics(attack_scores(members, attack), attack_scores(others, attack))}
            for attack in attacks]


def tfidf(tokens: np.ndarray, vocab_size: int, chunk: int = 1 << 16) -> np.ndarray:
    """TF-IDF of each sequence of D = `tokens` (N, S): (1/|x|) Σ_{w∈x} log(|D| / tf(w, D)).

    tf(w, D) counts token w in D and |D| is the number of tokens in D, so a sample's TF-IDF is
    its mean unigram surprisal in nats: rare tokens score high (docs/science.md#tf-idf).
    Computed `chunk` sequences at a time, so no (N, S) array wider than the tokens is made.
    """
    counts = np.zeros(vocab_size, dtype=np.float64)
    for start in range(0, len(tokens), chunk):
        counts += np.bincount(tokens[start:start + chunk].ravel(), minlength=vocab_size)
    weight = np.zeros(vocab_size)
    seen = counts > 0
    weight[seen] = np.log(tokens.size / counts[seen])
    out = np.empty(len(tokens))
    for start in range(0, len(tokens), chunk):
        out[start:start + chunk] = weight[tokens[start:start + chunk]].mean(axis=1)
    return out


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); NaN if either side is constant."""
    rx = pl.Series(x).rank("average").to_numpy()
    ry = pl.Series(y).rank("average").to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])
