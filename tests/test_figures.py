"""Figures embed bounded data: ROC curves thinned to a fixed number of points, histograms as
counts, so a figure's size does not grow with the number of samples."""

import numpy as np
import polars as pl

from memcap.metrics import roc_curve
from memcap.stages.figures import ROC_POINTS, histogram, spread, thin_roc


def test_thinned_roc_keeps_the_curve_with_bounded_points():
    rng = np.random.default_rng(0)
    members, others = rng.normal(0.5, 1, 200_000), rng.normal(0, 1, 200_000)
    fpr, tpr = roc_curve(members, others)
    assert len(fpr) > 100_000
    f, t = thin_roc(fpr, tpr)
    assert len(f) <= ROC_POINTS + 7
    assert f[0] == 0 and f[-1] == 1 and t[-1] == 1
    assert np.all(np.diff(f) > 0) and np.all(np.diff(t) >= 0)
    for target in (1e-4, 1e-3, 1e-2, 0.1, 0.5):  # exact at each decade, close in between
        exact = tpr[np.searchsorted(fpr, target, side="right") - 1]
        thinned = t[np.searchsorted(f, target, side="right") - 1]
        assert thinned == exact if target <= 0.1 else abs(thinned - exact) < 0.01
    # area under the step curve: within 0.01 of the full curve's
    assert abs(np.sum(np.diff(f) * t[:-1]) - np.sum(np.diff(fpr) * tpr[:-1])) < 0.01


def test_histogram_counts_every_sample_once():
    rng = np.random.default_rng(1)
    scores = pl.DataFrame({"member": rng.random(10_000) < 0.3,
                           "nll_bits": rng.normal(100, 10, 10_000)})
    edges = np.linspace(scores["nll_bits"].min(), scores["nll_bits"].max(), 41)
    h = histogram(scores, 512, edges)
    assert h.height == 80
    by = dict(h.group_by("sample").agg(pl.col("samples").sum()).iter_rows())
    assert by == {"member": int(scores["member"].sum()),
                  "held out": int((~scores["member"]).sum())}


def test_roc_figure_draws_a_bounded_spread_of_sizes():
    sizes = [2**i for i in range(12, 24)]  # the paper grid's 12 sizes
    picked = spread(sizes, 8)
    assert len(picked) == 8 and picked[0] == sizes[0] and picked[-1] == sizes[-1]
    assert set(picked) <= set(sizes) and picked == sorted(picked)
    assert spread([16, 32, 64], 8) == [16, 32, 64]
