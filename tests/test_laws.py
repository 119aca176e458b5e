import math

import numpy as np
import polars as pl
import pytest

from memcap.config import defaults, run_id
from memcap.stages.laws import (
    bootstrap_capacity,
    capacity_table,
    fit_capacity_laws,
    slope_through_origin,
)


def laws_settings(**overrides) -> dict:
    """The schema's `laws:` defaults (bootstrap, ci, seed), with overrides."""
    return {**defaults("laws"), **overrides}


def _frames(mem_fn, archs=(("L1-d8", 1000), ("L1-d16", 3000), ("L2-d16", 5000)),
            sizes=(16, 64, 256, 1024), seeds=(0, 1, 2), saturated=True):
    runs, mem = [], []
    for arch, params in archs:
        for n in sizes:
            for s in seeds:
                rid = run_id("synthetic", 64, 32, arch, "fp32", n, s)
                runs.append({"run_id": rid, "kind": "synthetic", "arch": arch, "family": "gpt2",
                             "n_layer": 1,
                             "d_model": 8, "params": params, "precision": "fp32", "n": n,
                             "seed": s, "saturated": saturated})
                dataset = n * 186.0
                m = mem_fn(params, dataset, s)
                mem.append({"run_id": rid, "mem_bits": m, "dataset_bits": dataset,
                            "memorizable_fraction": m / dataset})
    return pl.DataFrame(runs), pl.DataFrame(mem)


def test_capacity_is_the_plateau_and_alpha_is_recovered():
    # each model stores min(3·P, dataset) bits, ± a seed offset that averages out
    runs, mem = _frames(lambda p, d, s: min(3.0 * p, d) * (1 + 0.01 * (s - 1)))
    cap = capacity_table(runs, mem)
    assert cap["capacity_bits"].to_list() == pytest.approx([3000, 9000, 15000])
    assert cap["saturated"].all() and not cap["lower_bound"].any()
    laws = fit_capacity_laws(runs, mem, cap, **laws_settings(bootstrap=300))
    alpha = laws.filter(pl.col("parameter") == "alpha").row(0, named=True)
    assert alpha["value"] == pytest.approx(3.0)
    assert alpha["ci_low"] <= 3.0 <= alpha["ci_high"]
    assert 2.9 < alpha["ci_low"] and alpha["ci_high"] < 3.1


def test_capacity_at_the_largest_n_is_a_lower_bound():
    runs, mem = _frames(lambda p, d, s: min(100.0 * p, d))  # never saturates in the grid
    cap = capacity_table(runs, mem)
    assert (cap["n_at_max"] == 1024).all() and cap["lower_bound"].all()
    laws = fit_capacity_laws(runs, mem, cap, **laws_settings(bootstrap=50))
    assert laws["lower_bound"].all()


def test_unsaturated_training_makes_a_lower_bound():
    runs, mem = _frames(lambda p, d, s: min(3.0 * p, d), saturated=False)
    assert capacity_table(runs, mem)["lower_bound"].all()


def test_slope_through_origin_and_bootstrap_shapes():
    x = np.array([1.0, 2.0, 4.0])
    assert slope_through_origin(x, 2.5 * x) == pytest.approx(2.5)
    mem = np.arange(24, dtype=float).reshape(2, 3, 4)  # (archs, sizes, seeds)
    boot = bootstrap_capacity(mem, 20, np.random.default_rng(0))
    assert boot.shape == (20, 2)
    assert (boot >= mem.min(-1).max(-1)).all() and (boot <= mem.max(-1).max(-1)).all()


def test_cpu_runs_make_alpha_a_labelled_lower_bound():
    runs, mem = _frames(lambda p, d, s: min(3.0 * p, d) * (1 + 0.01 * (s - 1)))
    cap = capacity_table(runs, mem)
    on_cpu = runs.with_columns(device=pl.lit("cpu"))
    laws = fit_capacity_laws(on_cpu, mem, cap, **laws_settings(bootstrap=50))
    assert laws["lower_bound"].all()
    assert all("CPU" in r for r in laws["note"])
    on_gpu = runs.with_columns(device=pl.lit("cuda"))
    on_gpu_laws = fit_capacity_laws(on_gpu, mem, cap, **laws_settings(bootstrap=50))
    assert not on_gpu_laws["lower_bound"].any()


def test_mia_law_with_the_papers_constants_reproduces_its_table():
    from memcap.paper import PAPER_MIA
    from memcap.quantities import invert_mia_f1, mia_f1

    # the validation table's exact N/P (GPT-2 XL): 0.10967, 0.049352, 0.012115
    exact = np.array([170_654_583, 76_795_021, 18_851_574]) / 1_556_075_200
    assert mia_f1(exact, **PAPER_MIA) == pytest.approx([0.5505, 0.7516, 0.9514], abs=5e-5)
    # the same ratios rounded to 0.1097 / 0.0494 / 0.0121 move F1 by at most 3e-4
    rounded = mia_f1(np.array([0.1097, 0.0494, 0.0121]), **PAPER_MIA)
    assert rounded == pytest.approx([0.5505, 0.7516, 0.9514], abs=5e-4)
    assert mia_f1(np.array([1.0, 10.0, 1e3]), **PAPER_MIA) == pytest.approx(0.5, abs=1e-6)
    assert np.all(np.diff(mia_f1(np.linspace(0, 1, 50), **PAPER_MIA)) <= 0)
    for f1 in (0.55, 0.75, 0.95):
        x = invert_mia_f1(f1, **PAPER_MIA)
        assert mia_f1(np.array([x]), **PAPER_MIA)[0] == pytest.approx(f1)
    assert math.isnan(invert_mia_f1(0.45, **PAPER_MIA))


def test_mia_law_fit_recovers_known_constants():
    from memcap.quantities import mia_f1
    from memcap.stages.laws import fit_mia_curve

    x = np.geomspace(1e-3, 0.3, 30)
    y = mia_f1(x, 1.2, 50.0, 0.05) + np.random.default_rng(0).normal(0, 0.005, x.size)
    c1, c2, c3 = fit_mia_curve(x, y)
    assert c1 == pytest.approx(1.2, rel=0.1) and c2 == pytest.approx(50, rel=0.15)
    assert c3 == pytest.approx(0.05, abs=0.01)


def _status(cap: pl.DataFrame, arch: str) -> dict:
    return cap.filter(pl.col("arch") == arch).row(0, named=True)


def rise_and_fall(p, d, s):
    """Memorization rises with the data to capacity 3·P, and past 20·P bits of data falls
    by a fifth (undertrained past-capacity cells): P 1,000 peaks at N 64 of 16…1,024."""
    return min(3.0 * p, d) * (1.0 if d < 20.0 * p else 0.8)


def test_a_maximum_at_the_end_of_the_grid_is_flagged():
    runs, mem = _frames(rise_and_fall, archs=(("L1-d8", 1000), ("L2-d16", 60000)))
    cap = capacity_table(runs, mem)
    inside, end = _status(cap, "L1-d8"), _status(cap, "L2-d16")
    assert inside["n_at_max"] == 16 * 4 and inside["bracketed"]
    assert (inside["bracket_n_below"], inside["bracket_n_above"]) == (16, 256)
    assert inside["bracket_status"] == "bracketed" and not inside["lower_bound"]
    assert end["n_at_max"] == end["n_max"] == 1024 and not end["bracketed"]
    assert end["bracket_n_above"] is None and end["bracket_n_below"] == 256
    assert end["bracket_status"] == "max at the largest N"
    assert end["lower_bound"] and not end["saturated"]
    # at the smallest N: every N is past capacity, and memorization falls with N
    runs, mem = _frames(lambda p, d, s: 3.0 * p * 16 * 186 / d)
    first = _status(capacity_table(runs, mem), "L1-d8")
    assert first["n_at_max"] == first["n_min"] == 16
    assert first["bracket_status"] == "max at the smallest N" and first["lower_bound"]
    # a single N brackets nothing
    runs, mem = _frames(lambda p, d, s: min(3.0 * p, d), sizes=(64,))
    assert _status(capacity_table(runs, mem), "L1-d8")["bracket_status"] == "max at the only N"


def test_a_bracket_needs_its_neighbours_trained_to_their_plateau():
    runs, mem = _frames(rise_and_fall, archs=(("L1-d8", 1000),))
    # the runs at N 256 (the neighbour above the maximum at 64) stopped while still rising
    runs = runs.with_columns(saturated=pl.col("n") != 256)
    row = _status(capacity_table(runs, mem), "L1-d8")
    assert row["n_at_max"] == 64 and not row["bracketed"]
    assert row["bracket_status"] == "N above not saturated" and row["lower_bound"]
    runs = runs.with_columns(saturated=pl.col("n") > 64)
    row = _status(capacity_table(runs, mem), "L1-d8")
    assert row["bracket_status"] == "runs at the maximum not saturated; N below not saturated"


def test_the_next_n_doubles_the_grid_up_to_the_predicted_capacity():
    from memcap.stages.laws import next_bracket_n

    assert next_bracket_n(64, 16, 256, predicted_n=100.0) is None  # inside the grid
    assert next_bracket_n(256, 16, 256, predicted_n=100.0) == 512  # past the prediction
    assert next_bracket_n(256, 16, 256, predicted_n=3000.0) == 4096  # the prediction, above
    assert next_bracket_n(16, 16, 256, predicted_n=10.0) == 8
    assert next_bracket_n(16, 16, 256, predicted_n=3.0) == 2
    assert next_bracket_n(1, 1, 256, predicted_n=0.5) is None
    assert next_bracket_n(64, 64, 64, predicted_n=1000.0) == 1024
    # a data-limited maximum: the capacity lies between it and the N above
    assert next_bracket_n(64, 16, 256, 100.0, n_above=256, data_limited=True) == 128
    assert next_bracket_n(16, 16, 256, 100.0, n_above=64, data_limited=True) == 32
    assert next_bracket_n(256, 16, 256, 100.0, n_above=None, data_limited=True) == 512
    assert next_bracket_n(2, 1, 3, 10.0, n_above=3, data_limited=True) is None
