import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from conftest import CPU, evaluate_settings, make_cell, small_spec, write_data
from memcap.io import read_json
from memcap.metrics import attack_metrics, auc, f1_median, roc_curve, spearman, tfidf
from memcap.stages.evaluate import evaluate_cell
from memcap.stages.score import score_cell
from memcap.stages.train import train_cell


def test_metrics_on_separable_and_identical_scores():
    hi, lo = np.arange(100, 200.0), np.arange(0, 100.0)
    perfect = attack_metrics(hi, lo)
    assert perfect["auc"] == 1.0 and perfect["f1_median"] == 1.0 and perfect["f1_best"] == 1.0
    assert perfect["tpr_at_1pct_fpr"] == 1.0 and perfect["tpr_at_0_1pct_fpr"] == 1.0
    same = np.zeros(100)
    assert auc(same, same) == 0.5
    assert f1_median(same, same) == pytest.approx(0.5, abs=0.1)
    fpr, tpr = roc_curve(same, same)
    assert fpr.tolist() == [0.0, 1.0] and tpr.tolist() == [0.0, 1.0]


def test_random_attack_is_at_chance_within_sampling_error():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=2000), rng.normal(size=2000)
    m = attack_metrics(a, b)
    se = math.sqrt((2 * 2000 + 1) / (12 * 2000**2))
    assert abs(m["auc"] - 0.5) < 4 * se
    assert abs(m["f1_median"] - 0.5) < 0.04
    assert m["f1_best"] >= m["f1_median"]  # the optimistic number is never below


def test_tfidf_is_mean_unigram_surprisal():
    toks = np.array([[0, 0, 1], [0, 2, 2]])
    # counts: 0 → 3, 1 → 1, 2 → 2 of 6 tokens
    expected = [(2 * math.log(2) + math.log(6)) / 3, (math.log(2) + 2 * math.log(3)) / 3]
    assert tfidf(toks, 4) == pytest.approx(expected)
    assert spearman(np.arange(5.0), np.arange(5.0) ** 2) == pytest.approx(1.0)


def _evaluate(tmp_path, spec, seeds, quiet, heldout):
    train, held = write_data(tmp_path, spec, seeds, heldout=heldout)
    cell = make_cell(tmp_path, spec, seeds, train, held)
    train_cell(cell, CPU, echo=quiet)
    score_cell(cell, CPU)
    records = evaluate_cell(cell, CPU, **evaluate_settings(extraction_prefixes=[4, 8, 64]))
    return records, [Path(d) for d in cell.run_dirs], cell


def test_untrained_model_attack_is_at_chance(tmp_path, quiet):
    spec = small_spec(n=1024, steps=0)
    (rec,), _, _ = _evaluate(tmp_path, spec, [0], quiet, heldout=1024)
    loss = next(r for r in rec["mia"] if r["attack"] == "loss")
    se = math.sqrt((2 * 1024 + 1) / (12 * 1024**2))
    assert loss["n_members"] == loss["n_nonmembers"] == 1024
    assert abs(loss["auc"] - 0.5) < 4 * se
    assert abs(loss["f1_median"] - 0.5) < 0.05
    # chance of guessing the S−k remaining tokens: V^−(S−k); one token left at k = S−1 = 15
    rates = {e["prefix_len"]: e["rate"] for e in rec["extraction"] if e["split"] == "train"}
    assert rates[4] == rates[8] == 0.0 and rates[15] < 0.15


def test_memorized_data_is_detected_and_extracted(tmp_path, quiet):
    spec = small_spec(n=64, steps=600, d_model=32, head_dim=16)
    recs, dirs, cell = _evaluate(tmp_path, spec, [0, 1], quiet, heldout=128)
    for rec in recs:
        for r in rec["mia"]:
            assert r["auc"] > 0.9 and r["f1_median"] > 0.8, r
        rates = {(e["split"], e["prefix_len"]): e["rate"] for e in rec["extraction"]}
        assert set(rates) == {(s, k) for s in ("train", "heldout") for k in (4, 8, 15)}
        assert rates["train", 8] > 0.5 and rates["heldout", 8] == 0.0
    top = pl.read_parquet(dirs[0] / "top_samples.parquet")
    assert top.height == 20 and top["mem_bits"].is_sorted(descending=True)
    assert len(top["tokens"][0].split()) == spec.seq_len
    assert read_json(dirs[0] / "evaluation.json")["run_id"] == cell.run_ids[0]
