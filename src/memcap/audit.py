"""The audit stage: how much of its training data did a model trained elsewhere memorize, and
can membership be inferred? (docs/science.md#audit)

The flow (one entry function per workflow job):

  target(s), reference, member and non-member documents
      -> `write_samples`: every folder checked and every tokenizer compared before any model
         is loaded; documents tokenized with the targets' tokenizer, S-token samples cut,
         exact dedup (a non-member that repeats a member is dropped)
         -> samples/members.parquet, samples/nonmembers.parquet, samples/samples.json
  one model (a target or the reference) + the samples
      -> `score_model`: nll in bits of every sample -> models/<model>/scores.parquet, score.json
  a target's scores (+ the reference's)
      -> `evaluate_target`: per-sample table, memorization, every attack, greedy extraction,
         TF-IDF, top samples -> targets/<name>/ (scores.parquet, audit.json, tables/*.parquet:
         the target's rows of the database tables, kind 'audit' in `runs`)

Without a reference model the reference-based quantities (memorization, the
reference-calibrated attack, TF-IDF correlation, top samples) are left out.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import polars as pl

from memcap import corpus
from memcap import device as dev
from memcap.causal_lm import (
    ModelDirError,
    check_model_dir,
    load_causal_lm,
    load_tokenizer,
    same_tokenizer,
)
from memcap.cell import Runtime
from memcap.io import atomic_path, read_json, write_json
from memcap.metrics import (
    MIN_K_FRAC,
    attack_frame,
    draw_sets,
    membership_inference,
    spearman,
    tfidf,
)
from memcap.quantities import nats_per_token
from memcap.samples import (
    cut_samples,
    dedup_mask,
    memorization_totals,
    scores_frame,
    top_samples,
    with_zlib_bits,
)
from memcap.schemes import TRAINED
from memcap.tokens import HELDOUT_ID_OFFSET, read_tokens, tokens_frame

SETS = ("members", "nonmembers")
REFERENCE = "reference-model"  # the `reference` of an audit's per-sample rows


class AuditError(ValueError):
    """Audit input that cannot give what the config asks for."""


def run_id(target: str) -> str:
    """The id of an audited target in every table: audit:<name> (audit:<name>+<scheme> for a
    target audited with its weights quantized, audit.quantize)."""
    return f"audit:{target}"


def target_scheme(target: str) -> tuple[str, str | None]:
    """(the configured target's name, the quantization scheme or None) of an audited
    target's name: <name> or <name>+<scheme>."""
    name, _, scheme = target.partition("+")
    return name, scheme or None


# ---------------------------------------------------------------- samples

def _documents(path: Path, key: str) -> list[tuple[str, str]]:
    try:
        return corpus.read_local_documents(Path(path))
    except corpus.CorpusError as err:
        raise AuditError(f"config key '{key}': {err}; expected a .txt, .jsonl or .parquet "
                         "file, or a folder of them, with at least one document") from None


def write_samples(targets: dict[str, str], reference: str | None, members: Path,
                  nonmembers: Path, seq_len: int, sampling: str, out_dir: Path) -> str:
    """Check every model folder and tokenizer, then cut and deduplicate the member and
    non-member samples with the targets' tokenizer; write them to out_dir."""
    folders = {f"audit.targets.{name}": path for name, path in targets.items()}
    if reference:
        folders["audit.reference"] = reference
    configs = {key: check_model_dir(path, key) for key, path in folders.items()}
    tokenizers = {key: load_tokenizer(path, key) for key, path in folders.items()}
    (first, tok), *others = tokenizers.items()
    for key, other in others:
        if not same_tokenizer(tok, other):
            raise ModelDirError(
                f"tokenizer mismatch: {folders[first]} (config key '{first}', "
                f"{len(tok):,} tokens) and {folders[key]} (config key '{key}', "
                f"{len(other):,} tokens) split text differently; every target and the reference "
                "must share one tokenizer (the samples are cut once, with the targets' one)")
    for key, config in configs.items():
        if len(tok) > config["vocab_size"]:
            raise ModelDirError(f"config key '{key}': the tokenizer has {len(tok):,} tokens but "
                                f"{folders[key]}/config.json says vocab_size "
                                f"{config['vocab_size']:,}")

    tokens, flags, counts = [], [], {}
    for name, path in (("members", members), ("nonmembers", nonmembers)):
        docs = _documents(path, f"audit.{name}")
        ids = tok([t for _, t in docs], add_special_tokens=False)["input_ids"]
        _, cut = cut_samples(ids, seq_len, sampling)
        if not len(cut):
            raise AuditError(f"config key 'audit.{name}': none of the {len(docs)} documents of "
                             f"{path} has {seq_len} tokens; expected at least one "
                             f"{seq_len}-token sample (lower audit.seq_len or give longer "
                             "documents)")
        tokens.append(cut)
        flags.append(np.full(len(cut), name == "nonmembers"))
        counts[name] = {"documents": len(docs), "samples_before_dedup": len(cut)}
    all_tokens, is_non = np.concatenate(tokens), np.concatenate(flags)
    keep = dedup_mask(all_tokens, is_non)
    kept = {name: np.flatnonzero(keep & (is_non == (name == "nonmembers"))) for name in SETS}
    if not len(kept["nonmembers"]):  # only non-members can all go: as exact copies of members
        raise AuditError(f"config key 'audit.nonmembers': every sample of {nonmembers} repeats "
                         "a member sample exactly; expected non-members the model never "
                         "trained on")
    out_dir = Path(out_dir)
    for name, offset in (("members", 0), ("nonmembers", HELDOUT_ID_OFFSET)):
        rows = kept[name]
        counts[name].update(samples=len(rows),
                            duplicates=counts[name]["samples_before_dedup"] - len(rows))
        frame = tokens_frame(offset + np.arange(len(rows)), all_tokens[rows], len(tok))
        with atomic_path(out_dir / f"{name}.parquet") as tmp:
            frame.write_parquet(tmp)
    write_json(out_dir / "samples.json", {
        "seq_len": seq_len, "sampling": sampling, "tokenizer": type(tok).__name__,
        "tokenizer_dir": folders[first], "vocab_size": len(tok), **counts})
    return "; ".join(f"{name}: {c['documents']} documents, {c['samples']} samples after "
                     f"dropping {c['duplicates']} exact duplicates" for name, c in counts.items())


# ---------------------------------------------------------------- scoring

def score_model(model_dir: Path, key: str, samples_dir: Path, out_dir: Path,
                runtime: Runtime, scheme: str | None = None) -> str:
    """nll(x | model) in bits of every member and non-member sample -> out_dir; with a
    quantization scheme, of the model with its weights quantized."""
    samples_dir, out_dir = Path(samples_dir), Path(out_dir)
    seq_len = read_json(samples_dir / "samples.json")["seq_len"]
    device = dev.resolve_device(runtime.device)
    dev.configure(device, "fp32", runtime.threads)
    model = load_causal_lm(model_dir, key, seq_len, device, scheme=scheme)
    start = time.perf_counter()
    frames, losses = [], {}
    for name in SETS:
        ids, toks = read_tokens(samples_dir / f"{name}.parquet")
        bits, low = model.scores(toks, runtime.score_batch_size, MIN_K_FRAC)
        losses[name] = nats_per_token(float(bits.mean()), seq_len)
        frames.append(pl.DataFrame({"sample_id": ids, "member": name == "members",
                                    "nll_bits": bits, "min_k_bits": low}))
    with atomic_path(out_dir / "scores.parquet") as tmp:
        pl.concat(frames).write_parquet(tmp)
    write_json(out_dir / "score.json", {
        "model_dir": str(model_dir), "key": key, "loader": model.loader,
        "model_type": model.model_type, "params": model.params, "device": device.type,
        "member_loss": losses["members"], "nonmember_loss": losses["nonmembers"],
        "score_seconds": time.perf_counter() - start, "scheme": scheme or TRAINED,
        "stored_bits_per_param": (model.quantization["stored_bits_per_param"]
                                  if model.quantization else None)})
    return (f"{model_dir} ({model.model_type} through {model.loader}, {model.params:,} "
            f"parameters, {device.type}): member loss {losses['members']:.4f}, non-member loss "
            f"{losses['nonmembers']:.4f} nats/token")


# ---------------------------------------------------------------- evaluation

def _read_scores(model_dir: Path, ids: dict[str, np.ndarray],
                 column: str = "nll_bits") -> dict[str, np.ndarray]:
    """A model's nll_bits (or another column of its scores) per set, in the order of the
    sample files' ids."""
    scores = pl.read_parquet(Path(model_dir) / "scores.parquet")
    out = {}
    for name in SETS:
        part = scores.filter(pl.col("member") == (name == "members")).sort("sample_id")
        order = np.argsort(ids[name], kind="stable")
        if not np.array_equal(part["sample_id"].to_numpy(), ids[name][order]):
            raise AuditError(f"{model_dir}/scores.parquet scored other {name} than the "
                             "samples; rerun the audit's scoring")
        bits = np.empty(len(order))
        bits[order] = part[column].to_numpy()
        out[name] = bits
    return out


def evaluate_target(name: str, target_dir: str, samples_dir: Path, target_scores: Path,
                    reference_scores: Path | None, out_dir: Path, runtime: Runtime, *,
                    mia_samples: int, mia_seed: int, extraction_prefixes: list[int],
                    extraction_samples: int) -> dict:
    """Memorization, membership inference, extraction, TF-IDF and top samples of one target
    (the settings are the config's `evaluate:` section) -> out_dir."""
    samples_dir, out_dir = Path(samples_dir), Path(out_dir)
    info = read_json(samples_dir / "samples.json")
    S, V = info["seq_len"], info["vocab_size"]
    files = {s: samples_dir / f"{s}.parquet" for s in SETS}
    ids, toks = {}, {}
    for s in SETS:
        ids[s], toks[s] = read_tokens(files[s])
    target = read_json(Path(target_scores) / "score.json")
    bits = _read_scores(target_scores, ids)
    min_k = _read_scores(target_scores, ids, "min_k_bits")
    ref = read_json(Path(reference_scores) / "score.json") if reference_scores else None
    ref_bits = _read_scores(reference_scores, ids) if reference_scores else None
    run = run_id(name)
    tf = tfidf(toks["members"], V)
    ref_name = REFERENCE if ref else "none"
    scores = pl.concat([
        scores_frame(run, ids[s], s == "members", bits[s], ref_bits[s] if ref else None,
                     tf if s == "members" else None, ref_name, min_k_bits=min_k[s])
        for s in SETS])
    tokenizer = load_tokenizer(info["tokenizer_dir"], f"audit.targets.{name}")
    drawn_members, drawn_others, draw = draw_sets(scores, mia_samples, mia_seed)
    sets = attack_frame(*(
        with_zlib_bits(frame, files[s], tokenizer.decode)
        for frame, s in ((drawn_members, "members"), (drawn_others, "nonmembers"))))
    mia = [{"run_id": run, **r} for r in membership_inference(sets, draw)]

    device = dev.resolve_device(runtime.device)
    dev.configure(device, "fp32", runtime.threads)
    configured, scheme = target_scheme(name)
    model = load_causal_lm(target_dir, f"audit.targets.{configured}", S, device, scheme=scheme)
    m_ext = min(extraction_samples, len(ids["members"]), len(ids["nonmembers"]))
    extraction = [{"run_id": run, "prefix_len": k, "split": split, "n_samples": m_ext,
                   "rate": float(model.extracted(toks[s][:m_ext], k,
                                                 runtime.score_batch_size).mean())}
                  for s, split in (("members", "train"), ("nonmembers", "heldout"))
                  for k in sorted({min(k, S - 1) for k in extraction_prefixes})]

    members = scores.filter(pl.col("member"))
    loss = {s: nats_per_token(float(bits[s].mean()), S) for s in SETS}
    tables = {
        "runs": pl.DataFrame([{
            "run_id": run, "kind": "audit", "vocab_size": V, "seq_len": S,
            "n": len(ids["members"]), "params": target["params"], "precision": "fp32",
            "compute_dtype": "fp32", "device": device.type, "train_loss": loss["members"],
            "heldout_loss": loss["nonmembers"]}]),
        "mia": pl.DataFrame(mia),
        "extraction": pl.DataFrame(extraction),
        "audits": pl.DataFrame([{
            "run_id": run, "target": name, "scheme": scheme or TRAINED,
            "stored_bits_per_param": target.get("stored_bits_per_param"),
            "model_dir": target_dir,
            "model_type": target["model_type"], "loader": target["loader"],
            "params": target["params"], "reference_dir": ref and ref["model_dir"],
            "reference_model_type": ref and ref["model_type"],
            "reference_params": ref and ref["params"], "tokenizer": info["tokenizer"],
            "vocab_size": V, "seq_len": S, "sampling": info["sampling"],
            "member_documents": info["members"]["documents"],
            "nonmember_documents": info["nonmembers"]["documents"],
            "members": info["members"]["samples"], "nonmembers": info["nonmembers"]["samples"],
            "duplicates": info["members"]["duplicates"] + info["nonmembers"]["duplicates"],
            "member_loss": loss["members"], "nonmember_loss": loss["nonmembers"],
            "reference_nonmember_loss": ref and ref["nonmember_loss"]}],
            schema_overrides={"stored_bits_per_param": pl.Float64,
                              "reference_dir": pl.String, "reference_model_type": pl.String,
                              "reference_params": pl.Int64,
                              "reference_nonmember_loss": pl.Float64}),
    }
    record = {"run_id": run, "target": name, "mia": mia, "extraction": extraction,
              "reference": ref is not None, **tables["audits"].row(0, named=True)}
    if ref:
        totals = memorization_totals(scores)
        rho = spearman(members["tfidf"].to_numpy(), members["mem_bits"].to_numpy())
        tables["memorization"] = pl.DataFrame([{
            "run_id": run, "reference": REFERENCE, **totals,
            "memorizable_fraction": totals["mem_bits"] / totals["dataset_bits"],
            "bits_per_param": totals["mem_bits"] / target["params"],
            "tfidf_mem_spearman": rho if np.isfinite(rho) else None}])
        tables["top_samples"] = top_samples(scores, files["members"], decode=tokenizer.decode)
        record.update(totals, tfidf_mem_spearman=rho if np.isfinite(rho) else None)
    with atomic_path(out_dir / "scores.parquet") as tmp:
        scores.write_parquet(tmp)
    for table in tables:
        with atomic_path(out_dir / "tables" / f"{table}.parquet") as tmp:
            tables[table].write_parquet(tmp)
    write_json(out_dir / "audit.json", record)
    return record
