"""The evaluate stage: membership inference, extraction and TF-IDF for every run of a cell
(docs/science.md#membership-inference, #extraction, #tf-idf).

Membership inference runs every attack of memcap.metrics on members and non-members drawn
alike (memcap.metrics.draw_sets: seeded, the same count per corpus in both classes), against
the run's primary reference and, on text, the oracle too. Extraction: greedy decoding of the
S−k tokens after the first k; a sample is extracted when the whole continuation matches.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import torch

from memcap import device as dev
from memcap.cell import Cell, Runtime
from memcap.evaluation import SCORE_COLUMNS, evaluate_scores, extraction_rows
from memcap.io import atomic_path, write_json
from memcap.models import PackedLM, load_packed
from memcap.tokenizer import load_tokenizer
from memcap.tokens import count_rows, read_token_stack


@torch.no_grad()
def greedy_extraction(model: PackedLM, tokens: torch.Tensor, prefix_len: int,
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


def primary_scores(scores: Path) -> pl.DataFrame:
    """A run's rows against its primary reference: the columns the evaluation reads."""
    return (pl.scan_parquet(scores).filter(pl.col("primary_reference")).select(SCORE_COLUMNS)
            .collect())


def oracle_scores(scores: Path) -> pl.DataFrame:
    """A text run's oracle code lengths (sample_id, oracle_nll_bits; empty without one)."""
    return (pl.scan_parquet(scores).filter(pl.col("reference") == "oracle")
            .select("sample_id", oracle_nll_bits="ref_nll_bits").collect())


def evaluate_cell(cell: Cell, runtime: Runtime, *, mia_samples: int, mia_seed: int,
                  extraction_prefixes: list[int], extraction_samples: int) -> list[dict]:
    """MIA, extraction and TF-IDF for every seed of a cell (the settings are the config's
    `evaluate:` section).

    Writes per seed `evaluation.json` (mia and extraction rows, TF-IDF correlation),
    `mia_sets.parquet` (the drawn members and non-members, each attack's score) and
    `top_samples.parquet` (the 20 most memorized training samples, decoded with the cell's
    tokenizer when it has one). Each run's membership sets are drawn with (mia_seed, its seed):
    rerunning draws the same sets.
    """
    spec = cell.spec
    device = dev.resolve_device(runtime.device)
    dtype = dev.configure(device, spec.precision, runtime.threads)
    model = load_packed(spec.shape, [Path(d) / "model.safetensors" for d in cell.run_dirs], device)
    S = spec.seq_len
    prefixes = sorted({min(k, S - 1) for k in extraction_prefixes})
    # only the rows extraction decodes are read: at most extraction_samples per split
    m_ext = min(extraction_samples, spec.n, *map(count_rows, cell.heldout_data))
    splits = {split: dev.to_device_tokens(read_token_stack(paths, rows=m_ext)[1], device).long()
              for split, paths in (("train", cell.train_data), ("heldout", cell.heldout_data))}
    extracted = {}
    with dev.autocast(device, dtype):
        for split, toks in splits.items():
            for k in prefixes:
                extracted[split, k] = greedy_extraction(model, toks, k).float().mean(1).cpu()
    decode = load_tokenizer(Path(cell.tokenizer)).decode if cell.tokenizer else None
    records = []
    for m, (seed, run, out) in enumerate(zip(cell.seeds, cell.run_ids, map(Path, cell.run_dirs),
                                             strict=True)):
        scores = out / "scores.parquet"
        ev = evaluate_scores(run, primary_scores(scores), Path(cell.train_data[m]),
                             Path(cell.heldout_data[m]), mia_samples=mia_samples,
                             mia_seed=mia_seed, run_seed=seed, decode=decode,
                             oracle=oracle_scores(scores))
        record = {
            "run_id": run, "seed": seed, "n": spec.n, "mia": ev.mia,
            "extraction": extraction_rows(run, {(split, k): extracted[split, k][m]
                                                for split in splits for k in prefixes}, m_ext),
            "tfidf_mem_spearman": (ev.tfidf_mem_spearman if ev.tfidf_mem_spearman is not None
                                   else float("nan")),
        }
        with atomic_path(out / "mia_sets.parquet") as tmp:
            ev.sets.with_columns(run_id=pl.lit(run)).write_parquet(tmp)
        with atomic_path(out / "top_samples.parquet") as tmp:
            ev.top.write_parquet(tmp)
        write_json(out / "evaluation.json", record)
        records.append(record)
    return records
