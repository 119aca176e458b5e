"""Membership-inference metrics, ROC, TF-IDF and rank correlation
(docs/science.md#membership-inference).

Torch-free and duckdb-free: scoring, evaluation and the figures all import these.

Attack scores are "higher = more member-like" (columns of a scores table):
  loss               −nll(x | θ̂)                                   nll_bits
  reference          nll(x | θ) − nll(x | θ̂), θ the primary ref.   ref_nll_bits
  reference_oracle   the same against the oracle reference (text)   oracle_nll_bits
  zlib               −nll(x | θ̂) / zlib(x), zlib(x) the compressed  zlib_bits
                     size of the sample in bits
  min_k              −(mean of the k = 20 % highest per-token       min_k_bits
                     code lengths), Min-K% Prob
For uniform synthetic data the reference is constant, so `reference` ranks exactly like `loss`.

Members and non-members are drawn alike (`draw_sets`): a seeded random subset of each class,
with the same count per stratum (a text sample's corpus) in both, so that a model which has
only learned which corpus is easier scores at chance.
"""

from __future__ import annotations

import json
import math
import zlib

import numpy as np
import polars as pl

ATTACKS = ("loss", "reference", "reference_oracle", "zlib", "min_k")
# the column each attack needs besides nll_bits
ATTACK_COLUMNS = {"loss": "nll_bits", "reference": "ref_nll_bits",
                  "reference_oracle": "oracle_nll_bits", "zlib": "zlib_bits",
                  "min_k": "min_k_bits"}
MIN_K_FRAC = 0.2  # Min-K% Prob's k (Shi et al. 2024 find 20 % best on most models)


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


def auc_standard_error(auc_value: float, n_member: int, n_nonmember: int) -> float:
    """Standard error of an AUC (Hanley & McNeil 1982); at AUC 0.5 it is about
    sqrt((n1 + n0 + 1) / (12·n1·n0))."""
    a, n1, n0 = auc_value, n_member, n_nonmember
    if n1 < 1 or n0 < 1:
        return math.nan
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n0 - 1) * (q2 - a * a)) / (n1 * n0)
    return float(math.sqrt(max(var, 0.0)))


def allocate(available: dict[str, int], total: int) -> dict[str, int]:
    """Split `total` draws over strata in proportion to what each has available (largest
    remainder; never more than available)."""
    pool = sum(available.values())
    if total >= pool:
        return dict(available)
    exact = {s: total * a / pool for s, a in available.items()}
    quota = {s: math.floor(e) for s, e in exact.items()}
    for s in sorted(exact, key=lambda s: (quota[s] - exact[s], s))[:total - sum(quota.values())]:
        quota[s] += 1
    return quota


def draw_sets(scores: pl.DataFrame, max_per_class: int, seed: int,
              run_seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """Members and non-members for the attacks, drawn alike: per stratum (the `stratum`
    column, a text sample's corpus; one stratum without it), the same number from each class,
    chosen by a permutation seeded by (seed, run_seed); at most max_per_class per class,
    spread over the strata in proportion to what both classes hold. Returns (members,
    non-members, the draw's record: seed, counts per stratum as JSON)."""
    scores = scores.with_columns(
        stratum=pl.col("stratum").fill_null("all") if "stratum" in scores.columns
        else pl.lit("all"))
    by_class = [scores.filter(pl.col("member") == flag).sort("sample_id") for flag in (True, False)]
    counts = [dict(f.group_by("stratum").len().iter_rows()) for f in by_class]
    available = {s: min(counts[0][s], counts[1].get(s, 0)) for s in sorted(counts[0])}
    quota = allocate({s: a for s, a in available.items() if a}, max_per_class)
    rng = np.random.default_rng([seed, run_seed, 0x3E7B])
    picked: list[list[pl.DataFrame]] = [[], []]
    for stratum, k in sorted(quota.items()):
        for side, frame in zip(picked, by_class, strict=True):
            part = frame.filter(pl.col("stratum") == stratum)
            side.append(part[np.sort(rng.permutation(part.height)[:k])])
    members, others = [pl.concat(p) if p else f.clear()
                       for p, f in zip(picked, by_class, strict=True)]
    return members, others, {"draw_seed": seed, "strata": json.dumps(quota, sort_keys=True)}


def zlib_bits(data: bytes) -> float:
    """Size in bits of `data` compressed by zlib (the zlib attack's calibration)."""
    return 8.0 * len(zlib.compress(data))


def attack_scores(frame: pl.DataFrame, attack: str) -> np.ndarray:
    """Each sample's score under `attack` (columns of a scores table; ATTACK_COLUMNS)."""
    nll = frame["nll_bits"].to_numpy()
    if attack == "loss":
        return -nll
    if attack not in ATTACK_COLUMNS:
        raise ValueError(f"unknown attack {attack!r}; known: {ATTACKS}")
    other = frame[ATTACK_COLUMNS[attack]].to_numpy()
    if attack == "zlib":
        return -nll / other
    if attack == "min_k":
        return -other
    return other - nll  # reference-calibrated: nll(x | θ) − nll(x | θ̂)


def available_attacks(frame: pl.DataFrame) -> list[str]:
    """The attacks whose column `frame` carries with no missing value."""
    return [a for a in ATTACKS if ATTACK_COLUMNS[a] in frame.columns
            and not frame[ATTACK_COLUMNS[a]].null_count()]


def attack_frame(members: pl.DataFrame, others: pl.DataFrame) -> pl.DataFrame:
    """The drawn samples (sample_id, member, stratum) with one column per attack, its score
    (`loss`, `reference`, ...): what the attacks compared, kept for the ROC figures."""
    frame = pl.concat([members, others], how="diagonal_relaxed")
    attacks = [a for a in available_attacks(members) if a in available_attacks(others)]
    return frame.select("sample_id", "member", "stratum").with_columns(
        **{a: pl.Series(attack_scores(frame, a), dtype=pl.Float64) for a in attacks})


def membership_inference(sets: pl.DataFrame, draw: dict) -> list[dict]:
    """Every attack of an attack_frame: one row per attack, with the draw's record and the
    AUC's standard error."""
    members, others = sets.filter(pl.col("member")), sets.filter(~pl.col("member"))
    rows = []
    for attack in (a for a in ATTACKS if a in sets.columns):
        metrics = attack_metrics(members[attack].to_numpy(), others[attack].to_numpy())
        rows.append({"attack": attack, "n_members": members.height,
                     "n_nonmembers": others.height, **metrics,
                     "auc_se": auc_standard_error(metrics["auc"], members.height, others.height),
                     **draw})
    return rows


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
