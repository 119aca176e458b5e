import json
import subprocess
import sys

import polars as pl
import pytest

from conftest import REPO
from memcap.paper import PAPER_MIA
from memcap.quantities import verify_verdict
from memcap.stages.predict import fitted_constants, law_kind, predict
from memcap.stages.verify import plan, summarize


def test_predict_with_the_papers_constants():
    out = predict(params=1_556_075_200, n=76_795_021)
    assert out["f1"] == pytest.approx(0.7516, abs=5e-5)
    assert out["capacity_bits"] == pytest.approx(3.64 * 1_556_075_200)
    assert out["capacity_ratio"] is None
    uniform = predict(params=15_840, n=256, seq_len=32, bits_per_token=6.0, alpha=2.0)
    assert uniform["capacity_ratio"] == pytest.approx(256 * 31 * 6 / (2.0 * 15_840))
    # more data per parameter, weaker membership signal, down to chance
    f1s = [predict(params=10**6, n=n)["f1"] for n in (10**3, 10**4, 10**5, 10**6, 10**7)]
    assert f1s == sorted(f1s, reverse=True) and f1s[-1] == pytest.approx(0.5, abs=1e-6)


def test_predict_command_prints_the_answer():
    out = subprocess.run([sys.executable, "-m", "memcap", "predict", "--params", "123702528",
                          "--n", "1498634", "--paper"], capture_output=True, text=True,
                         env={"PYTHONPATH": str(REPO / "src")}, check=True).stdout
    assert "0.9514" in out and "450,277," in out and "membership is inferable" in out


def test_verify_plan_inverts_the_law():
    laws = pl.DataFrame({"law": ["mia_f1"] * 3, "kind": ["synthetic"] * 3,
                         "family": ["gpt2"] * 3, "precision": ["fp32"] * 3,
                         "parameter": ["c1", "c2", "c3"],
                         "value": [PAPER_MIA["c1"], PAPER_MIA["c2"], PAPER_MIA["c3"]]})
    p = plan(laws, "synthetic", "fp32", "gpt2", params=123_702_528, seq_len=64,
             targets=[0.55, 0.75, 0.95])
    ns = [c["n"] for c in p["cells"]]
    assert ns == sorted(ns, reverse=True)
    # the paper's validation sizes for the GPT-2-small shape (at which the law gives
    # 0.5505 / 0.7516 / 0.9514, a little off the round targets): within 3 %
    for n, paper_n in zip(ns, (13_566_442, 6_104_935, 1_498_634), strict=True):
        assert n == pytest.approx(paper_n, rel=0.03)
    assert all(c["predicted_f1"] == pytest.approx(c["target_f1"], abs=1e-4)
               for c in p["cells"])
    with pytest.raises(ValueError, match="no fitted membership law"):
        plan(laws, "synthetic", "bf16", "gpt2", 10, 64, [0.6])
    with pytest.raises(ValueError, match="family llama"):
        plan(laws, "synthetic", "fp32", "llama", 10, 64, [0.6])


def law_database(path, laws: dict[str, dict]) -> None:
    """A database whose laws table holds an α and one membership law per kind."""
    import duckdb
    rows = [("capacity", "synthetic", "gpt2", "fp32", "alpha", 2.5, False),
            ("capacity", "synthetic", "mamba", "fp32", "alpha", 1.5, False)]
    rows += [("mia_f1", kind, "gpt2", "fp32", name, value, False)
             for kind, c in laws.items() for name, value in c.items()]
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE laws (law VARCHAR, kind VARCHAR, family VARCHAR, "
                "precision VARCHAR, parameter VARCHAR, value DOUBLE, lower_bound BOOLEAN)")
    con.executemany("INSERT INTO laws VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    con.close()


def test_predict_uses_the_law_of_the_kind_asked_for(tmp_path):
    db = tmp_path / "laws.duckdb"
    synthetic = {"c1": 1.0, "c2": 10.0, "c3": 0.05}
    text = {"c1": 1.0, "c2": 10.0, "c3": 0.5}
    law_database(db, {"synthetic": synthetic, "text": text})
    assert fitted_constants(db, "fp32", "synthetic")[2] == synthetic
    assert fitted_constants(db, "fp32", "text")[2] == text
    # another family's α, and no membership law of its own: the paper's
    alpha, _, law, law_src = fitted_constants(db, "fp32", "synthetic", "mamba")
    assert alpha == 1.5 and law == dict(PAPER_MIA) and "paper" in law_src
    assert law_kind(None, None) == "synthetic" and law_kind(None, 9.0) == "text"
    assert law_kind("synthetic", 9.0) == "synthetic"
    # the command: text implied by --bits-per-token, stated in the answer, or chosen
    def run(*args):
        return subprocess.run([sys.executable, "-m", "memcap", "predict", "--params", "10000",
                               "--n", "1000", "--precision", "fp32", "--db", str(db), *args],
                              capture_output=True, text=True, check=True,
                              env={"PYTHONPATH": str(REPO / "src")}).stdout
    assert "(gpt2 text law, fp32)" in run("--bits-per-token", "3.0")
    assert "(gpt2 synthetic law, fp32)" in run("--vocab-size", "64")
    assert "(gpt2 synthetic law, fp32)" in run("--bits-per-token", "3.0", "--kind", "synthetic")
    # a kind with no fitted law falls back to the paper's, and says so
    law_database(tmp_path / "syn.duckdb", {"synthetic": synthetic})
    _, _, law, source = fitted_constants(tmp_path / "syn.duckdb", "fp32", "text")
    assert law == PAPER_MIA and "no text law" in source


def test_verify_summary_reports_gaps_per_seed_and_a_verdict(tmp_path):
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps({
        "kind": "synthetic", "precision": "fp32", "params": 1000, "seq_len": 64,
        "law": {"c1": 1.0, "c2": 10.0, "c3": 0.1},
        "cells": [{"target_f1": 0.6, "n": 400, "predicted_f1": 0.6, "note": ""},
                  {"target_f1": 0.9, "n": 100, "predicted_f1": 0.9, "note": ""}]}))
    evals = []
    for n, f1s in ((400, (0.62, 0.64)), (100, (0.80, 0.82))):
        for seed, f1 in enumerate(f1s):
            d = tmp_path / f"n{n}-s{seed}"
            d.mkdir()
            (d / "evaluation.json").write_text(json.dumps(
                {"n": n, "seed": seed, "mia": [{"attack": "loss", "f1_median": f1}]}))
            (d / "run.json").write_text(json.dumps({"steps": 5 * n}))
            evals.append(d / "evaluation.json")
    table = summarize(plan_path, evals, tmp_path / "v.parquet", tmp_path / "v.html", 0.05)
    rows = table.rows_by_key("target_f1", named=True, unique=True)
    assert rows[0.6]["observed_by_seed"] == [0.62, 0.64] and rows[0.6]["steps"] == 2000
    assert rows[0.6]["gap"] == pytest.approx(0.03) and rows[0.6]["passed"]
    assert rows[0.9]["gap"] == pytest.approx(-0.09) and not rows[0.9]["passed"]
    text = verify_verdict(table)
    assert text.startswith("FAILED: 1 of 2") and "-0.090" in text
    assert "FAILED" in (tmp_path / "v.html").read_text()
