import subprocess
import sys

import polars as pl
import pytest

from conftest import REPO
from memcap.paper import PAPER_MIA
from memcap.predict import predict
from memcap.verify import plan


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
                         "precision": ["fp32"] * 3, "parameter": ["c1", "c2", "c3"],
                         "value": [PAPER_MIA["c1"], PAPER_MIA["c2"], PAPER_MIA["c3"]]})
    p = plan(laws, "synthetic", "fp32", params=123_702_528, seq_len=64,
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
        plan(laws, "synthetic", "bf16", 10, 64, [0.6])
