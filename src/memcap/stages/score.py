"""The score stage: per-sample code lengths and unintended memorization for every run of a cell
(docs/science.md#code-length, #memorization).

For each seed, writes `scores.parquet`, one row per (sample, reference) for every training
sample and every held-out sample of the run:

  run_id            str      the run (memcap.config.run_id)
  sample_id         int64    the dataset's id (held-out ids are offset, see memcap.stages.data)
  member            bool     True for training samples
  reference         str      the reference θ: "uniform" (synthetic), "same-arch" or "oracle"
  primary_reference bool     True for the reference memcap's headline numbers use
  nll_bits          float64  nll(x | θ̂): code length under the trained model, bits
  ref_nll_bits      float64  nll(x | θ): code length under the reference, bits
  mem_bits          float64  max(0, ref_nll_bits − nll_bits)
  tfidf             float64  TF-IDF of a training sample in its training set (null: held out)
  min_k_bits        float64  mean code length of the sample's 20 % least likely tokens, bits
                             (the Min-K% attack's score, memcap.metrics.MIN_K_FRAC)
  stratum           str      the sample's corpus (text; null for synthetic data): membership
                             sets are drawn with the same count per stratum in both classes

and `score.json` with the run's totals per reference and its losses (nats per predicted
token). Synthetic data: the reference is the true distribution, (S−1)·log2 V bits for every
sample. Text: the references are models (memcap.stages.reference), whose code lengths of the whole
pool are read from their score files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from memcap import device as dev
from memcap.cell import Cell, Runtime
from memcap.io import atomic_path, write_json
from memcap.loss import sequence_scores
from memcap.metrics import MIN_K_FRAC, tfidf
from memcap.models import load_packed
from memcap.quantities import nats_per_token, uniform_code_bits
from memcap.samples import memorization_totals, scores_frame
from memcap.tokens import read_strata, read_token_stack

PRIMARY = {"synthetic": "uniform", "text": "same-arch"}


def read_reference(path: Path) -> dict[int, float]:
    """sample_id -> nll_bits from a reference's score file (memcap.stages.reference)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"reference scores {path} do not exist")
    df = pl.read_parquet(path, columns=["sample_id", "nll_bits"])
    return dict(zip(df["sample_id"].to_list(), df["nll_bits"].to_list(), strict=True))


def reference_lookup(ref: dict[int, float], ids: np.ndarray, path: Path) -> np.ndarray:
    missing = [int(i) for i in ids if int(i) not in ref]
    if missing:
        raise ValueError(f"reference scores {path} lack {len(missing)} sample(s) of the run, "
                         f"e.g. sample_id {missing[0]}: the reference scored another pool")
    return np.array([ref[int(i)] for i in ids])


def score_cell(cell: Cell, runtime: Runtime) -> list[dict]:
    """Score each seed's model on its training set and its held-out set, against the uniform
    reference (synthetic) or each of the cell's reference models' scores (text)."""
    spec, kind = cell.spec, cell.kind
    device = dev.resolve_device(runtime.device)
    dtype = dev.configure(device, spec.precision, runtime.threads)
    model = load_packed(spec.shape, [Path(d) / "model.safetensors" for d in cell.run_dirs], device)
    amp = dev.autocast(device, dtype)
    references = {name: Path(p) for name, p in cell.references.items()}
    if references and PRIMARY[kind] not in references:
        raise ValueError(f"{kind} scoring needs the {PRIMARY[kind]!r} reference, got "
                         f"{sorted(references)}")
    ref_tables = {name: read_reference(p) for name, p in references.items()}

    train_ids, train_np = read_token_stack(cell.train_data)
    held_ids, held_np = read_token_stack(cell.heldout_data)
    bits, min_k = {}, {}
    for split, toks in (("train", train_np), ("heldout", held_np)):
        nll, low = sequence_scores(model, dev.to_device_tokens(toks, device),
                                   runtime.score_batch_size, amp, min_k_frac=MIN_K_FRAC)
        bits[split], min_k[split] = nll.cpu().numpy(), low.cpu().numpy()

    def ref_bits(name: str, ids: np.ndarray) -> np.ndarray:
        if name == "uniform":
            return np.full(len(ids), uniform_code_bits(spec.seq_len, spec.vocab_size))
        return reference_lookup(ref_tables[name], ids, references[name])

    names = sorted(ref_tables, key=lambda r: r != PRIMARY[kind]) or ["uniform"]
    records = []
    for m, (seed, run) in enumerate(zip(cell.seeds, cell.run_ids, strict=True)):
        tf = tfidf(train_np[m], spec.vocab_size)
        strata = {"train": read_strata(cell.train_data[m]),
                  "heldout": read_strata(cell.heldout_data[m])}  # once, for every reference
        parts, totals = [], {}
        for ref in names:
            primary = ref == PRIMARY[kind]
            frame = pl.concat([
                scores_frame(run, train_ids[m], True, bits["train"][m],
                             ref_bits(ref, train_ids[m]), tf, ref, primary,
                             min_k["train"][m], strata["train"]),
                scores_frame(run, held_ids[m], False, bits["heldout"][m],
                             ref_bits(ref, held_ids[m]), None, ref, primary,
                             min_k["heldout"][m], strata["heldout"]),
            ])
            parts.append(frame)
            totals[ref] = memorization_totals(frame)
        record = {
            "run_id": run, "seed": seed, **totals[PRIMARY[kind]], "reference": PRIMARY[kind],
            "references": totals,
            "train_loss": nats_per_token(float(bits["train"][m].mean()), spec.seq_len),
            "heldout_loss": nats_per_token(float(bits["heldout"][m].mean()), spec.seq_len),
        }
        out = Path(cell.run_dirs[m])
        with atomic_path(out / "scores.parquet") as tmp:
            pl.concat(parts).write_parquet(tmp)
        write_json(out / "score.json", record)
        records.append(record)
    return records
