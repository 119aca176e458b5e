"""The evaluate stage: membership inference, extraction and TF-IDF for every run of a cell
(docs/science.md#membership-inference, #extraction, #tf-idf).

Membership inference runs every attack of memcap.metrics on the run's scores against its
primary reference. Extraction: greedy decoding of the S−k tokens after the first k; a sample is
extracted when the whole continuation matches.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import torch

from memcap import device as dev
from memcap.cell import Cell, Runtime
from memcap.io import atomic_path, write_json
from memcap.metrics import membership_inference, spearman
from memcap.model import PackedGPT, load_packed
from memcap.samples import top_samples
from memcap.tokenizer import load_tokenizer
from memcap.tokens import count_rows, read_token_stack


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


SCORE_COLUMNS = ("sample_id", "member", "nll_bits", "ref_nll_bits", "mem_bits", "tfidf")


def evaluate_cell(cell: Cell, runtime: Runtime, *, mia_samples: int,
                  extraction_prefixes: list[int], extraction_samples: int) -> list[dict]:
    """MIA, extraction and TF-IDF for every seed of a cell (the settings are the config's
    `evaluate:` section).

    Writes per seed `evaluation.json` (mia and extraction rows, TF-IDF correlation) and
    `top_samples.parquet` (the 20 most memorized training samples, decoded with the cell's
    tokenizer when it has one). Scores against the primary reference only.
    """
    spec = cell.spec
    device = dev.resolve_device(runtime.device)
    dtype = dev.configure(device, spec.precision, runtime.threads)
    model = load_packed(spec, [Path(d) / "model.safetensors" for d in cell.run_dirs], device)
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
        # the columns the attacks, TF-IDF and the top samples use (no per-row run_id)
        scores = (pl.scan_parquet(out / "scores.parquet").filter(pl.col("primary_reference"))
                  .select(SCORE_COLUMNS).collect().with_columns(run_id=pl.lit(run)))
        members = scores.filter(pl.col("member"))
        record = {
            "run_id": run, "seed": seed, "n": spec.n,
            "mia": [{"run_id": run, **r} for r in membership_inference(scores, mia_samples)],
            "extraction": [{"run_id": run, "prefix_len": k, "split": split,
                            "rate": float(extracted[split, k][m]), "n_samples": m_ext}
                           for split in splits for k in prefixes],
            "tfidf_mem_spearman": spearman(members["tfidf"].to_numpy(),
                                           members["mem_bits"].to_numpy()),
        }
        with atomic_path(out / "top_samples.parquet") as tmp:
            top_samples(scores, Path(cell.train_data[m]), decode=decode).write_parquet(tmp)
        write_json(out / "evaluation.json", record)
        records.append(record)
    return records
