"""Evaluation of trained runs: membership inference, extraction, TF-IDF (SCIENCE.md §2).

Membership inference: members are up to m training samples, non-members the same number of
held-out samples (balanced). Scores are "higher = more member-like":
  loss attack                  −nll(x | θ̂)
  reference-calibrated attack  nll(x | θ) − nll(x | θ̂)
For uniform synthetic data the reference is constant, so both attacks rank alike.

Extraction: greedy decoding of the S−k tokens after the first k; a sample is extracted when
the whole continuation matches.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import torch

from memcap import device as dev
from memcap.data import read_tokens
from memcap.io import atomic_path, write_json
from memcap.model import PackedGPT
from memcap.train import TrainSpec, load_packed

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


def membership_inference(scores: pl.DataFrame, max_per_class: int = 2048) -> list[dict]:
    """Both attacks on one run's scores (columns of scores.parquet). One row per attack."""
    members, others = balanced_sets(scores, max_per_class)
    rows = []
    for attack in ATTACKS:
        def score(df: pl.DataFrame, attack: str = attack) -> np.ndarray:
            if attack == "loss":
                return -df["nll_bits"].to_numpy()
            return (df["ref_nll_bits"] - df["nll_bits"]).to_numpy()
        rows.append({"attack": attack, "n_members": members.height,
                     "n_nonmembers": others.height,
                     **attack_metrics(score(members), score(others))})
    return rows


@torch.no_grad()
def greedy_extraction(model: PackedGPT, tokens: torch.Tensor, prefix_len: int,
                      batch_size: int = 512) -> torch.Tensor:
    """Whether greedy decoding from the first k tokens reproduces each whole sequence.

    tokens (M, B, S) -> bool (M, B).
    """
    model.eval()
    S = tokens.shape[-1]
    out = []
    for start in range(0, tokens.shape[1], batch_size):
        chunk = tokens[:, start:start + batch_size]
        x = chunk[:, :, :prefix_len]
        for _ in range(S - prefix_len):
            # only the last position's logits are needed
            nxt = model.logits(model.hidden(x)[:, :, -1:])[:, :, -1].argmax(-1, keepdim=True)
            x = torch.cat([x, nxt], dim=-1)
        out.append((x == chunk).all(-1))
    return torch.cat(out, dim=1)


def tfidf(tokens: np.ndarray, vocab_size: int) -> np.ndarray:
    """TF-IDF of each sequence of D = `tokens` (N, S): (1/|x|) Σ_{w∈x} log(|D| / tf(w, D)).

    tf(w, D) counts token w in D and |D| is the number of tokens in D, so a sample's TF-IDF is
    its mean unigram surprisal in nats: rare tokens score high (decision, docs/decisions.md).
    """
    counts = np.bincount(tokens.ravel(), minlength=vocab_size).astype(np.float64)
    weight = np.zeros(vocab_size)
    seen = counts > 0
    weight[seen] = np.log(tokens.size / counts[seen])
    return weight[tokens].mean(axis=1)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); NaN if either side is constant."""
    rx = pl.Series(x).rank("average").to_numpy()
    ry = pl.Series(y).rank("average").to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def top_samples(scores: pl.DataFrame, tokens: np.ndarray, sample_ids: np.ndarray,
                k: int = 20, decode: Callable[[list[int]], str] | None = None) -> pl.DataFrame:
    """The k training samples with the most memorized bits: token ids, and the decoded text
    when a tokenizer's `decode` is given (text runs)."""
    top = scores.filter(pl.col("member")).sort("mem_bits", descending=True).head(k)
    row_of = {int(s): i for i, s in enumerate(sample_ids)}
    rows = [tokens[row_of[int(s)]] for s in top["sample_id"]]
    return (top.select("run_id", "sample_id", "mem_bits", "nll_bits", "ref_nll_bits", "tfidf")
            .with_columns(rank=pl.int_range(1, top.height + 1),
                          tokens=pl.Series([" ".join(map(str, r)) for r in rows],
                                           dtype=pl.String),
                          text=pl.Series([decode(r.tolist()) if decode else None for r in rows],
                                         dtype=pl.String)))


def evaluate_cell(spec: TrainSpec, seeds: list[int], model_paths: list[Path],
                  train_paths: list[Path], heldout_paths: list[Path], score_paths: list[Path],
                  out_dirs: list[Path], run_ids: list[str],
                  prefix_lens: list[int], mia_samples: int = 2048,
                  extraction_samples: int = 256, device: str = "auto",
                  threads: int = 1, tokenizer: Path | None = None) -> list[dict]:
    """MIA, extraction and TF-IDF for every seed of a cell.

    Writes per seed `evaluation.json` (mia and extraction rows, TF-IDF correlation) and
    `top_samples.parquet` (the 20 most memorized training samples, decoded with the
    tokenizer in folder `tokenizer` when given). Scores against the primary reference only.
    """
    torch_device = dev.resolve_device(device)
    dtype = dev.configure(torch_device, spec.precision, threads)
    model = load_packed(spec, model_paths, torch_device)
    S = spec.seq_len
    prefixes = sorted({min(k, S - 1) for k in prefix_lens})
    train = [read_tokens(p) for p in train_paths]
    held = [read_tokens(p) for p in heldout_paths]
    m_ext = min(extraction_samples, spec.n, min(len(h[0]) for h in held))
    splits = {
        "train": torch.from_numpy(np.stack([t[1][:m_ext] for t in train])).to(torch_device),
        "heldout": torch.from_numpy(np.stack([h[1][:m_ext] for h in held])).to(torch_device),
    }
    extracted = {}
    with dev.autocast(torch_device, dtype):
        for split, toks in splits.items():
            for k in prefixes:
                extracted[split, k] = greedy_extraction(model, toks, k).float().mean(1).cpu()
    decode = None
    if tokenizer is not None:
        from memcap.text import load_tokenizer

        decode = load_tokenizer(tokenizer).decode
    records = []
    for m, seed in enumerate(seeds):
        scores = pl.read_parquet(score_paths[m]).filter(pl.col("primary_reference"))
        members = scores.filter(pl.col("member"))
        record = {
            "run_id": run_ids[m], "seed": seed, "n": spec.n,
            "mia": [{"run_id": run_ids[m], **r}
                    for r in membership_inference(scores, mia_samples)],
            "extraction": [{"run_id": run_ids[m], "prefix_len": k, "split": split,
                            "rate": float(extracted[split, k][m]), "n_samples": m_ext}
                           for split in splits for k in prefixes],
            "tfidf_mem_spearman": spearman(members["tfidf"].to_numpy(),
                                           members["mem_bits"].to_numpy()),
        }
        out = Path(out_dirs[m])
        with atomic_path(out / "top_samples.parquet") as tmp:
            top_samples(scores, train[m][1], train[m][0], decode=decode).write_parquet(tmp)
        write_json(out / "evaluation.json", record)
        records.append(record)
    return records
