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
from memcap.cell import Runtime
from memcap.evaluation import (
    evaluate_scores,
    extraction_rows,
    memorization_row,
    reference_quality,
)
from memcap.io import atomic_path, read_json, write_json
from memcap.metrics import MIN_K_FRAC, tfidf
from memcap.models.causal_lm import (
    ModelDirError,
    check_model_dir,
    load_causal_lm,
    load_tokenizer,
)
from memcap.quantities import nats_per_token
from memcap.samples import cut_samples, dedup_mask, scores_frame
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


def _token_dataset(path: Path) -> bool:
    """Whether `path` is a memcap token dataset (a Parquet file of sample_id and tokens)."""
    path = Path(path)
    if path.suffix != ".parquet" or not path.is_file():
        return False
    return {"sample_id", "tokens"} <= set(pl.read_parquet_schema(path))


def _given_tokens(path: Path, key: str, seq_len: int) -> list[list[int]]:
    """The samples of a token dataset, each cut to its first seq_len tokens."""
    _, toks = read_tokens(path)
    if toks.shape[1] < seq_len:
        raise AuditError(f"config key '{key}': the samples of {path} have {toks.shape[1]} "
                         f"tokens, audit.seq_len asks for {seq_len}; expected at least that")
    return [row[:seq_len].tolist() for row in toks]


def _tokenized(tok, texts: list[str]) -> list[list[int]]:
    return tok(texts, add_special_tokens=False)["input_ids"] if texts else []


def group_models(ids: dict[str, tuple]) -> list[list[str]]:
    """Models grouped by what their tokenizers do: the same ids for every member and
    non-member document (a special token that never occurs is no difference). ids: config
    key -> the ids of every document, in order; groups in order of their first model."""
    groups: dict[tuple, list[str]] = {}
    for key, value in ids.items():
        groups.setdefault(value, []).append(key)
    return list(groups.values())


def write_samples(targets: dict[str, str], references: list[str], members: Path,
                  nonmembers: Path, seq_len: int, sampling: str, out_dir: Path) -> str:
    """Check every model folder, group the targets by what their tokenizers do to the
    documents, assign each reference to the group that tokenizes as it does, then cut and
    deduplicate each group's member and non-member samples with its tokenizer:
    out_dir/group=<first target>/ (members.parquet, nonmembers.parquet, samples.json) and
    out_dir/groups.json (each group's targets and reference). Member and non-member files
    that are memcap token datasets (sample_id, tokens) are used as given: one group, nothing
    re-tokenized."""
    folders = {f"audit.targets.{name}": path for name, path in targets.items()}
    ref_keys = (["audit.reference"] if len(references) == 1 else
                [f"audit.references[{i}]" for i in range(len(references))])
    folders.update(zip(ref_keys, references, strict=True))
    configs = {key: check_model_dir(path, key) for key, path in folders.items()}
    tokenizers = {key: load_tokenizer(path, key) for key, path in folders.items()}
    sources = {"members": Path(members), "nonmembers": Path(nonmembers)}
    given = {name: _token_dataset(path) for name, path in sources.items()}
    if given["members"] != given["nonmembers"]:
        raise AuditError("config keys 'audit.members' and 'audit.nonmembers': one is a token "
                         "dataset (sample_id, tokens) and the other documents; expected both "
                         "of one kind")
    docs = {} if given["members"] else {
        name: _documents(path, f"audit.{name}") for name, path in sources.items()}
    if given["members"]:
        fixed = {name: _given_tokens(path, f"audit.{name}", seq_len)
                 for name, path in sources.items()}
        ids = {key: fixed for key in folders}
        groups = [list(folders)]
    else:
        ids = {key: {name: _tokenized(tok, [t for _, t in docs[name]]) for name in docs}
               for key, tok in tokenizers.items()}
        groups = group_models({key: tuple(tuple(map(tuple, ids[key][name])) for name in docs)
                               for key in folders})
    plan = {}
    for group in groups:
        group_targets = [k.removeprefix("audit.targets.") for k in group
                         if k.startswith("audit.targets.")]
        refs = [k for k in group if k in ref_keys]
        if not group_targets:
            raise AuditError(f"config key '{refs[0]}': {folders[refs[0]]} tokenizes the "
                             "documents differently from every target; expected a reference "
                             "with the tokenizer of the targets it calibrates")
        if len(refs) > 1:
            raise AuditError(f"config keys {refs}: two references tokenize as targets "
                             f"{group_targets} do; expected one reference per tokenizer group")
        plan[group_targets[0]] = {"targets": group_targets,
                                  "reference": refs[0] if refs else None,
                                  "reference_index": ref_keys.index(refs[0]) if refs else None,
                                  "keys": group}
    out_dir = Path(out_dir)
    lines = []
    for name, group in plan.items():
        first = f"audit.targets.{name}"
        tok = tokenizers[first]
        lines.append(_write_group(out_dir / f"group={name}", ids[first], tok, folders, configs,
                                  group["keys"], seq_len, sampling, docs, sources, given))
    write_json(out_dir / "groups.json", {
        "groups": {g: {k: v for k, v in p.items() if k != "keys"} for g, p in plan.items()},
        "target_group": {t: g for g, p in plan.items() for t in p["targets"]}})
    return "; ".join(lines)


def _write_group(out: Path, ids: dict[str, list], tok, folders: dict[str, str],
                 configs: dict[str, dict], keys: list[str], seq_len: int, sampling: str,
                 docs: dict, sources: dict[str, Path], given: dict[str, bool]) -> str:
    """Cut, deduplicate and write one tokenizer group's samples."""
    tokens, flags, counts = [], [], {}
    for name in SETS:
        if given[name]:
            cut = np.asarray(ids[name], dtype=np.int64).reshape(-1, seq_len)
            documents = len(cut)
        else:
            _, cut = cut_samples(ids[name], seq_len, sampling)
            documents = len(docs[name])
        if not len(cut):
            raise AuditError(f"config key 'audit.{name}': none of the {documents} documents of "
                             f"{sources[name]} has {seq_len} tokens; expected at least one "
                             f"{seq_len}-token sample (lower audit.seq_len or give longer "
                             "documents)")
        tokens.append(cut)
        flags.append(np.full(len(cut), name == "nonmembers"))
        counts[name] = {"documents": documents, "samples_before_dedup": len(cut)}
    all_tokens, is_non = np.concatenate(tokens), np.concatenate(flags)
    top = int(all_tokens.max(initial=0))
    for key in keys:
        if top >= configs[key]["vocab_size"]:
            raise ModelDirError(f"config key '{key}': the samples use token id {top:,} but "
                                f"{folders[key]}/config.json says vocab_size "
                                f"{configs[key]['vocab_size']:,}")
    keep = dedup_mask(all_tokens, is_non)
    kept = {name: np.flatnonzero(keep & (is_non == (name == "nonmembers"))) for name in SETS}
    if not len(kept["nonmembers"]):  # only non-members can all go: as exact copies of members
        raise AuditError(f"config key 'audit.nonmembers': every sample of "
                         f"{sources['nonmembers']} repeats a member sample exactly; expected "
                         "non-members the model never trained on")
    # V: the smallest vocabulary of the group's models (ids past it never occur)
    vocab = min([len(tok), *(configs[k]["vocab_size"] for k in keys)])
    for name, offset in (("members", 0), ("nonmembers", HELDOUT_ID_OFFSET)):
        rows = kept[name]
        counts[name].update(samples=len(rows),
                            duplicates=counts[name]["samples_before_dedup"] - len(rows))
        frame = tokens_frame(offset + np.arange(len(rows)), all_tokens[rows], vocab)
        with atomic_path(out / f"{name}.parquet") as tmp:
            frame.write_parquet(tmp)
    first = keys[0]
    write_json(out / "samples.json", {
        "seq_len": seq_len, "sampling": "given" if given["members"] else sampling,
        "tokenizer": type(tok).__name__, "tokenizer_dir": folders[first], "vocab_size": vocab,
        **counts})
    return f"group {out.name}: " + ", ".join(
        f"{name} {c['documents']} documents, {c['samples']} samples after dropping "
        f"{c['duplicates']} exact duplicates" for name, c in counts.items())


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
                    extraction_samples: int, require_good_reference: bool = False) -> dict:
    """Memorization (with its false-positive floor and excess), membership inference,
    extraction, TF-IDF and top samples of one target, by the grid's own evaluation
    (memcap.evaluation; the settings are the config's `evaluate:` section) -> out_dir.
    require_good_reference: a flagged reference (reference_quality) stops the audit."""
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
    quality = reference_quality(scores, S, V, ref["model_dir"] if ref else "none")
    if require_good_reference and quality["reference_flag"]:
        raise AuditError(f"config key 'audit.require_good_reference': the "
                         f"{quality['reference_flag']}; memorization against it credits "
                         "bits to samples the target never saw (use the target's base "
                         "checkpoint before fine-tuning as the reference, "
                         "docs/science.md#audit)")
    tokenizer = load_tokenizer(info["tokenizer_dir"], f"audit.targets.{name}")
    ev = evaluate_scores(run, scores, files["members"], files["nonmembers"],
                         mia_samples=mia_samples, mia_seed=mia_seed, run_seed=0,
                         decode=tokenizer.decode)

    device = dev.resolve_device(runtime.device)
    dev.configure(device, "fp32", runtime.threads)
    configured, scheme = target_scheme(name)
    model = load_causal_lm(target_dir, f"audit.targets.{configured}", S, device, scheme=scheme)
    m_ext = min(extraction_samples, len(ids["members"]), len(ids["nonmembers"]))
    extraction = extraction_rows(run, {
        (split, k): model.extracted(toks[s][:m_ext], k, runtime.score_batch_size).mean()
        for s, split in (("members", "train"), ("nonmembers", "heldout"))
        for k in sorted({min(k, S - 1) for k in extraction_prefixes})}, m_ext)

    loss = {s: nats_per_token(float(bits[s].mean()), S) for s in SETS}
    # memorization (with its floor) and the reference's quality: the grid's memorization row
    memorized = (memorization_row(run, scores, seq_len=S, vocab_size=V,
                                  params=target["params"], reference=REFERENCE,
                                  reference_label=ref["model_dir"]) if ref else None)
    totals = memorized or dict.fromkeys(("mem_bits", "floor_bits_per_sample", "excess_bits",
                                         "excess_bits_se"))
    tables = {
        "runs": pl.DataFrame([{
            "run_id": run, "kind": "audit", "vocab_size": V, "seq_len": S,
            "n": len(ids["members"]), "params": target["params"], "precision": "fp32",
            "compute_dtype": "fp32", "device": device.type, "train_loss": loss["members"],
            "heldout_loss": loss["nonmembers"]}]),
        "mia": pl.DataFrame(ev.mia),
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
            "reference_nonmember_loss": ref and ref["nonmember_loss"],
            **quality, "mem_bits": totals["mem_bits"],
            "floor_bits_per_sample": totals["floor_bits_per_sample"],
            "excess_bits": totals["excess_bits"], "excess_bits_se": totals["excess_bits_se"]}],
            schema_overrides={"stored_bits_per_param": pl.Float64,
                              "reference_dir": pl.String, "reference_model_type": pl.String,
                              "reference_params": pl.Int64,
                              "reference_nonmember_loss": pl.Float64,
                              "reference_heldout_bits_per_token": pl.Float64,
                              "reference_flag": pl.String, "mem_bits": pl.Float64,
                              "floor_bits_per_sample": pl.Float64, "excess_bits": pl.Float64,
                              "excess_bits_se": pl.Float64}),
    }
    record = {"run_id": run, "target": name, "mia": ev.mia, "extraction": extraction,
              "reference": ref is not None, **tables["audits"].row(0, named=True)}
    if ref:
        tables["memorization"] = pl.DataFrame([{
            **memorized, "tfidf_mem_spearman": ev.tfidf_mem_spearman}])
        tables["top_samples"] = ev.top
        record.update(tfidf_mem_spearman=ev.tfidf_mem_spearman)
    else:  # no reference in this target's group: the tables are written empty
        tables["memorization"] = tables["top_samples"] = pl.DataFrame(
            schema={"run_id": pl.String})
    with atomic_path(out_dir / "scores.parquet") as tmp:
        scores.write_parquet(tmp)
    for table in tables:
        with atomic_path(out_dir / "tables" / f"{table}.parquet") as tmp:
            tables[table].write_parquet(tmp)
    write_json(out_dir / "audit.json", record)
    return record
