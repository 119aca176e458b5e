"""Membership inference a privacy auditor can trust, on real text and on the draw itself:
members and non-members drawn alike (seeded, stratified by corpus), a model that generalizes
at chance, a memorizing one detected, and the reference-calibrated attack ahead of the loss
attack where samples differ in difficulty."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from conftest import CPU, evaluate_settings, make_cell, small_spec
from memcap.metrics import allocate, auc_standard_error, draw_sets
from memcap.stages.evaluate import evaluate_cell
from memcap.stages.reference import score_reference
from memcap.stages.score import score_cell
from memcap.stages.text import (
    assign_splits,
    build_pool,
    documents_frame,
    train_bpe,
    write_text_dataset,
)
from memcap.stages.train import train_cell
from memcap.tokenizer import load_tokenizer

CORPORA = ("moby_dick", "spam_assassin")  # literary prose and 2002 e-mail: unlike difficulty
HELDOUT = 512


def scores(strata_members: dict[str, int], strata_others: dict[str, int]) -> pl.DataFrame:
    """A scores table whose members and non-members come from strata in the given counts,
    member ids in stratum order (as text sample ids follow corpus order)."""
    rows, sid = [], 0
    for member, counts in ((True, strata_members), (False, strata_others)):
        for stratum, k in counts.items():
            for _ in range(k):
                rows.append({"sample_id": sid, "member": member, "stratum": stratum,
                             "nll_bits": float(sid % 7)})
                sid += 1
    return pl.DataFrame(rows)


def counts(frame: pl.DataFrame) -> dict[str, int]:
    return dict(frame.group_by("stratum").len().iter_rows())


def test_draw_is_seeded_random_and_stratified():
    table = scores({"a": 900, "b": 100}, {"a": 50, "b": 250})
    members, others, record = draw_sets(table, 10_000, seed=0)
    # per stratum the smaller class's count, in both classes
    assert counts(members) == counts(others) == {"a": 50, "b": 100}
    assert json.loads(record["strata"]) == {"a": 50, "b": 100} and record["draw_seed"] == 0
    # capped: 60 per class, split 1:2 like the available pairs
    members, others, _ = draw_sets(table, 60, seed=0)
    assert counts(members) == counts(others) == {"a": 20, "b": 40}
    # random, not the lowest ids; the same seed draws the same sets, another seed others
    again, _, _ = draw_sets(table, 60, seed=0)
    other, _, _ = draw_sets(table, 60, seed=1)
    ids = members.filter(pl.col("stratum") == "a")["sample_id"]
    assert ids.to_list() != list(range(20)) and ids.max() > 450
    assert members["sample_id"].to_list() == again["sample_id"].to_list()
    assert members["sample_id"].to_list() != other["sample_id"].to_list()
    # synthetic data: no stratum column, one stratum
    plain = table.drop("stratum")
    members, others, record = draw_sets(plain, 100, seed=3)
    assert members.height == others.height == 100 and json.loads(record["strata"]) == {
        "all": 100}


def test_allocation_is_proportional_and_exact():
    assert allocate({"a": 10, "b": 30}, 8) == {"a": 2, "b": 6}
    quota = allocate({"a": 1, "b": 1, "c": 1}, 2)
    assert sum(quota.values()) == 2 and max(quota.values()) == 1
    assert allocate({"a": 3}, 10) == {"a": 3}


def test_auc_standard_error_at_chance():
    m = 512
    assert auc_standard_error(0.5, m, m) == pytest.approx(
        math.sqrt((2 * m + 1) / (12 * m * m)), rel=0.01)
    assert auc_standard_error(0.99, m, m) < auc_standard_error(0.5, m, m)


@pytest.fixture(scope="module")
def text_runs(documents, tmp_path_factory):
    """Real text from two corpora; a BPE; three L1-d16 models on nested datasets of one
    seed's permutation: N = 256 (memorized), 1,024 (partly), 8,192 (generalizing, about three
    passes; the same-arch reference of all three, as in the workflow)."""
    root = tmp_path_factory.mktemp("mia-text")
    docs = assign_splits(pl.concat([documents_frame(documents(c), corpus=c) for c in CORPORA]),
                         0.2, 0)
    train_bpe(docs.filter(pl.col("split") == "train")["text"].to_list(), 320, root / "bpe")
    pool = root / "pool.parquet"
    build_pool(docs, load_tokenizer(root / "bpe"), 16, "windows", pool, root / "stats.json")
    held = root / "held.parquet"
    write_text_dataset(pool, held, seed=0, split="heldout", n=HELDOUT)
    ref = root / "same-arch.parquet"
    cells = {}
    for n, steps in ((256, 400), (1024, 400), (8192, 400)):
        data = root / f"train-{n}.parquet"
        write_text_dataset(pool, data, seed=0, split="train", n=n)
        spec = small_spec(vocab_size=320, n=n, d_model=16, steps=steps, batch_size=64, lr=0.03)
        cells[n] = make_cell(root, spec, [0], [data], [held], f"run-{n}", f"ck-{n}.pt",
                             kind="text", references={"same-arch": ref},
                             tokenizer=root / "bpe")
        train_cell(cells[n], CPU, echo=lambda _line: None)
    score_reference(cells[8192].run_dirs[0], pool, ref, "same-arch", CPU)
    records = {}
    for n, cell in cells.items():
        score_cell(cell, CPU)
        (records[n],) = evaluate_cell(cell, CPU, **evaluate_settings(extraction_prefixes=[8]))
    return cells, records


def attacks(record: dict) -> dict[str, dict]:
    return {r["attack"]: r for r in record["mia"]}


def test_members_and_nonmembers_have_the_same_corpus_counts(text_runs):
    cells, records = text_runs
    cell = cells[8192]
    run = Path(cell.run_dirs[0])
    sets = pl.read_parquet(run / "mia_sets.parquet")  # what the attacks compared
    members, others = sets.filter(pl.col("member")), sets.filter(~pl.col("member"))
    draw = records[8192]["mia"][0]
    assert counts(members) == counts(others) == json.loads(draw["strata"])
    assert set(counts(members)) == set(CORPORA) and members.height == HELDOUT
    for row in records[8192]["mia"]:
        assert json.loads(row["strata"]) == counts(members)
    # what the draw corrects: the lowest member ids come from the first corpus only
    scored = pl.read_parquet(run / "scores.parquet")
    lowest = scored.filter(pl.col("member")).sort("sample_id").head(HELDOUT)
    share = (lowest["stratum"] == CORPORA[0]).mean()
    held_share = (others["stratum"] == CORPORA[0]).mean()
    assert share > 0.95 and held_share < 0.9, (share, held_share)


def test_generalizing_text_model_is_at_chance(text_runs):
    _, records = text_runs
    loss = attacks(records[8192])["loss"]
    m = loss["n_members"]
    assert m == loss["n_nonmembers"] == HELDOUT
    se_auc = math.sqrt((2 * m + 1) / (12 * m * m))
    se_f1 = math.sqrt(1 / (8 * m))  # members among the upper half of 2m pooled scores
    assert abs(loss["auc"] - 0.5) < 3 * se_auc, loss
    assert abs(loss["f1_median"] - 0.5) < 3 * se_f1, loss
    assert loss["auc_se"] == pytest.approx(se_auc, rel=0.1)


def test_memorizing_text_model_is_detected_by_every_attack(text_runs):
    _, records = text_runs
    found = attacks(records[256])
    assert set(found) == {"loss", "reference", "zlib", "min_k"}  # no oracle in this cell
    for name, row in found.items():
        assert np.isfinite(row["auc"]), name
    assert found["loss"]["auc"] > 0.9 and found["reference"]["auc"] > 0.9


def test_reference_calibration_beats_the_loss_attack_on_text(text_runs):
    """Where samples differ in difficulty (e-mail headers against prose), a low loss marks an
    easy sample as much as a member; dividing out the reference's code length removes that."""
    _, records = text_runs
    found = attacks(records[1024])
    assert found["reference"]["auc"] > found["loss"]["auc"] + 0.02, found
