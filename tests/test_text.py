"""Real text: tokenizers, the document split, samples, deduplication, dataset subsets,
references, and text memorization on a real corpus with a real trained model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from conftest import CPU, make_cell, small_spec
from memcap.corpus import tokenizer_files
from memcap.stages.laws import double_descent
from memcap.stages.reference import choose_oracle, score_reference
from memcap.stages.score import score_cell
from memcap.stages.text import (
    TextDataError,
    assign_splits,
    build_pool,
    cut_samples,
    dedup_mask,
    documents_frame,
    install_gpt2,
    train_bpe,
    write_text_dataset,
)
from memcap.stages.train import train_cell
from memcap.tokenizer import load_tokenizer
from memcap.tokens import HELDOUT_ID_OFFSET, read_tokens


@pytest.fixture(scope="module")
def moby(documents):
    return assign_splits(documents_frame(documents("moby_dick"), corpus="moby_dick"), 0.2, 0)


@pytest.fixture(scope="module")
def bpe(moby, tmp_path_factory):
    out = tmp_path_factory.mktemp("bpe")
    train_bpe(moby.filter(pl.col("split") == "train")["text"].to_list(), 300, out)
    return out


def test_gpt2_tokenizer_gives_gpt2_ids(fetched, tmp_path):
    vocab_bpe, encoder_json = tokenizer_files(fetched("gpt2_tokenizer")[0], tmp_path / "src")
    tok = load_tokenizer(install_gpt2(vocab_bpe, encoder_json, tmp_path / "gpt2"))
    assert tok.vocab_size == 50257
    assert tok.encode_batch(["Hello world"]) == [[15496, 995]]
    text = "Call me Ishmael. Some years ago—never mind how long precisely"
    assert tok.decode(tok.encode_batch([text])[0]) == text


def test_gpt2_files_with_a_wrong_hash_are_refused(tmp_path):
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\n")
    (tmp_path / "encoder.json").write_text("{}")
    with pytest.raises(TextDataError, match="vocab.bpe.*SHA-256"):
        install_gpt2(tmp_path / "vocab.bpe", tmp_path / "encoder.json", tmp_path / "out")


def test_bpe_is_deterministic_and_exactly_its_size(moby, bpe, tmp_path):
    again = tmp_path / "again"
    train_bpe(moby.filter(pl.col("split") == "train")["text"].to_list(), 300, again)
    assert (bpe / "tokenizer.json").read_bytes() == (again / "tokenizer.json").read_bytes()
    tok = load_tokenizer(bpe)
    assert tok.vocab_size == 300
    ids = tok.encode_batch(["Call me Ishmael."])[0]
    assert max(ids) < 300 and tok.decode(ids) == "Call me Ishmael."
    with pytest.raises(TextDataError, match="bpe_vocab_size"):
        train_bpe(["tiny text"], 5000, tmp_path / "too-big")


def test_document_split_is_by_document_and_stable(moby):
    held = set(moby.filter(pl.col("split") == "heldout")["doc_id"])
    assert 0.1 < len(held) / moby.height < 0.3
    # a document's split depends on its id only: dropping other documents moves nobody
    half = assign_splits(moby.drop("split").head(60), 0.2, 0)
    assert set(half.filter(pl.col("split") == "heldout")["doc_id"]) == held & set(half["doc_id"])
    # another split seed gives another split
    other = assign_splits(moby.drop("split"), 0.2, 1)
    assert set(other.filter(pl.col("split") == "heldout")["doc_id"]) != held


def test_cut_samples_first_and_windows():
    docs = [list(range(10)), list(range(100, 103)), list(range(200, 208))]
    idx, toks = cut_samples(docs, 4, "first")
    assert idx.tolist() == [0, 2] and toks.tolist() == [[0, 1, 2, 3], [200, 201, 202, 203]]
    idx, toks = cut_samples(docs, 4, "windows")
    assert idx.tolist() == [0, 0, 2, 2]
    assert toks[1].tolist() == [4, 5, 6, 7] and toks[3].tolist() == [204, 205, 206, 207]


def test_dedup_keeps_first_copies_and_drops_heldout_copies_of_train():
    toks = np.array([[1, 2], [1, 2], [3, 4], [1, 2], [5, 6], [5, 6], [7, 8]])
    held = np.array([False, False, False, True, True, True, False])
    keep = dedup_mask(toks, held)
    # row 1 repeats row 0; row 3 (held out) repeats a train row; row 5 repeats row 4
    assert keep.tolist() == [True, False, True, False, True, False, True]


def test_pool_split_dedup_statistics_and_nested_datasets(moby, bpe, tmp_path):
    planted = moby.vstack(pl.DataFrame({
        "corpus": ["moby_dick"] * 2, "doc_id": ["moby_dick/zz-copy-a", "moby_dick/zz-copy-b"],
        "text": [moby["text"][5]] * 2, "split": ["train", "train"]}))
    stats = build_pool(planted, load_tokenizer(bpe), 16, "windows", tmp_path / "pool.parquet",
                       tmp_path / "stats.json")
    pool = pl.read_parquet(tmp_path / "pool.parquet")
    # no document contributes to both splits
    per_doc = pool.group_by("doc_id").agg(pl.col("split").n_unique())
    assert per_doc["split"].max() == 1
    # no token sequence appears twice, nor in both splits
    keys = [bytes(np.asarray(t, dtype=np.int64)) for t in pool["tokens"].to_list()]
    assert len(set(keys)) == len(keys)
    # statistics: counts and percentages; the two planted copies are all duplicates
    train = next(r for r in stats["rows"] if r["corpus"] == "all" and r["split"] == "train")
    copies = len(load_tokenizer(bpe).encode_batch([moby["text"][5]])[0]) // 16
    assert train["duplicates"] >= 2 * copies
    assert train["samples_after_dedup"] == train["samples_before_dedup"] - train["duplicates"]
    assert train["duplicate_pct"] == pytest.approx(
        100 * train["duplicates"] / train["samples_before_dedup"])
    assert train["samples_after_dedup"] == pool.filter(pl.col("split") == "train").height
    held_ids = pool.filter(pl.col("split") == "heldout")["sample_id"]
    assert held_ids.min() >= HELDOUT_ID_OFFSET
    # datasets: nested over N, the held-out set the same for every seed
    for n in (32, 128):
        write_text_dataset(tmp_path / "pool.parquet", tmp_path / f"s1-{n}.parquet", seed=1,
                           split="train", n=n)
    small, large = (read_tokens(tmp_path / f"s1-{n}.parquet")[0] for n in (32, 128))
    assert (large[:32] == small).all()
    for seed in (0, 1):
        write_text_dataset(tmp_path / "pool.parquet", tmp_path / f"h{seed}.parquet", seed=seed,
                           split="heldout", n=64)
    assert (read_tokens(tmp_path / "h0.parquet")[0] == read_tokens(tmp_path / "h1.parquet")[0]
            ).all()
    with pytest.raises(TextDataError, match="text.dataset_sizes"):
        write_text_dataset(tmp_path / "pool.parquet", tmp_path / "x.parquet", seed=0,
                           split="train", n=10**7)


def test_oracle_is_the_lowest_heldout_loss_or_the_named_run():
    ids = ["text:V1:S2:L1-d8:fp32:n8:s0", "text:V1:S2:L1-d16:fp32:n8:s0"]
    losses = pl.DataFrame({"run_id": ids, "run_dir": ["a", "b"], "params": [1, 2],
                           "heldout_loss": [1.5, 2.0]})
    chosen, record = choose_oracle(losses, None)
    assert chosen["run_id"].endswith("L1-d8:fp32:n8:s0") and record["chosen_is_lowest"]
    chosen, record = choose_oracle(losses, "L1-d16:fp32:n8:s0")
    assert chosen["run_dir"] == "b" and not record["chosen_is_lowest"]
    assert record["heldout_loss_gap"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="text.oracle"):
        choose_oracle(losses, "L4-d8:fp32:n8:s0")


def test_text_memorization_is_nonnegative_and_falls_with_n(moby, bpe, tmp_path, quiet):
    """A real model on real text: against the same-architecture reference trained on the
    largest N, memorization per sample is never negative and falls as N grows."""
    pool = tmp_path / "pool.parquet"
    build_pool(moby, load_tokenizer(bpe), 16, "windows", pool, tmp_path / "stats.json")
    held = tmp_path / "held.parquet"
    write_text_dataset(pool, held, seed=0, split="heldout", n=128)
    sizes, per_sample, share = (8, 64, 512), {}, {}
    runs = {}
    ref = tmp_path / "ref.parquet"
    for n in sizes:
        spec = small_spec(vocab_size=300, n=n, d_model=16, steps=300)
        data = tmp_path / f"train-{n}.parquet"
        write_text_dataset(pool, data, seed=0, split="train", n=n)
        runs[n] = make_cell(tmp_path, spec, [0], [data], [held], f"run-{n}", f"ck-{n}.pt",
                            kind="text", references={"same-arch": ref})
        train_cell(runs[n], CPU, echo=quiet)
    score_reference(runs[512].run_dirs[0], pool, ref, "same-arch", CPU)
    for n, cell in runs.items():
        score_cell(cell, CPU)
        run_dir = Path(cell.run_dirs[0])
        scores = pl.read_parquet(run_dir / "scores.parquet")
        assert scores["mem_bits"].min() >= 0
        assert set(scores["reference"]) == {"same-arch"} and scores["primary_reference"].all()
        members = scores.filter(pl.col("member"))
        per_sample[n] = members["mem_bits"].mean()
        share[n] = members["mem_bits"].sum() / members["ref_nll_bits"].sum()
        record = json.loads((run_dir / "score.json").read_text())
        assert record["mem_bits"] == pytest.approx(members["mem_bits"].sum())
    # below capacity samples are memorized whole (bits per sample then follow the samples'
    # difficulty); the share memorized falls as N grows, to ~0 on the reference's own data
    assert share[8] > 0.9 and share[8] >= share[64] - 0.02 and share[64] > share[512]
    assert per_sample[512] < 0.05 * per_sample[8]


def test_double_descent_finds_the_peak_and_flags_edges():
    runs = pl.DataFrame({"run_id": [f"r{i}" for i in range(8)], "kind": ["text"] * 8,
                         "arch": ["A"] * 4 + ["B"] * 4, "precision": ["fp32"] * 8,
                         "params": [10] * 4 + [20] * 4, "n": [1, 2, 4, 8] * 2,
                         "heldout_loss": [3.0, 5.0, 4.0, 2.0, 6.0, 5.0, 4.0, 3.0]})
    mem = pl.DataFrame({"run_id": runs["run_id"],
                        "capacity_ratio": [0.5, 1.0, 2.0, 4.0, 0.25, 0.5, 1.0, 2.0]})
    dd = double_descent(runs, mem)
    a = dd.filter(pl.col("arch") == "A").row(0, named=True)
    assert (a["peak_n"], a["peak_ratio"], a["peak_interior"]) == (2, 1.0, True)
    b = dd.filter(pl.col("arch") == "B").row(0, named=True)
    assert (b["peak_n"], b["peak_interior"]) == (1, False)


def _documents_cli(tmp_path, source: dict):
    return subprocess.run(
        [sys.executable, "-m", "memcap", "documents", "--source", json.dumps(source),
         "--heldout-fraction", "0.25", "--split-seed", "0", "--cache-dir",
         str(tmp_path / "cache"), "--out", str(tmp_path / "docs.parquet")],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_local_source_through_the_documents_stage(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    for i in range(12):
        (folder / f"doc{i:02d}.txt").write_text(f"Document number {i}. " * 40)
    out = _documents_cli(tmp_path, {"source": "local", "local_path": str(folder)})
    assert out.returncode == 0, out.stderr
    docs = pl.read_parquet(tmp_path / "docs.parquet")
    assert docs.height == 12 and set(docs["corpus"]) == {"local"}
    assert set(docs["split"]) <= {"train", "heldout"}


def test_offline_huggingface_source_fails_with_a_clear_message(tmp_path):
    pytest.importorskip("datasets")
    out = _documents_cli(tmp_path, {"source": "huggingface", "huggingface": {
        "dataset": "HuggingFaceFW/fineweb", "name": "sample-10BT", "split": "train",
        "max_documents": 10}})
    assert out.returncode == 1
    assert "HuggingFaceFW/fineweb" in out.stderr and "internet" in out.stderr
    assert not (tmp_path / "docs.parquet").exists()
