"""End to end: the smoke config through the real Snakemake DAG, then what reruns after edits."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from collections import Counter

import duckdb
import pytest
import yaml

from conftest import REPO, SNAKEMAKE, snakemake

pytestmark = pytest.mark.e2e
def plan(workdir, configfile=None) -> dict[str, int]:
    """Jobs a dry run would execute, by rule (empty when nothing is to be done)."""
    out = snakemake(workdir, "-n", configfile=configfile)
    assert out.returncode == 0, out.stdout + out.stderr
    if "Nothing to be done" in out.stdout + out.stderr:
        return {}
    block = out.stdout.split("Job stats:")[1].split("\n\n")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"(?m)^(\w+)\s+(\d+)$", block)
            if m[1] != "total"}


def edited(workdir, name, edit):
    cfg = yaml.safe_load((REPO / "configs/smoke.yaml").read_text())
    edit(cfg)
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def db(smoke, monkeypatch):
    monkeypatch.chdir(smoke)  # the samples view names its Parquet files relative to here
    con = duckdb.connect(str(smoke / "results/memcap.duckdb"), read_only=True)
    yield con
    con.close()


def test_database_follows_the_contract(db):
    columns = {name: {r[0] for r in db.sql(f"DESCRIBE {name}").fetchall()}
               for name in ("runs", "samples", "memorization", "capacity", "laws", "mia",
                            "extraction", "top_samples", "memorization_by_reference",
                            "reference_models", "text_datasets", "double_descent")}
    assert {"run_id", "kind", "vocab_size", "seq_len", "n", "seed", "n_layer", "d_model",
            "params", "precision", "steps", "saturated", "final_train_loss", "heldout_loss",
            "device", "train_seconds"} <= columns["runs"]
    assert {"run_id", "sample_id", "member", "nll_bits", "ref_nll_bits",
            "mem_bits", "reference", "primary_reference"} <= columns["samples"]
    assert {"run_id", "mem_bits", "mem_bits_unclamped", "dataset_bits", "dataset_entropy_bits",
            "capacity_ratio"} <= columns["memorization"]
    # memorizable bits N·(S−1)·log2 V beside the paper's H(D) = N·S·log2 V (V 16, S 16)
    ratio = db.sql("""SELECT max(abs(dataset_bits / dataset_entropy_bits - 15 / 16))
                      FROM memorization WHERE run_id LIKE 'synthetic:%'""").fetchall()[0][0]
    assert ratio < 1e-12
    assert {"params", "capacity_bits", "n_at_max", "bits_per_param",
            "saturated"} <= columns["capacity"]
    assert {"law", "precision", "parameter", "value", "ci_low", "ci_high",
            "ci_few_seeds"} <= columns["laws"]
    # the smoke config runs 2 seeds: every CI is flagged
    assert db.sql("SELECT bool_and(ci_few_seeds) FROM laws").fetchall() == [(True,)]
    assert {"run_id", "attack", "auc", "auc_se", "f1_median", "f1_best", "tpr_at_1pct_fpr",
            "tpr_at_0_1pct_fpr", "draw_seed", "strata"} <= columns["mia"]
    assert {"run_id", "prefix_len", "split", "rate"} <= columns["extraction"]
    assert {"run_id", "rank", "sample_id", "mem_bits", "tfidf", "tokens",
            "text"} <= columns["top_samples"]
    assert "tfidf" in columns["samples"]
    laws = db.sql("SELECT kind, law, parameter FROM laws ORDER BY ALL").fetchall()
    assert laws == [("synthetic", "capacity", "alpha"),
                    ("synthetic", "capacity", "mean_bits_per_param"),
                    *[(kind, "mia_f1", c) for kind in ("synthetic", "text")
                      for c in ("c1", "c2", "c3")]]
    # 12 runs × 4 attacks (synthetic: no oracle), 12 × 5 (text); 12 runs × prefixes {8, 15}
    # × {train, heldout}
    attacks = db.sql("""SELECT r.kind, list(DISTINCT attack ORDER BY attack), count(*)
                        FROM mia JOIN runs r USING (run_id) GROUP BY ALL ORDER BY 1""")
    assert attacks.fetchall() == [
        ("synthetic", ["loss", "min_k", "reference", "zlib"], 48),
        ("text", ["loss", "min_k", "reference", "reference_oracle", "zlib"], 60)]
    assert db.sql("SELECT count(*) FROM extraction").fetchall()[0][0] == 96
    # per kind 2 architectures × 3 sizes × 2 seeds; every run scored on N members + 64
    # held-out against each reference (synthetic: uniform; text: same-arch and oracle)
    assert db.sql("SELECT kind, count(*) FROM runs GROUP BY ALL ORDER BY 1").fetchall() == [
        ("synthetic", 12), ("text", 12)]
    bad = db.sql("""SELECT count(*) FROM runs r JOIN (SELECT run_id, reference,
                    count(*) FILTER (member) AS m, count(*) FILTER (NOT member) AS h
                    FROM samples GROUP BY ALL) s USING (run_id)
                    WHERE s.m <> r.n OR s.h <> 64""").fetchall()[0][0]
    assert bad == 0
    refs = db.sql("""SELECT r.kind, list(DISTINCT s.reference ORDER BY s.reference)
                     FROM samples s JOIN runs r USING (run_id) GROUP BY ALL ORDER BY 1""")
    assert refs.fetchall() == [("synthetic", ["uniform"]), ("text", ["oracle", "same-arch"])]


def test_memorization_totals_equal_the_per_sample_sums(db):
    worst = db.sql("""SELECT max(abs(m.mem_bits - s.total)) FROM memorization m JOIN
                      (SELECT run_id, sum(mem_bits) AS total FROM samples
                       WHERE member AND primary_reference GROUP BY run_id) s USING (run_id)
                   """).fetchall()[0][0]
    assert worst < 1e-6
    worst = db.sql("""SELECT max(abs(m.mem_bits - s.total)) FROM memorization_by_reference m
                      JOIN (SELECT run_id, reference, sum(mem_bits) AS total FROM samples
                            WHERE member GROUP BY ALL) s USING (run_id, reference)
                   """).fetchall()[0][0]
    assert worst < 1e-6


def test_mem_bits_is_the_clamped_difference_on_every_row(db):
    rows, bad = db.sql("""SELECT count(*), count(*) FILTER (WHERE abs(mem_bits -
                          greatest(0, ref_nll_bits - nll_bits)) > 1e-9 OR mem_bits < 0)
                          FROM samples""").fetchall()[0]
    assert rows > 0 and bad == 0


def test_science_of_the_smoke_run(db):
    # N = 8 is far below both models' capacity: nearly all memorizable bits are memorized
    fracs = db.sql("""SELECT min(mem_bits / dataset_bits) FROM memorization JOIN runs
                      USING (run_id) WHERE n = 8 AND kind = 'synthetic'""").fetchall()[0][0]
    assert fracs >= 0.9
    # capacity grows with parameters, and α is positive with an ordered CI
    caps = db.sql("""SELECT capacity_bits FROM capacity WHERE kind = 'synthetic'
                     ORDER BY params""").fetchall()
    assert caps[0][0] < caps[1][0]
    value, lo, hi = db.sql("""SELECT value, ci_low, ci_high FROM laws
                              WHERE parameter = 'alpha'""").fetchall()[0]
    assert 0 < lo <= value <= hi
    # a CPU-budget α is labelled a lower bound, never passed off as the paper's number
    bound, reason = db.sql("""SELECT lower_bound, note FROM laws
                              WHERE law = 'capacity'""").fetchall()[0]
    assert bound and "CPU" in reason
    # memorized bits never exceed the storage a float32 parameter could hold
    assert db.sql("SELECT max(bits_per_param) FROM capacity").fetchall()[0][0] < 32
    ratio = db.sql("SELECT min(capacity_ratio) FROM memorization").fetchall()[0][0]
    assert ratio is not None and math.isfinite(ratio)


def test_quantized_runs_in_the_database(db):
    """Every trained run once per scheme, by a run id that names it, with its stored bits;
    int4 per channel on these 8- and 16-wide models loses bits, and the quantization table
    holds the trained weights (32 bits per parameter) and the scheme per architecture."""
    q = db.sql("""SELECT q.run_id, q.trained_run_id, q.scheme, q.stored_bits_per_param,
                         q.mem_bits AS q_bits, m.mem_bits AS bits
                  FROM quantized_runs q JOIN memorization m ON m.run_id = q.trained_run_id
                  """).pl()
    assert q.height == db.sql("SELECT count(*) FROM runs").fetchall()[0][0]
    assert (q["run_id"] == q["trained_run_id"] + "+int4").all()
    # 4-bit integers plus a scale and zero point per row of 8-16 inputs, fp32 vectors
    assert q["stored_bits_per_param"].min() > 4 and q["stored_bits_per_param"].max() < 10
    assert q["q_bits"].sum() < q["bits"].sum()
    table = db.sql("""SELECT kind, arch, scheme, stored_bits_per_param, capacity_kept
                      FROM quantization ORDER BY kind, arch, scheme""").pl()
    assert table.height == 2 * db.sql("SELECT count(*) FROM capacity").fetchall()[0][0]
    trained = table.filter(table["scheme"] == "none")
    assert (trained["stored_bits_per_param"] == 32).all() and (trained["capacity_kept"] == 1).all()
    n_mia = db.sql("SELECT count(DISTINCT run_id) FROM quantized_mia").fetchall()[0][0]
    assert n_mia == q.height
    files = db.sql("SELECT count(DISTINCT run_id) FROM samples WHERE scheme = 'int4'")
    assert files.fetchall()[0][0] == q.height


def test_figures_and_report(smoke):
    figs = smoke / "results/figures"
    for name in ("memorization_vs_n", "capacity_vs_params", "bits_per_param", "mia_roc",
                 "mia_attacks", "mia_histograms", "mia_law", "extraction_vs_n",
                 "double_descent", "quantization"):
        html = (figs / f"{name}.html").read_text()
        assert "vega" in html and not re.search(r"<script[^>]+src=['\"]https?:", html)
        assert (figs / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (smoke / "results/report.html").read_text()
    assert "Bits per parameter" in report and "lower bound" in report
    assert report.count("data:image/png;base64,") == 10
    # every attack in the report, and the warning that 2 seeds give no confidence interval
    for attack in ("reference_oracle", "zlib", "min_k"):
        assert attack in report
    assert "CIs from 2 seeds" in report
    for section in ("Membership inference", "Membership-inference law", "validation table",
                    "Extraction", "most memorized", "Real text", "Double descent",
                    "held-out loss peaks", "Quantization: capacity against stored bits"):
        assert section in report


def test_nothing_changed_schedules_nothing(smoke):
    assert plan(smoke) == {}


def test_execution_settings_rerun_nothing(smoke):
    def edit(cfg):
        cfg["runtime"] = {"log_every": 7, "checkpoint_every": 11, "score_batch_size": 3,
                          "compile": True, "cuda_graphs": False}
        cfg["device"] = "cpu"
    assert plan(smoke, edited(smoke, "runtime", edit)) == {}


AGGREGATES = {"collect": 1, "laws": 1, "database": 1, "figures": 1, "report": 1, "all": 1}


def test_adding_a_dataset_size_schedules_only_its_jobs(smoke):
    def edit(cfg):
        cfg["synthetic"]["dataset_sizes"] = [8, 32, 64, 128]
    jobs = plan(smoke, edited(smoke, "size", edit))
    assert jobs == {"synthetic_data": 2, "train": 2, "score": 2, "evaluate": 2, "quantize": 2,
                    **AGGREGATES}


def test_adding_an_architecture_schedules_only_its_jobs(smoke):
    def edit(cfg):
        cfg["architectures"].append({"n_layer": 2, "d_model": 8})
    assert plan(smoke, edited(smoke, "arch", edit)) == {"train": 3, "score": 3, "evaluate": 3,
                                                        "quantize": 3, **AGGREGATES}


def test_the_family_key_reruns_nothing_and_a_new_family_only_its_jobs(smoke):
    """gpt2 is the default family: naming it on every architecture changes no job, so with a
    Llama and a Mamba architecture added only their own cells are planned (3 N each,
    quantized too)."""
    def families(cfg):
        for arch in cfg["architectures"] + cfg["text"]["architectures"]:
            arch["family"] = "gpt2"
        cfg["architectures"] += [{"family": "llama", "n_layer": 1, "d_model": 8},
                                 {"family": "mamba", "n_layer": 1, "d_model": 8}]
    assert plan(smoke, edited(smoke, "families", families)) == {
        "train": 6, "score": 6, "evaluate": 6, "quantize": 6, **AGGREGATES}


def test_a_hyperparameter_reruns_only_the_cells_it_affects(smoke):
    def one_arch(cfg):
        cfg["architectures"][0]["train"] = {"lr": 0.02}
    assert plan(smoke, edited(smoke, "lr1", one_arch)) == {"train": 3, "score": 3,
                                                           "evaluate": 3, "quantize": 3,
                                                           **AGGREGATES}

    def everywhere(cfg):
        cfg["train"]["beta2"] = 0.95
    # 6 synthetic + 6 text cells; the text references are retrained runs, so they rescore
    assert plan(smoke, edited(smoke, "beta2", everywhere)) == {
        "train": 12, "score": 12, "evaluate": 12, "quantize": 12, "same_arch_reference": 2,
        "oracle_reference": 1, **AGGREGATES}

    def text_only(cfg):
        cfg["text"]["train"] = {"lr": 0.02}
    assert plan(smoke, edited(smoke, "textlr", text_only)) == {
        "train": 6, "score": 6, "evaluate": 6, "quantize": 6, "same_arch_reference": 2,
        "oracle_reference": 1, **AGGREGATES}


def test_a_budget_reruns_only_the_cells_whose_steps_change(smoke):
    # 300 steps at batch 32: train.min_passes 100 (config.yaml) already lifts N = 128 to 400
    # steps; 150 lifts it to 600 and leaves N = 8 and 32 at 300
    def more(cfg):
        cfg["train"]["min_passes"] = 150
    assert plan(smoke, edited(smoke, "passes", more)) == {"train": 2, "score": 2,
                                                          "evaluate": 2, "quantize": 2,
                                                          **AGGREGATES}

    def no_step_changes(cfg):  # text: 1 pass of 1,024 samples is far below 1,000 steps
        cfg["text"]["train"] = {"min_passes": 1}
    assert plan(smoke, edited(smoke, "textpasses", no_step_changes)) == {}


def test_an_evaluation_setting_reruns_only_evaluation(smoke):
    def edit(cfg):
        cfg["evaluate"] = {"mia_samples": 16}
    # a quantize job evaluates its quantized runs too: it reruns, training does not
    assert plan(smoke, edited(smoke, "mia", edit)) == {"evaluate": 12, "quantize": 12,
                                                       **AGGREGATES}


def test_adding_a_quantization_scheme_runs_only_its_jobs(smoke):
    def edit(cfg):
        cfg["quantize"]["schemes"] = ["int4", "int8"]
    assert plan(smoke, edited(smoke, "int8", edit)) == {"quantize": 12, **AGGREGATES}

    def none(cfg):  # dropping every scheme trains and scores nothing again
        cfg["quantize"]["schemes"] = []
    assert plan(smoke, edited(smoke, "noquant", none)) == {
        k: 1 for k in ("collect", "laws", "database", "figures", "report", "all")}


def test_a_smaller_text_size_trains_only_its_cells(smoke):
    def edit(cfg):
        cfg["text"]["dataset_sizes"] = [8, 16, 64, 1024]
    # the new runs are oracle candidates, so the oracle is chosen again and text rescored
    assert plan(smoke, edited(smoke, "textsize", edit)) == {
        "text_data": 2, "train": 2, "oracle_reference": 1, "score": 8, "evaluate": 8,
        "quantize": 8, **AGGREGATES}


def test_a_text_setting_reruns_the_text_part_only(smoke):
    def edit(cfg):
        cfg["text"]["seq_len"] = 12
    jobs = plan(smoke, edited(smoke, "textseq", edit))
    assert jobs["text_pool"] == 1 and jobs["train"] == 6 and "text_tokenizer" not in jobs
    assert "synthetic_data" not in jobs and "fetch" not in jobs


def test_text_part_of_the_smoke_run(smoke, db):
    # per-sample memorization is never negative and falls as N grows, per architecture
    assert db.sql("SELECT min(mem_bits) FROM samples").fetchall()[0][0] >= 0
    # (below capacity every sample is memorized whole, so the share memorized is flat at ~1
    # and bits per sample follow the samples' difficulty; past capacity both fall)
    per_n = db.sql("""SELECT r.arch, r.n, avg(s.mem_bits), sum(s.mem_bits) / sum(s.ref_nll_bits)
                      FROM samples s JOIN runs r USING (run_id) WHERE r.kind = 'text'
                      AND s.member AND s.primary_reference GROUP BY ALL ORDER BY 1, 2
                   """).fetchall()
    for arch in {row[0] for row in per_n}:
        bits = [b for a, _, b, _ in per_n if a == arch]
        share = [f for a, _, _, f in per_n if a == arch]
        assert all(x >= y - 0.02 for x, y in zip(share, share[1:], strict=False)), share
        assert share[-1] < share[0] - 0.1 and bits[-1] < 0.8 * bits[0], (arch, bits, share)
    # deduplication statistics as counts and percentages; no document in both splits
    stats = db.sql("""SELECT split, samples_before_dedup, samples_after_dedup, duplicates,
                             duplicate_pct FROM text_datasets WHERE corpus = 'all'
                      ORDER BY split""").fetchall()
    assert [s[0] for s in stats] == ["heldout", "train"]
    for _, before, after, dupes, pct in stats:
        assert before - after == dupes and abs(pct - 100 * dupes / before) < 1e-9
    pool = next((smoke / "results/data/kind=text").glob("*/*/pool.parquet"))
    both = duckdb.sql(f"""SELECT count(*) FROM (SELECT doc_id FROM '{pool}' GROUP BY doc_id
                          HAVING count(DISTINCT split) > 1)""").fetchall()[0][0]
    assert both == 0
    # references: one same-arch per architecture, one oracle, which has the lowest loss
    refs = db.sql("""SELECT reference, count(*), bool_and(coalesce(chosen_is_lowest, true)),
                            bool_and(better_than_uniform)
                     FROM reference_models GROUP BY ALL ORDER BY 1""").fetchall()
    assert refs == [("oracle", 1, True, True), ("same-arch", 2, True, True)]
    lowest = db.sql("""SELECT min(heldout_loss) FROM runs WHERE kind = 'text'""").fetchall()
    oracle = db.sql("""SELECT r.heldout_loss FROM reference_models o JOIN runs r
                       USING (run_id) WHERE o.reference = 'oracle'""").fetchall()
    assert oracle[0][0] <= lowest[0][0] + 0.05  # lowest on the common held-out set
    # the double-descent table has a peak and a ratio per architecture
    dd = db.sql("SELECT arch, peak_ratio FROM double_descent ORDER BY params").fetchall()
    assert [a for a, _ in dd] == ["L1-d8", "L1-d16"] and all(r > 0 for _, r in dd)
    # top samples of text runs are shown as text
    texts = db.sql("""SELECT count(*) FILTER (WHERE length(text) > 0), count(*)
                      FROM top_samples WHERE run_id LIKE 'text:%'""").fetchall()[0]
    assert texts[0] == texts[1] > 0


def test_bad_config_stops_before_any_job_and_keeps_results(smoke):
    db_file = smoke / "results/memcap.duckdb"
    before = db_file.stat().st_mtime_ns

    def edit(cfg):
        cfg["train"]["lr"] = -0.1
    out = snakemake(smoke, "--cores", "2", configfile=edited(smoke, "bad", edit))
    assert out.returncode != 0
    assert "train.lr" in out.stdout + out.stderr
    assert db_file.stat().st_mtime_ns == before

    def unknown(cfg):
        cfg["synthetic"]["seqlen"] = 5
    out = snakemake(smoke, "-n", configfile=edited(smoke, "bad2", unknown))
    assert out.returncode != 0 and "seqlen" in out.stdout + out.stderr


MODEL_RULES = {"train", "score", "evaluate", "quantize", "same_arch_reference",
               "oracle_reference"}


def planned_resources(workdir, configfile) -> list[tuple[str, dict[str, str]]]:
    """(rule, resources) of every job of a dry run."""
    out = snakemake(workdir, "-n", configfile=configfile)
    assert out.returncode == 0, out.stdout + out.stderr
    jobs = re.findall(r"(?ms)^(?:local)?rule (\w+):\n.*?^\s+resources: (.*?)$", out.stdout)
    return [(rule, dict(kv.split("=", 1) for kv in res.split(", "))) for rule, res in jobs]


def assert_gpu_placement(jobs: list[tuple[str, dict[str, str]]]) -> None:
    """device: cuda -> every model job asks for one GPU and its memory, every other job for
    no GPU; this machine has none, so the plan does not follow the planning host."""
    for rule, res in jobs:
        if rule in MODEL_RULES:
            assert res.get("gpu") == "1" and int(res["mem_mb"]) > 1536, (rule, res)
        else:
            assert res.get("gpu", "0") == "0", (rule, res)
    assert MODEL_RULES & {rule for rule, _ in jobs}


def test_the_papers_grid_plans(tmp_path):
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    resources = planned_resources(tmp_path, REPO / "configs/paper-synthetic.yaml")
    jobs = Counter(rule for rule, _ in resources)
    # 16 architectures × 12 sizes × 2 precisions; data: 5 seeds × 12 sizes + 5 held-out sets
    assert jobs["train"] == jobs["score"] == 384
    assert jobs["synthetic_data"] == 65
    assert_gpu_placement(resources)
    # memory follows the cell: the largest N's training asks for its 5 GiB of tokens (uint16)
    train_mb = sorted(int(res["mem_mb"]) for rule, res in resources if rule == "train")
    assert train_mb[-1] - train_mb[0] >= 2 * 5 * 2**23 * 64 * 2 / 2**20 * 0.9


def test_predict_then_verify(smoke):
    """The smoke grid's synthetic law predicts the F1 of runs it never saw. Tolerance: 0.15,
    about 3.4 standard errors of a median-threshold F1 at its 64 members and 64 non-members
    (sqrt(1 / (8·64)) = 0.044); the verify cells see each sample as often as the grid's
    largest N (train.min_passes)."""
    out = snakemake(smoke, "--cores", "2", "verify")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    import polars as pl
    table = pl.read_parquet(smoke / "results/verify/verify.parquet")
    assert table["target_f1"].to_list() == [0.55, 0.75, 0.95]
    planned = table.filter(pl.col("n").is_not_null())
    assert planned.height == 3 and (planned["seeds"] == 2).all()
    assert (planned["predicted_f1"] - planned["target_f1"]).abs().max() < 0.05
    assert planned["observed_by_seed"].list.len().to_list() == [2, 2, 2]
    assert (planned["steps"] >= 100 * planned["n"] / 32).all()  # min_passes 100, batch 32
    assert planned["gap"].abs().max() < 0.15, planned
    assert "Predict, then verify" in (smoke / "results/verify/report.html").read_text()
    assert plan(smoke) == {}  # the optional target leaves the default target up to date


def test_verify_enabled_joins_the_database_and_the_report(smoke, tmp_path):
    """verify.enabled: the verify table and its verdict reach the database and the report (on
    a copy of the smoke run whose verify cells are trained: only aggregation reruns)."""
    snakemake(smoke, "--cores", "2", "verify")  # a no-op after test_predict_then_verify
    work = tmp_path / "smoke"
    shutil.copytree(smoke, work, symlinks=True)
    enabled = edited(work, "verify-on", lambda cfg: cfg.update(verify={"enabled": True}))
    assert plan(work, enabled) == {"database": 1, "report": 1, "all": 1}
    out = snakemake(work, "--cores", "2", configfile=enabled)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    con = duckdb.connect(str(work / "results/memcap.duckdb"), read_only=True)
    rows = con.sql("SELECT target_f1, passed FROM verify ORDER BY 1").fetchall()
    con.close()
    assert [r[0] for r in rows] == [0.55, 0.75, 0.95]
    report = (work / "results/report.html").read_text()
    assert "Predict, then verify" in report and "targets within ±0.05 F1" in report


def test_the_papers_text_setup_plans(tmp_path):
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    resources = planned_resources(tmp_path, REPO / "configs/paper-text.yaml")
    jobs = Counter(rule for rule, _ in resources)
    # 4 architectures × 8 sizes, bf16; no synthetic part; GPT-2 files fetched from PyPI
    assert jobs["train"] == jobs["score"] == jobs["evaluate"] == 32
    assert jobs["same_arch_reference"] == 4 and jobs["oracle_reference"] == 1
    assert jobs["fetch"] == 7 and "synthetic_data" not in jobs
    assert_gpu_placement(resources)


def test_every_column_of_the_database_is_defined_in_the_science_page(db):
    """docs/science.md's glossary has a row for every table and column the database holds."""
    glossary = (REPO / "docs/science.md").read_text().split("## Glossary", 1)[1]
    rows = set(re.findall(r"(?m)^\| (\w+) \| (\w+) \|", glossary))
    # the samples view also reads the grid coordinates from its files' paths (hive folders)
    hive = {("samples", c) for c in ("kind", "vocab", "seq", "arch", "precision", "n", "seed")}
    # the view grid_runs is runs without the audited models: runs' rows define it
    columns = {(t if t != "grid_runs" else "runs", c)
               for (t,) in db.sql("SELECT table_name FROM information_schema.tables")
               .fetchall() for (c,) in db.sql(f"SELECT column_name FROM (DESCRIBE {t})")
               .fetchall()}
    assert ("grid_runs",) in db.sql("SELECT table_name FROM information_schema.tables"
                                    ).fetchall()
    assert len(columns) > 100
    assert not columns - rows - hive, sorted(columns - rows - hive)


def planned_jobs(workdir, *configfiles) -> list[tuple[str, dict[str, str]]]:
    """(rule, wildcards) of every job a dry run with these config files would execute."""
    out = subprocess.run([*SNAKEMAKE, "--directory", str(workdir), "-n", "--configfile",
                          *map(str, configfiles)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    jobs = []
    for rule, body in re.findall(r"(?ms)^(?:local)?rule (\w+):\n(.*?)(?=^\S|\Z)", out.stdout):
        found = re.search(r"(?m)^\s+wildcards: (.*)$", body)
        jobs.append((rule, dict(kv.split("=", 1) for kv in found[1].split(", "))
                     if found else {}))
    return jobs


def test_a_maximum_at_the_grids_end_is_flagged_and_bracketing_trains_only_the_new_n(tmp_path):
    """A grid whose every N lies below capacity has its maximum at its largest N: the
    database and the report say so; the bracket target writes the overlay that adds the next
    N, and the rerun it plans trains, scores and evaluates the new N only."""
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(yaml.safe_dump({
        "seeds": [0], "precisions": ["fp32"], "text": {"enabled": False},
        "synthetic": {"vocab_size": 16, "seq_len": 16, "heldout": 16, "dataset_sizes": [8, 16]},
        "architectures": [{"n_layer": 1, "d_model": 8}, {"n_layer": 1, "d_model": 16}],
        # a constant rate: every evaluation lies in the phase the plateau estimate fits
        "train": {"steps": 100, "batch_size": 8, "lr": 0.03, "eval_every": 10,
                  "schedule": "constant"},
        "laws": {"bootstrap": 10},
        "evaluate": {"mia_samples": 16, "extraction_samples": 8, "extraction_prefixes": [8]}}))
    out = snakemake(tmp_path, "--cores", "2", configfile=tiny)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    con = duckdb.connect(str(tmp_path / "results/memcap.duckdb"), read_only=True)
    cap = con.sql("""SELECT arch, n_at_max, n_max, bracketed, bracket_status, bracket_n_below,
                            bracket_n_above, bracket_next_n, lower_bound,
                            capacity_bits_estimate FROM capacity ORDER BY params""").fetchall()
    estimates = con.sql("""SELECT count(*) FILTER (WHERE mem_bits_plateau IS NOT NULL
                                   AND mem_bits_plateau_ci_low <= mem_bits_plateau
                                   AND mem_bits_plateau <= mem_bits_plateau_ci_high), count(*)
                           FROM runs""").fetchall()[0]
    con.close()
    assert estimates == (4, 4)
    for arch, at, n_max, bracketed, status, below, above, nxt, lower, est in cap:
        assert (at, n_max, below, above) == (16, 16, 8, None), arch
        assert not bracketed and status.startswith("max at the largest N") and lower
        assert nxt > 16 and est is not None
    report = (tmp_path / "results/report.html").read_text()
    assert "max at the largest N" in report and "next N" in report
    assert "Plateau estimate (unlimited steps)" in report and "capacity estimate" in report

    out = snakemake(tmp_path, "--cores", "1", "bracket", configfile=tiny)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    overlay = tmp_path / "results/bracket.yaml"
    grids = {f"L{a['n_layer']}-d{a['d_model']}": a["dataset_sizes"]
             for a in yaml.safe_load(overlay.read_text())["architectures"]}
    new = {arch: nxt for arch, *_, nxt, _lower, _est in cap}
    assert grids == {arch: [8, 16, n] for arch, n in new.items()}
    # the command line gives the same overlay from the config files
    cli = subprocess.run([sys.executable, "-m", "memcap", "bracket", "--configfile", str(tiny),
                          "--out", "cli.yaml"], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert yaml.safe_load((tmp_path / "cli.yaml").read_text()) == yaml.safe_load(
        overlay.read_text())

    jobs = planned_jobs(tmp_path, tiny, overlay)
    rules = Counter(rule for rule, _ in jobs)
    new_n = set(new.values())
    # the new cells' runs quantized too (the default schemes, int8 and int4)
    assert rules == Counter({"synthetic_data": len(new_n), "train": 2, "score": 2,
                             "evaluate": 2, "quantize": 4, **AGGREGATES}), rules
    for rule, wildcards in jobs:
        if rule in ("synthetic_data", "train", "score", "evaluate", "quantize"):
            assert int(wildcards["n"]) in new_n, (rule, wildcards)
        if rule != "synthetic_data" and "arch" in wildcards:
            assert int(wildcards["n"]) == new[wildcards["arch"]], (rule, wildcards)
