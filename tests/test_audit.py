"""The audit of models trained elsewhere: small transformers models built from configs (random
init, nothing downloaded) and trained on real text (Moby-Dick paragraphs), audited through
Snakemake; memcap's GPT-2 against transformers' own; bad input stopped before any scoring."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import duckdb
import numpy as np
import polars as pl
import pytest
import torch
import yaml

from conftest import REPO, snakemake
from memcap.models.causal_lm import ModelDirError, load_causal_lm
from memcap.stages.audit import AuditError, write_samples
from memcap.tokens import read_tokens

pytest.importorskip("transformers")
spec = importlib.util.spec_from_file_location("audit_example",
                                              REPO / "scripts/audit_example.py")
example = importlib.util.module_from_spec(spec)
spec.loader.exec_module(example)


@pytest.fixture(scope="module")
def built(documents, tmp_path_factory):
    """The example's models and documents (scripts/audit_example.py), 100 steps each."""
    return example.build(documents("moby_dick"), tmp_path_factory.mktemp("example"), steps=100)


def audit_config(paths: dict, targets: list[str], reference: bool = True) -> dict:
    audit = {"targets": {t: str(paths[t]) for t in targets}, "members": str(paths["members"]),
             "nonmembers": str(paths["nonmembers"]), "seq_len": example.SEQ_LEN}
    if reference:
        audit["reference"] = str(paths["reference"])
    return {"synthetic": {"enabled": False}, "text": {"enabled": False},
            "evaluate": {"extraction_samples": 64}, "audit": audit}


def run_audit(workdir, config: dict, *targets: str):
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "config.yaml", workdir / "config.yaml")
    (workdir / "audit.yaml").write_text(yaml.safe_dump(config))
    return snakemake(workdir, "--cores", "2", *targets, configfile=workdir / "audit.yaml")


@pytest.fixture(scope="module")
def audited(built, tmp_path_factory):
    """GPT-2 and Llama, fine-tuned on the members and untouched, audited in one workflow
    against a Llama reference trained on other paragraphs of the book."""
    workdir = tmp_path_factory.mktemp("audit")
    out = run_audit(workdir, audit_config(built, ["gpt2-finetuned", "gpt2-untouched",
                                                  "llama-finetuned", "llama-untouched"]))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return workdir


def test_memorizing_models_are_caught_and_untouched_ones_are_not(built, audited, monkeypatch):
    monkeypatch.chdir(audited)  # the samples view names its files relative to the project
    db = duckdb.connect("results/memcap.duckdb", read_only=True)
    rows = {r[0]: r[1:] for r in db.sql("""
        SELECT a.target, a.loader, m.auc, m.n_members, m.n_nonmembers, z.mem_bits,
               z.dataset_bits, r.kind
        FROM audits a JOIN mia m USING (run_id) JOIN memorization z USING (run_id)
        JOIN runs r USING (run_id) WHERE m.attack = 'loss'""").fetchall()}
    assert set(rows) == {"gpt2-finetuned", "gpt2-untouched", "llama-finetuned",
                         "llama-untouched"}
    for target, (loader, auc, n1, n0, mem, dataset, kind) in rows.items():
        assert kind == "audit"
        assert loader == ("memcap" if target.startswith("gpt2") else "transformers")
        if target.endswith("finetuned"):
            assert auc > 0.9 and mem > 0.1 * dataset, (target, auc, mem)
        else:
            # chance: AUC within 3 standard errors of 0.5 (Mann–Whitney under H0)
            se = np.sqrt((n1 + n0 + 1) / (12 * n1 * n0))
            assert abs(auc - 0.5) < 3 * se, (target, auc)
            assert mem < 1e-3 * dataset, (target, mem)
    # greedy extraction of members beats non-members for the fine-tuned models only
    ext = dict(db.sql("""SELECT a.target, avg(CASE WHEN split = 'train' THEN rate END)
                                 - avg(CASE WHEN split = 'heldout' THEN rate END)
                         FROM audits a JOIN extraction e USING (run_id) GROUP BY ALL""")
               .fetchall())
    assert ext["gpt2-finetuned"] > 0.03 and ext["llama-finetuned"] > 0.03, ext
    assert abs(ext["gpt2-untouched"]) < 0.03 and abs(ext["llama-untouched"]) < 0.03, ext
    # the samples view holds every audited sample; top samples decode to the member text
    n = db.sql("""SELECT count(*), count(DISTINCT run_id) FROM samples
                  WHERE run_id LIKE 'audit:%'""").fetchall()[0]
    members, nonmembers = rows["gpt2-finetuned"][2:4]
    assert n == (4 * (members + nonmembers), 4)
    members_text = [json.loads(line)["text"] for line in
                    built["members"].read_text().splitlines()]
    for (text,) in db.sql("""SELECT text FROM top_samples
                             WHERE run_id = 'audit:llama-finetuned'""").fetchall():
        assert any(doc.startswith(text) for doc in members_text), text
    report = (audited / "results/report.html").read_text()
    assert "Audit of models trained elsewhere" in report and "llama-finetuned" in report


def test_quantized_targets_are_audited_beside_the_originals(built, tmp_path, monkeypatch):
    """audit.quantize: each target once more per scheme, on both loaders (memcap's GPT-2
    and transformers' Llama): int8 keeps the memorization and the membership signal of a
    fine-tuned model, int2 per channel destroys most of what it memorized."""
    config = audit_config(built, ["gpt2-finetuned", "llama-finetuned"])
    config["audit"]["quantize"] = ["int8", "int2"]
    out = run_audit(tmp_path, config)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    monkeypatch.chdir(tmp_path)
    db = duckdb.connect("results/memcap.duckdb", read_only=True)
    rows = {r[0]: r[1:] for r in db.sql("""
        SELECT a.target, a.scheme, a.stored_bits_per_param, z.mem_bits, m.auc
        FROM audits a JOIN memorization z USING (run_id) JOIN mia m USING (run_id)
        WHERE m.attack = 'loss'""").fetchall()}
    assert set(rows) == {f"{t}{s}" for t in ("gpt2-finetuned", "llama-finetuned")
                         for s in ("", "+int8", "+int2")}
    for target in ("gpt2-finetuned", "llama-finetuned"):
        scheme, stored, mem, auc = rows[target]
        assert scheme == "none" and stored is None
        _, stored8, mem8, auc8 = rows[f"{target}+int8"]
        _, stored2, mem2, _ = rows[f"{target}+int2"]
        assert 8 < stored8 < 12 and 2 < stored2 < stored8, (stored8, stored2)
        assert abs(mem8 - mem) < 0.05 * mem and auc8 > 0.9, (target, mem, mem8, auc8)
        assert mem2 < 0.5 * mem, (target, mem, mem2)


def test_memcaps_gpt2_codes_as_transformers_does(built, tmp_path):
    write_samples({"gpt2": str(built["gpt2-finetuned"])}, [], built["members"],
                  built["nonmembers"], example.SEQ_LEN, "first", tmp_path)
    _, tokens = read_tokens(tmp_path / "group=gpt2/members.parquet")
    cpu = torch.device("cpu")
    ours = load_causal_lm(built["gpt2-finetuned"], "t", example.SEQ_LEN, cpu)
    theirs = load_causal_lm(built["gpt2-finetuned"], "t", example.SEQ_LEN, cpu, native=False)
    assert (ours.loader, theirs.loader) == ("memcap", "transformers")
    (a, a_low), (b, b_low) = ours.scores(tokens, 64, 0.2), theirs.scores(tokens, 64, 0.2)
    assert np.abs(a - b).max() < 1e-3, np.abs(a - b).max()
    assert np.abs(a_low - b_low).max() < 1e-3  # the Min-K% score through either loader
    assert (ours.extracted(tokens[:32], 8, 64) == theirs.extracted(tokens[:32], 8, 64)).all()


def test_no_reference_leaves_memorization_out(built, tmp_path):
    out = run_audit(tmp_path, audit_config(built, ["gpt2-finetuned"], reference=False))
    assert out.returncode == 0, out.stderr[-3000:]
    record = json.loads((tmp_path / "results/audit/targets/gpt2-finetuned/audit.json")
                        .read_text())
    # no reference: no reference-calibrated attack and no memorization; the attacks that need
    # none (zlib's calibration is the text itself) remain
    assert [m["attack"] for m in record["mia"]] == ["loss", "zlib", "min_k"]
    assert record["mem_bits"] is None and record["excess_bits"] is None
    assert "No reference model was given" in (tmp_path / "results/report.html").read_text()


def other_tokenizer_model(built, tmp_path, family: str = "llama", seed: int = 7):
    """A random-init model of `family` saved with a byte-level BPE of the same size trained on
    other text: its merges, and so its ids, differ from the example's tokenizer."""
    folder = tmp_path / f"other-{family}"
    example.model(family, seed).save_pretrained(folder)
    example.tokenizer([f"Another text {i}, another tokenizer: its merges differ." * 9
                       for i in range(400)], tmp_path / f"bpe-{family}").save_pretrained(folder)
    return folder


def test_a_reference_that_tokenizes_as_no_target_stops_before_scoring(built, tmp_path):
    other = other_tokenizer_model(built, tmp_path)
    config = audit_config(built, ["gpt2-finetuned"])
    config["audit"]["reference"] = str(other)
    out = run_audit(tmp_path / "wf", config)
    assert out.returncode != 0
    log = (tmp_path / "wf/results/logs/audit/samples.log").read_text()
    assert "audit.reference" in log and str(other) in log
    assert "tokenizes the documents differently from every target" in log
    assert not (tmp_path / "wf/results/audit/models").exists()  # nothing was scored


def folder_without(built, tmp_path, name: str, damage) -> str:
    folder = tmp_path / name
    shutil.copytree(built["gpt2-finetuned"], folder)
    damage(folder)
    return str(folder)


def test_bad_input_stops_with_the_file_and_what_was_expected(built, tmp_path):
    def samples(targets, members=built["members"], nonmembers=built["nonmembers"],
                references=()):
        return write_samples(targets, list(references), members, nonmembers, example.SEQ_LEN,
                             "first", tmp_path / "out")

    with pytest.raises(ModelDirError, match=r"audit.targets.x.*no/such/folder does not exist"
                                            r".*save_pretrained"):
        samples({"x": str(tmp_path / "no/such/folder")})
    garbled = folder_without(built, tmp_path, "garbled",
                             lambda f: (f / "config.json").write_text("{not json"))
    with pytest.raises(ModelDirError, match=r"cannot load .*garbled/config.json"):
        samples({"x": garbled})
    truncated = folder_without(built, tmp_path, "truncated", lambda f: (
        f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:100]))
    with pytest.raises(ModelDirError, match=r"truncated/model.safetensors is not a readable"):
        samples({"x": truncated})
    no_weights = folder_without(built, tmp_path, "no-weights",
                                lambda f: (f / "model.safetensors").unlink())
    with pytest.raises(ModelDirError, match=r"no-weights has no weights; expected one of"):
        samples({"x": no_weights})
    good = {"x": str(built["gpt2-finetuned"])}
    (tmp_path / "empty").mkdir()
    with pytest.raises(AuditError, match=r"audit.members.*empty"):
        samples(good, members=tmp_path / "empty")
    (tmp_path / "short.jsonl").write_text('{"text": "Call me Ishmael."}\n')
    with pytest.raises(AuditError, match=r"audit.nonmembers.*short.jsonl has 32 tokens"):
        samples(good, nonmembers=tmp_path / "short.jsonl")
    with pytest.raises(AuditError, match=r"audit.nonmembers.*repeats a member"):
        samples(good, nonmembers=built["members"])
    assert not (tmp_path / "out").exists()  # nothing written


def test_a_memcap_run_exported_and_audited(documents, tmp_path):
    """A memcap text run (trained here on Moby-Dick windows) exported as a transformers
    checkpoint codes its samples as memcap does, and its own training and held-out samples,
    exported as text, audit as members and non-members."""
    from conftest import CPU, make_cell, small_spec
    from memcap.loss import sequence_nll_bits
    from memcap.models import load_packed
    from memcap.stages.text import (
        assign_splits,
        build_pool,
        documents_frame,
        train_bpe,
        write_text_dataset,
    )
    from memcap.stages.train import train_cell
    from memcap.tokenizer import load_tokenizer

    docs = assign_splits(documents_frame(documents("moby_dick"), corpus="moby_dick"), 0.2, 0)
    train_bpe(docs.filter(docs["split"] == "train")["text"].to_list(), 320, tmp_path / "tok")
    pool = tmp_path / "pool.parquet"
    build_pool(docs, load_tokenizer(tmp_path / "tok"), 16, "windows", pool, tmp_path / "s.json")
    data, held = tmp_path / "train.parquet", tmp_path / "held.parquet"
    write_text_dataset(pool, data, seed=0, split="train", n=128)
    write_text_dataset(pool, held, seed=0, split="heldout", n=128)
    spec = small_spec(vocab_size=320, n=128, d_model=16, steps=300, batch_size=64)
    cell = make_cell(tmp_path, spec, [0], [data], [held], kind="text")
    train_cell(cell, CPU, echo=lambda _line: None)
    run = tmp_path / "run-0"
    cli = [sys.executable, "-m", "memcap", "export-run", "--run", str(run), "--tokenizer",
           str(tmp_path / "tok"), "--out", str(tmp_path / "hf")]
    out = subprocess.run(cli, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert out.returncode == 0, out.stderr[-2000:]
    _, tokens = read_tokens(data)
    ours = sequence_nll_bits(load_packed(spec.shape, [run / "model.safetensors"],
                                         torch.device("cpu")),
                             torch.from_numpy(tokens[None].astype(np.int64)), 64)[0].numpy()
    theirs = load_causal_lm(tmp_path / "hf", "t", 16, torch.device("cpu"), native=False)
    assert theirs.loader == "transformers"
    assert np.abs(theirs.nll_bits(tokens, 64) - ours).max() < 1e-3
    # the run's samples as documents (what export-run --documents writes), audited
    from memcap.models.causal_lm import export_documents
    for name, path in (("members", data), ("nonmembers", held)):
        assert export_documents(path, tmp_path / "tok", tmp_path / f"docs/{name}.jsonl") == 128
    config = {"synthetic": {"enabled": False}, "text": {"enabled": False},
              "evaluate": {"extraction_samples": 32},
              "audit": {"targets": {"run": str(tmp_path / "hf")}, "seq_len": 16,
                        "members": str(tmp_path / "docs/members.jsonl"),
                        "nonmembers": str(tmp_path / "docs/nonmembers.jsonl")}}
    out = run_audit(tmp_path / "wf", config)
    assert out.returncode == 0, out.stderr[-3000:]
    record = json.loads((tmp_path / "wf/results/audit/targets/run/audit.json").read_text())
    loss = next(m for m in record["mia"] if m["attack"] == "loss")
    assert record["loader"] == "memcap" and loss["auc"] > 0.9, loss
    # the run's own token files as members and non-members: nothing re-tokenized, so the
    # audit codes every training sample exactly as memcap's scoring does
    config["audit"].update(members=str(data), nonmembers=str(held))
    out = run_audit(tmp_path / "ids", config)
    assert out.returncode == 0, out.stderr[-3000:]
    info = json.loads((tmp_path / "ids/results/audit/samples/group=run/samples.json")
                      .read_text())
    assert info["sampling"] == "given" and info["members"]["samples"] == 128
    scored = pl.read_parquet(tmp_path / "ids/results/audit/models/target=run/scores.parquet")
    members = scored.filter(pl.col("member")).sort("sample_id")
    assert members.height == len(ours)
    assert np.abs(members["nll_bits"].to_numpy() - ours).max() < 1e-3


def test_the_grid_and_an_audit_in_one_config(built, tmp_path):
    """One config trains a synthetic grid and audits models trained elsewhere: one database
    and one report hold both, the grid's laws see only the grid (grid_runs), and the
    audit's rows are told apart by runs.kind."""
    smoke = yaml.safe_load((REPO / "configs/smoke.yaml").read_text())
    config = audit_config(built, ["gpt2-finetuned"])
    config.update(seeds=[0, 1], synthetic={**smoke["synthetic"], "dataset_sizes": [8, 64]},
                  architectures=smoke["architectures"][:1], train=smoke["train"],
                  laws=smoke["laws"], quantize={"schemes": []})
    out = run_audit(tmp_path, config)
    assert out.returncode == 0, out.stderr[-3000:]
    db = duckdb.connect(str(tmp_path / "results/memcap.duckdb"), read_only=True)
    kinds = dict(db.sql("SELECT kind, count(*) FROM runs GROUP BY ALL").fetchall())
    assert kinds == {"synthetic": 4, "audit": 1}
    assert db.sql("SELECT count(*) FROM grid_runs WHERE kind = 'audit'").fetchall()[0][0] == 0
    assert db.sql("SELECT DISTINCT kind FROM capacity").fetchall() == [("synthetic",)]
    report = (tmp_path / "results/report.html").read_text()
    assert "Bits per parameter" in report and "Audit of models trained elsewhere" in report


def fit_copy(source, out, tokens: torch.Tensor, steps: int, seed: int, tokenizer_dir):
    """`source` (a saved model folder) trained `steps` more on `tokens`, saved to `out` with
    the tokenizer of `tokenizer_dir`."""
    import transformers as tf
    lm = tf.AutoModelForCausalLM.from_pretrained(str(source))
    example.fit(lm, tokens, steps, 3e-3, 64, seed)
    lm.save_pretrained(out)
    tf.AutoTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(out)
    return out


def member_tokens(built) -> torch.Tensor:
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(built["reference"]))
    texts = [json.loads(line)["text"] for line in built["members"].read_text().splitlines()]
    ids = tok(texts, add_special_tokens=False)["input_ids"]
    return torch.tensor([i[:example.SEQ_LEN] for i in ids if len(i) >= example.SEQ_LEN])


def audit_rows(workdir) -> dict[str, dict]:
    db = duckdb.connect(str(workdir / "results/memcap.duckdb"), read_only=True)
    frame = db.sql("SELECT * FROM audits").pl()
    return {r["target"]: r for r in frame.iter_rows(named=True)}


def test_a_bad_reference_is_flagged_and_its_floor_removed(built, documents, tmp_path):
    """A reference that memorized a few other paragraphs codes held-out text worse than the
    uniform code: it is flagged, naming its folder, and the excess of an untouched target
    (which never saw the members) is within 3 standard errors of 0 while mem_bits is not.
    With audit.require_good_reference the audit stops instead, naming the reference."""
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(built["reference"]))
    # 24 paragraphs the example leaves unused: neither members nor non-members
    used = sum(example.SPLIT.values())
    paras = example.paragraphs(documents("moby_dick"))[used:used + 24]
    ids = tok(paras, add_special_tokens=False)["input_ids"]
    few = torch.tensor([i[:example.SEQ_LEN] for i in ids if len(i) >= example.SEQ_LEN])
    bad = tmp_path / "bad-reference"
    lm = example.model("llama", 11)
    example.fit(lm, few, 300, 1e-2, 64, 11)
    lm.save_pretrained(bad)
    tok.save_pretrained(bad)
    config = audit_config(built, ["gpt2-untouched"])
    config["audit"]["reference"] = str(bad)
    out = run_audit(tmp_path / "wf", config)
    assert out.returncode == 0, out.stderr[-3000:]
    row = audit_rows(tmp_path / "wf")["gpt2-untouched"]
    assert row["reference_flag"] and str(bad) in row["reference_flag"]
    assert "worse than the uniform code" in row["reference_flag"]
    assert row["reference_heldout_bits_per_token"] > row["uniform_bits_per_token"]
    assert row["mem_bits"] > 0.05 * row["members"] * (example.SEQ_LEN - 1)  # inflated
    assert abs(row["excess_bits"]) < 3 * row["excess_bits_se"], row
    report = (tmp_path / "wf/results/report.html").read_text()
    audit = report.split("Audit of models trained elsewhere", 1)[1]
    assert audit.index("Reference warning") < audit.index("Excess memorization")
    # audit.require_good_reference: the same evaluation stops, naming the reference
    from conftest import CPU, evaluate_settings
    from memcap.stages.audit import evaluate_target
    results = tmp_path / "wf/results/audit"
    with pytest.raises(AuditError, match=r"audit.require_good_reference.*bad-reference"):
        evaluate_target("gpt2-untouched", str(built["gpt2-untouched"]),
                        results / "samples/group=gpt2-untouched",
                        results / "models/target=gpt2-untouched",
                        results / "models/reference=0", tmp_path / "strict", CPU,
                        **evaluate_settings(extraction_samples=8),
                        require_good_reference=True)
    assert not (tmp_path / "strict").exists()  # nothing written


def test_tokenizer_groups_and_a_fine_tune_against_its_base(built, tmp_path):
    """The recommended reference, the target's base checkpoint before fine-tuning: a base
    trained on other paragraphs of the book, fine-tuned on the members, has excess within 5 %
    of its memorization (the floor is small) and no flag. A Qwen2 model saved with the
    example's tokenizer files (transformers gives its folder one more special token, which
    never occurs) audits in its group; a model with a really different tokenizer forms a
    second group, in the same config and report, without a reference (audit.references names
    only the first group's)."""
    import transformers as tf
    tuned = fit_copy(built["reference"], tmp_path / "base-finetuned", member_tokens(built), 150,
                     5, built["reference"])
    qwen = tmp_path / "qwen2"
    torch.manual_seed(4)
    tf.Qwen2ForCausalLM(tf.Qwen2Config(
        vocab_size=example.VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=example.SEQ_LEN,
        bos_token_id=None, eos_token_id=None, pad_token_id=None)).save_pretrained(qwen)
    tf.AutoTokenizer.from_pretrained(str(built["reference"])).save_pretrained(qwen)
    other = other_tokenizer_model(built, tmp_path)
    config = audit_config(built, [], reference=False)
    config["audit"]["targets"] = {"base-finetuned": str(tuned), "qwen2": str(qwen),
                                  "other": str(other)}
    config["audit"]["references"] = [str(built["reference"])]
    out = run_audit(tmp_path / "wf", config)
    assert out.returncode == 0, out.stderr[-3000:]
    groups = json.loads((tmp_path / "wf/results/audit/samples/groups.json").read_text())
    assert groups["target_group"] == {"base-finetuned": "base-finetuned",
                                      "qwen2": "base-finetuned", "other": "other"}
    assert groups["groups"]["base-finetuned"]["reference_index"] == 0
    assert groups["groups"]["other"]["reference"] is None
    rows = audit_rows(tmp_path / "wf")
    tuned_row = rows["base-finetuned"]
    assert tuned_row["reference_flag"] is None and tuned_row["mem_bits"] > 0
    assert abs(tuned_row["excess_bits"] - tuned_row["mem_bits"]) < 0.05 * tuned_row["mem_bits"]
    assert rows["qwen2"]["model_type"] == "qwen2" and rows["qwen2"]["excess_bits"] is not None
    assert rows["other"]["reference_dir"] is None and rows["other"]["excess_bits"] is None
    # the two groups cut their own samples: the other tokenizer gives other ids
    a, b = (read_tokens(tmp_path / f"wf/results/audit/samples/group={g}/members.parquet")[1]
            for g in ("base-finetuned", "other"))
    assert a.shape != b.shape or (a != b).any()


def test_one_evaluation_path_for_the_grid_and_the_audit(tmp_path, quiet):
    """The grid's evaluate stage and the audit evaluate through the same library function:
    on a trained cell's scores it gives the rows the evaluate stage wrote, and neither
    stage module holds its own copy of the attacks or the memorization totals."""
    import ast

    import polars as pl

    from conftest import CPU, evaluate_settings, make_cell, small_spec, write_data
    from memcap import evaluation
    from memcap.io import read_json
    from memcap.stages import audit, evaluate
    from memcap.stages.score import score_cell
    from memcap.stages.train import train_cell
    spec = small_spec(n=32, steps=200)
    train, held = write_data(tmp_path / "data", spec, [0])
    cell = make_cell(tmp_path, spec, [0], train, held)
    train_cell(cell, CPU, echo=quiet)
    score_cell(cell, CPU)
    settings = evaluate_settings(mia_samples=32)
    (record,) = evaluate.evaluate_cell(cell, CPU, **settings)
    scores = pl.read_parquet(f"{cell.run_dirs[0]}/scores.parquet").filter(
        pl.col("primary_reference"))
    ev = evaluation.evaluate_scores(cell.run_ids[0], scores, train[0], held[0],
                                    mia_samples=32, mia_seed=settings["mia_seed"], run_seed=0,
                                    decode=None)
    assert ev.mia == record["mia"] == read_json(f"{cell.run_dirs[0]}/evaluation.json")["mia"]
    assert audit.evaluate_scores is evaluate.evaluate_scores is evaluation.evaluate_scores
    for module in (audit, evaluate):
        called = {n.func.id for n in ast.walk(ast.parse(open(module.__file__).read()))
                  if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        assert not called & {"draw_sets", "attack_frame", "membership_inference",
                             "memorization_totals", "top_samples"}, module.__name__
