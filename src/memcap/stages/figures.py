"""Figures from the result tables: Altair charts saved as standalone HTML (inline JS) and PNG.

Reads the Parquet tables of results/tables and the per-run score files with polars; torch-free
and duckdb-free. The figure names live in memcap.paths.FIGURES (the workflow reads them there
without importing altair); CHARTS maps each to the function that draws it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import altair as alt
import numpy as np
import polars as pl

from memcap.metrics import ATTACKS, roc_curve
from memcap.paper import PAPER_ALPHA_BF16, PAPER_MIA
from memcap.paths import FIGURES
from memcap.quantities import LAW_SEQ_LEN, mia_f1, sequences_per_param

WIDTH, HEIGHT = 520, 340
TABLE_NAMES = ("runs", "memorization", "capacity", "laws", "mia", "extraction",
               "double_descent", "quantization")
SCORE_COLUMNS = ("run_id", "sample_id", "member", "nll_bits")


@dataclass(frozen=True)
class Tables:
    """The result tables a figure draws from, and the per-sample scores, scanned lazily."""

    runs: pl.DataFrame
    memorization: pl.DataFrame
    capacity: pl.DataFrame
    laws: pl.DataFrame
    mia: pl.DataFrame
    extraction: pl.DataFrame
    double_descent: pl.DataFrame
    quantization: pl.DataFrame
    score_files: dict[str, Path]  # run_id -> its scores.parquet
    set_files: dict[str, Path]  # run_id -> its mia_sets.parquet (what the attacks compared)

    @classmethod
    def read(cls, tables_dir: str | Path, score_files: list[Path],
             set_files: list[Path]) -> Tables:
        tables_dir = Path(tables_dir)
        frames = {name: pl.read_parquet(tables_dir / f"{name}.parquet") for name in TABLE_NAMES}

        def by_run(files: list[Path]) -> dict[str, Path]:
            return {pl.read_parquet(f, columns=["run_id"], n_rows=1, hive_partitioning=False)
                    ["run_id"][0]: Path(f) for f in files}

        return cls(**frames, score_files=by_run(score_files), set_files=by_run(set_files))

    def attack_sets(self, run_id: str) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(members, non-members) one run's attacks compared, a column of scores per attack."""
        sets = pl.read_parquet(self.set_files[run_id], hive_partitioning=False)
        return sets.filter(pl.col("member")), sets.filter(~pl.col("member"))

    def first_seed(self) -> pl.Expr:
        """Runs of the lowest seed of the experiment ("seed 0")."""
        return pl.col("seed") == self.runs["seed"].min()

    def primary_scores(self, run_id: str,
                       columns: tuple[str, ...] = SCORE_COLUMNS) -> pl.DataFrame:
        """One run's samples, scored against its primary reference: figures read the score
        files one run at a time, so memory follows the largest run, not the grid."""
        # the files sit in key=value folders: read them as plain files, not as a hive dataset
        return (pl.scan_parquet(self.score_files[run_id], hive_partitioning=False)
                .filter(pl.col("primary_reference")).select(columns).collect())


ROC_POINTS = 120  # points kept of each ROC curve: the figure's size does not grow with N


def thin_roc(fpr: np.ndarray, tpr: np.ndarray, points: int = ROC_POINTS
             ) -> tuple[np.ndarray, np.ndarray]:
    """An ROC curve on at most `points` false positive rates (half log-spaced from 10^-4, half
    linear, and every decade exactly), each with the highest TPR reached at or below it: the
    same step curve, drawn from a bounded number of points."""
    grid = np.unique(np.r_[0.0, 1e-4, 1e-3, 1e-2, 0.1, np.geomspace(1e-4, 1, points // 2),
                          np.linspace(0, 1, points // 2), fpr[:1], fpr[-1:]])
    at = np.searchsorted(fpr, grid, side="right") - 1  # last point with fpr ≤ grid value
    keep = at >= 0
    return grid[keep], tpr[at[keep]]


def _empty(title: str, why: str) -> alt.Chart:
    """A placeholder panel for a figure whose data the experiment does not produce."""
    return alt.Chart(pl.DataFrame({"why": [why]})).mark_text(size=14).encode(
        text="why:N").properties(width=WIDTH, height=80, title=title)


def _kind_arch() -> pl.Expr:
    return pl.format("{} {}", "kind", "arch").alias("arch")


def _status() -> pl.Expr:
    return (pl.when(pl.col("saturated")).then(pl.lit("saturated"))
            .otherwise(pl.lit("lower bound")).alias("status"))


def memorization_vs_n(t: Tables) -> alt.Chart:
    """Unintended memorization against N, one line per architecture (mean over seeds,
    min–max band), one panel per data kind (synthetic beside text). Dashed: the data's
    size under the reference, N·(S−1)·log2 V for synthetic data, Σ nll(x | same-arch
    reference) for text."""
    df = (t.runs.join(t.memorization.select("run_id", "mem_bits", "dataset_bits"), on="run_id")
          .group_by("kind", "arch", "params", "precision", "n")
          .agg(pl.col("mem_bits").mean(), mem_min=pl.col("mem_bits").min(),
               mem_max=pl.col("mem_bits").max(), memorizable_bits=pl.col("dataset_bits").mean())
          .filter(pl.col("mem_bits") > 0)
          .sort("params", "n", "kind", "precision", "arch"))
    # a log axis has no 0: the band starts at the lowest positive seed (the same-arch
    # reference run memorizes 0 bits against itself by construction)
    df = df.with_columns(architecture=pl.format("{} ({} params)", "arch", "params"),
                         mem_min=pl.when(pl.col("mem_min") > 0).then("mem_min")
                         .otherwise("mem_bits"))
    x = alt.X("n:Q", scale=alt.Scale(type="log", base=2), title="dataset size N (sequences)")
    y_scale = alt.Scale(type="log")
    colour = alt.Color("architecture:N", sort=alt.SortField("params"), title="architecture")
    band = alt.Chart().mark_area(opacity=0.18).encode(
        x=x, y=alt.Y("mem_min:Q", scale=y_scale), y2="mem_max:Q",
        color=alt.Color("architecture:N", sort=alt.SortField("params")))
    lines = alt.Chart().mark_line(point=True).encode(
        x=x, y=alt.Y("mem_bits:Q", scale=y_scale, title="memorized bits (mean over seeds)"),
        color=colour,
        tooltip=["arch", "params", "n", alt.Tooltip("mem_bits:Q", format=",.0f"),
                 alt.Tooltip("mem_min:Q", format=",.0f"), alt.Tooltip("mem_max:Q", format=",.0f")])
    ref = (alt.Chart().mark_line(strokeDash=[6, 4], color="black", strokeWidth=1)
           .encode(x=x, y="memorizable_bits:Q", detail="architecture:N",
                   tooltip=["arch", alt.Tooltip("memorizable_bits:Q", format=",.0f")]))
    chart = alt.layer(band, lines, ref, data=df).properties(width=WIDTH * 0.8, height=HEIGHT)
    row = "precision:N" if df["precision"].n_unique() > 1 else alt.Undefined
    return chart.facet(column=alt.Column("kind:N", title=None), row=row).resolve_scale(
        x="independent", y="independent").properties(
        title=alt.TitleParams("Memorization plateaus at capacity",
                              subtitle="dashed: the data's bits under the reference "
                                       "(synthetic: N·(S−1)·log2 V; text: same-arch "
                                       "reference); band: seed min–max"))


def _series(df: pl.DataFrame, families: int) -> pl.DataFrame:
    """The colour of a capacity row or α fit: its precision, led by its model family when the
    experiment compares families."""
    return df.with_columns(series=pl.format("{} {}", "family", "precision") if families > 1
                           else pl.col("precision"))


def capacity_vs_params(t: Tables) -> alt.Chart:
    """Capacity against parameter count, one colour per model family (and precision), with
    each one's fitted α line, its CI band and the paper's α (bf16) for reference. Open marks
    are lower bounds."""
    cap = t.capacity.filter(pl.col("kind") == "synthetic")
    if cap.is_empty():
        return _empty("Capacity against parameters", "no synthetic runs in this experiment")
    families = cap["family"].n_unique()
    cap = _series(cap.with_columns(_status()), families)
    laws = _series(t.laws.filter((pl.col("law") == "capacity") & (pl.col("parameter") == "alpha"))
                   .select("kind", "family", "precision", pl.col("value").alias("alpha"),
                           "ci_low", "ci_high"), families)
    pmax = float(cap["params"].max()) * 1.05
    fit = pl.concat([
        laws.with_columns(params=pl.lit(0.0)),
        laws.with_columns(params=pl.lit(pmax)),
    ]).with_columns(fit=pl.col("alpha") * pl.col("params"), lo=pl.col("ci_low") * pl.col("params"),
                    hi=pl.col("ci_high") * pl.col("params"),
                    label=pl.format("{}: α = {} bits/param", "series",
                                    pl.col("alpha").round(3)))
    paper = pl.DataFrame({"params": [0.0, pmax]}).with_columns(
        paper=pl.col("params") * PAPER_ALPHA_BF16)
    x = alt.X("params:Q", title="parameters P")
    colour = alt.Color("series:N", title="family" if families > 1 else "precision")
    points = alt.Chart(cap).mark_point(size=90, filled=True).encode(
        x=x, y=alt.Y("capacity_bits:Q", title="capacity (bits)"), color=colour,
        shape=alt.Shape("status:N", title="capacity",
                        scale=alt.Scale(domain=["saturated", "lower bound"],
                                        range=["circle", "triangle-down"])),
        tooltip=["arch", "family", "params", alt.Tooltip("capacity_bits:Q", format=",.0f"),
                 "n_at_max", alt.Tooltip("bits_per_param:Q", format=".3f"), "status"])
    band = alt.Chart(fit).mark_area(opacity=0.15).encode(x=x, y="lo:Q", y2="hi:Q", color=colour)
    line = alt.Chart(fit).mark_line().encode(x=x, y="fit:Q", color=colour,
                                             tooltip=["label:N", "ci_low", "ci_high"])
    paper_line = alt.Chart(paper).mark_line(strokeDash=[4, 4], color="grey").encode(
        x=x, y="paper:Q")
    return alt.layer(band, line, paper_line, points).properties(
        width=WIDTH, height=HEIGHT,
        title=alt.TitleParams("Capacity grows linearly with parameters",
                              subtitle=f"lines: fitted α through the origin with CI; grey "
                                       f"dashed: the paper's α = {PAPER_ALPHA_BF16} (bf16)"))


def bits_per_param(t: Tables) -> alt.Chart:
    """Bits per parameter per architecture at its capacity (mean over seeds, seed min–max)."""
    seeds = (t.runs.select("run_id", "kind", "arch", "precision", n_at_max="n",
                           run_params="params")
             .join(t.memorization.select("run_id", "mem_bits"), on="run_id")
             .with_columns(bpp=pl.col("mem_bits") / pl.col("run_params")))
    df = (t.capacity.filter(pl.col("kind") == "synthetic")
          .join(seeds, on=["kind", "arch", "precision", "n_at_max"])
          .group_by("arch", "family", "precision", "params", "bits_per_param", "saturated")
          .agg(bpp_min=pl.col("bpp").min(), bpp_max=pl.col("bpp").max())
          .sort("params", "arch", "precision"))
    if df.is_empty():
        return _empty("Bits per parameter at capacity", "no synthetic runs in this experiment")
    families = df["family"].n_unique()
    df = _series(df.with_columns(_status()), families)
    order = df.sort("params")["arch"].unique(maintain_order=True).to_list()
    x = alt.X("arch:N", sort=order, title="architecture (by parameter count)")
    xo = alt.XOffset("precision:N")
    bars = alt.Chart(df).mark_bar().encode(
        x=x, xOffset=xo, y=alt.Y("bits_per_param:Q", title="bits per parameter"),
        color=alt.Color("series:N", title="family" if families > 1 else "precision"),
        opacity=alt.Opacity("status:N", scale=alt.Scale(domain=["saturated", "lower bound"],
                                                         range=[0.9, 0.4]), title="capacity"),
        tooltip=["arch", "params", alt.Tooltip("bits_per_param:Q", format=".3f"), "status"])
    errs = alt.Chart(df).mark_errorbar().encode(x=x, xOffset=xo, y="bpp_min:Q", y2="bpp_max:Q")
    rule = alt.Chart(pl.DataFrame({"paper": [PAPER_ALPHA_BF16]})).mark_rule(
        strokeDash=[4, 4], color="grey").encode(y="paper:Q")
    return alt.layer(bars, errs, rule).properties(
        width=WIDTH, height=HEIGHT,
        title=alt.TitleParams("Bits per parameter at capacity",
                              subtitle="error bars: seed min–max; pale bars: lower bounds; "
                                       f"grey: the paper's α = {PAPER_ALPHA_BF16}"))


ROC_SIZES = 8  # dataset sizes drawn per architecture: the figure does not grow with the grid
# log axes labelled and gridded at decades only (a line per tick of each decade made the
# ROC panels' grids most of the figure's size)
DECADES = alt.Axis(values=[1e-3, 1e-2, 1e-1, 1], format="~g")


def spread(values: list[int], k: int = ROC_SIZES) -> list[int]:
    """At most k of the sorted values, evenly spread over their ranks, ends included."""
    values = sorted(values)
    if len(values) <= k:
        return values
    return sorted({values[round(i * (len(values) - 1) / (k - 1))] for i in range(k)})


def _roc_points(t: Tables) -> pl.DataFrame:
    """ROC curves of the loss attack for seed 0 of the cells of one precision (the first by
    name: bf16 when the grid has it), at most ROC_SIZES dataset sizes per kind, on the members
    and non-members the attack drew."""
    runs = t.runs.filter(t.first_seed() & (pl.col("precision") == t.runs["precision"].min()))
    drawn = pl.DataFrame([(kind, n) for (kind,), part in runs.group_by("kind")
                          for n in spread(part["n"].unique().to_list())],
                         schema={"kind": pl.String, "n": pl.Int64}, orient="row")
    runs = (runs.join(drawn, on=["kind", "n"], how="semi")
            .select("run_id", _kind_arch(), (pl.col("kind") == "text").alias("text"),
                    "params", "n", "precision")
            .sort("params", "arch", "n", "precision"))
    frames = []
    for run in runs.iter_rows(named=True):
        members, others = t.attack_sets(run["run_id"])
        fpr, tpr = thin_roc(*roc_curve(members["loss"].to_numpy(), others["loss"].to_numpy()))
        frames.append(pl.DataFrame({"fpr": fpr, "tpr": tpr}).with_columns(
            arch=pl.lit(run["arch"]), params=pl.lit(run["params"] + run["text"] * 10**12),
            n=pl.lit(run["n"]),
            precision=pl.lit(run["precision"])))
    return pl.concat(frames, how="vertical_relaxed")


def attack_rocs(t: Tables) -> alt.Chart:
    """ROC of every attack on one run per kind: seed 0 of the largest architecture, at the N
    whose loss-attack AUC is nearest 0.75 (where the attacks have something to tell apart),
    log-log axes. Text runs at the largest N are left out: the same-arch reference is such a
    run, and calibrating a run against itself scores every sample 0."""
    runs = t.runs.filter(t.first_seed() & (pl.col("precision") == t.runs["precision"].min()))
    largest_text = runs.filter(pl.col("kind") == "text")["n"].max() or 0
    loss = (t.mia.filter(pl.col("attack") == "loss").select("run_id", "auc")
            .join(runs.filter((pl.col("kind") != "text") | (pl.col("n") != largest_text)),
                  on="run_id"))
    picks = (loss.sort("kind", pl.col("params"), (pl.col("auc") - 0.75).abs(),
                       descending=[False, True, False])
             .group_by("kind", maintain_order=True).first())
    frames = []
    for run in picks.iter_rows(named=True):
        members, others = t.attack_sets(run["run_id"])
        label = f"{run['kind']} {run['arch']}, N = {run['n']:,}"
        for attack in (a for a in ATTACKS if a in members.columns):
            fpr, tpr = thin_roc(*roc_curve(members[attack].to_numpy(),
                                           others[attack].to_numpy()))
            frames.append(pl.DataFrame({"fpr": fpr, "tpr": tpr}).with_columns(
                run=pl.lit(label), attack=pl.lit(attack)))
    df = pl.concat(frames).filter((pl.col("fpr") > 0) & (pl.col("tpr") > 0))  # log axes
    scale = alt.Scale(type="log", domain=[1e-3, 1])
    line = alt.Chart().mark_line(clip=True).encode(  # the facet's data, split by panel
        x=alt.X("fpr:Q", scale=scale, axis=DECADES, title="false positive rate"),
        y=alt.Y("tpr:Q", scale=scale, axis=DECADES, title="true positive rate"),
        color=alt.Color("attack:N", sort=list(ATTACKS), title="attack"),
        detail="attack:N", order="fpr:Q")
    diag = alt.Chart(pl.DataFrame({"fpr": [1e-3, 1.0], "tpr": [1e-3, 1.0]})).mark_line(
        strokeDash=[4, 4], color="grey", clip=True).encode(x="fpr:Q", y="tpr:Q")
    return alt.layer(diag, line).properties(width=260, height=260).facet(
        column=alt.Column("run:N", title=None), data=df).properties(
        title=alt.TitleParams("Membership inference: every attack on one run per kind",
                              subtitle="loss, reference-calibrated, zlib, Min-K%; on uniform "
                                       "synthetic data reference = loss exactly"))


def roc_curves(t: Tables) -> alt.Chart:
    """ROC of the loss attack on linear and log-log axes, one line per N, one panel per
    architecture (seed 0). The diagonal is chance."""
    df = _roc_points(t)
    colour = alt.Color("n:O", scale=alt.Scale(scheme="viridis"), title="N")
    charts = []
    for log in (False, True):
        data = df.filter((pl.col("fpr") > 0) & (pl.col("tpr") > 0)) if log else df
        scale = alt.Scale(type="log", domain=[1e-3, 1]) if log else alt.Scale(domain=[0, 1])
        axis = DECADES if log else alt.Axis()
        # no data of its own: the facet's data, split by panel, reaches the line
        line = alt.Chart().mark_line(interpolate="step-after" if not log else "linear",
                                     clip=True).encode(
            x=alt.X("fpr:Q", scale=scale, axis=axis, title="false positive rate"),
            y=alt.Y("tpr:Q", scale=scale, axis=axis, title="true positive rate"),
            color=colour, detail="n:O")
        diag = alt.Chart(pl.DataFrame({"fpr": [1e-3, 1.0], "tpr": [1e-3, 1.0]})).mark_line(
            strokeDash=[4, 4], color="grey", clip=True).encode(x="fpr:Q", y="tpr:Q")
        charts.append(alt.layer(diag, line).properties(width=150, height=150).facet(
            column=alt.Column("arch:N", sort=alt.SortField("params"), title=None),
            data=data).properties(title="log-log axes" if log else "linear axes"))
    return alt.vconcat(*charts).properties(
        title=alt.TitleParams("Membership inference (loss attack): ROC by dataset size",
                              subtitle="members vs as many held-out samples; seed 0, "
                              f"{t.runs['precision'].min()}"))


def score_histograms(t: Tables) -> alt.Chart:
    """Code length of members and non-members for the largest architecture at three sizes:
    the smallest N, N at capacity and the largest N (seed 0)."""
    arch = t.capacity.sort(pl.col("kind") == "synthetic", "params", descending=True,
                           maintain_order=True).head(1)
    kind, name, n_cap = arch["kind"][0], arch["arch"][0], arch["n_at_max"][0]
    cell = t.runs.filter((pl.col("kind") == kind) & (pl.col("arch") == name))
    picks = sorted({cell["n"].min(), n_cap, cell["n"].max()})
    runs = cell.filter(pl.col("n").is_in(picks) & t.first_seed()).select("run_id", "n")
    scores = {n: t.primary_scores(run, ("member", "nll_bits"))
              for run, n in runs.select("run_id", "n").iter_rows()}
    lo = min(f["nll_bits"].min() for f in scores.values())
    hi = max(f["nll_bits"].max() for f in scores.values())
    edges = np.linspace(lo, hi if hi > lo else lo + 1, 41)  # 40 bins shared by the panels
    df = pl.concat([histogram(frame, n, edges) for n, frame in scores.items()])
    name = f"{kind} {name}"
    return alt.Chart(df).mark_bar(opacity=0.55, binSpacing=0).encode(
        x=alt.X("start:Q", title="nll(x | model), bits"), x2="end:Q",
        y=alt.Y("samples:Q", stack=None, title="samples"),
        color=alt.Color("sample:N", title=None),
    ).properties(width=220, height=180).facet(column=alt.Column("n:O", title="N")).properties(
        title=alt.TitleParams(f"Member and held-out code lengths, {name}",
                              subtitle="smallest N, N at capacity, largest N (seed 0)"))


def histogram(scores: pl.DataFrame, n: int, edges: np.ndarray) -> pl.DataFrame:
    """Counts of members' and held-out samples' code lengths between `edges` (n, sample,
    start, end, samples): the figure embeds counts, not samples."""
    frames = []
    for member, label in ((True, "member"), (False, "held out")):
        values = scores.filter(pl.col("member") == member)["nll_bits"].to_numpy()
        counts, _ = np.histogram(values, edges)
        frames.append(pl.DataFrame({"n": n, "sample": label, "start": edges[:-1],
                                    "end": edges[1:], "samples": counts.astype(np.int64)}))
    return pl.concat(frames)


def mia_law(t: Tables) -> alt.Chart:
    """Median-threshold F1 of the loss attack against tokens per parameter, with memcap's fitted
    law and the paper's (both evaluated on N in 64-token sequences; docs/science.md)."""
    runs = t.runs.join(t.mia.filter(pl.col("attack") == "loss").select("run_id", "f1_median"),
                       on="run_id")
    pts = runs.select("kind", _kind_arch(), "params", "n", "seq_len", "seed", "f1_median",
                      tokens_per_param=pl.col("n") * pl.col("seq_len") / pl.col("params"))
    # the laws take N/P with N in LAW_SEQ_LEN-token sequences; the axis shows N·S/P
    ratio = runs.select(sequences_per_param(pl.col("n"), pl.col("seq_len"), pl.col("params")))
    grid = np.geomspace(float(ratio.min().item()) / 2, float(ratio.max().item()) * 2, 200)
    tokens = grid * LAW_SEQ_LEN
    curves = [pl.DataFrame({"tokens_per_param": tokens, "f1": mia_f1(grid, **PAPER_MIA),
                            "law": "paper (c1 {c1}, c2 {c2}, c3 {c3})".format(**PAPER_MIA)})]
    fit = (t.laws.filter(pl.col("law") == "mia_f1")
           .select("kind", "precision", "parameter", "value"))
    for kind, precision in fit.select("kind", "precision").unique().sort("kind", "precision"
                                                                        ).iter_rows():
        c = dict(fit.filter((pl.col("precision") == precision) & (pl.col("kind") == kind))
                 .select("parameter", "value").iter_rows())
        curves.append(pl.DataFrame({
            "tokens_per_param": tokens, "f1": mia_f1(grid, **c),
            "law": f"memcap {kind} {precision} (c1 {c['c1']:.2f}, c2 {c['c2']:.1f}, "
                   f"c3 {c['c3']:.4f})"}))
    x = alt.X("tokens_per_param:Q", scale=alt.Scale(type="log"),
              title="training tokens per parameter (N·S / P)")
    lines = alt.Chart(pl.concat(curves)).mark_line().encode(
        x=x, y="f1:Q", strokeDash=alt.StrokeDash("law:N", title="law"))
    points = alt.Chart(pts).mark_point(filled=True, size=50).encode(
        x=x, y=alt.Y("f1_median:Q", title="F1 at the median threshold",
                     scale=alt.Scale(domain=[0.4, 1.05])),
        color=alt.Color("arch:N", sort=alt.SortField("params")),
        shape=alt.Shape("kind:N"),
        tooltip=["arch", "n", "seed", alt.Tooltip("f1_median:Q", format=".3f")])
    chance = alt.Chart(pl.DataFrame({"y": [0.5]})).mark_rule(color="grey").encode(y="y:Q")
    return alt.layer(chance, lines, points).properties(
        width=WIDTH, height=HEIGHT,
        title=alt.TitleParams("Membership inference fades as data outgrows the model",
                              subtitle="points: runs; lines: F1 = ½(1 + c1·σ(−c2·(N/P − c3))) "
                                       f"with N in {LAW_SEQ_LEN}-token sequences"))


def extraction_vs_n(t: Tables) -> alt.Chart:
    """Exact-match extraction rate against N for training and held-out samples."""
    df = (t.runs.join(t.extraction, on="run_id")
          .group_by(_kind_arch(),
                    (pl.col("params") + (pl.col("kind") == "text").cast(pl.Int64) * 1e12)
                    .alias("params"),
                    "n", "prefix_len", "split")
          .agg(pl.col("rate").mean())
          .sort("params", "arch", "n", "prefix_len", "split"))
    return alt.Chart(df).mark_line(point=True).encode(
        x=alt.X("n:Q", scale=alt.Scale(type="log", base=2), title="dataset size N"),
        y=alt.Y("rate:Q", title="exact-match extraction rate (mean over seeds)"),
        color=alt.Color("split:N", title="samples"),
        strokeDash=alt.StrokeDash("prefix_len:O", title="prefix tokens",
                                  legend=alt.Legend(symbolType="stroke", symbolSize=300)),
        tooltip=["arch", "n", "split", "prefix_len", alt.Tooltip("rate:Q", format=".3f")],
    ).properties(width=200, height=180).facet(
        column=alt.Column("arch:N", sort=alt.SortField("params"), title=None)).properties(
        title=alt.TitleParams("Greedy extraction from a prefix",
                              subtitle="training samples fall to the held-out rate as N grows"))


def double_descent(t: Tables) -> alt.Chart:
    """Held-out loss against the dataset-to-capacity ratio H_ref(D) / (α·P), one line per
    text architecture (mean over seeds), with the ratio-1 line and each peak marked
    (docs/science.md#dataset-to-capacity-ratio)."""
    df = (t.runs.filter(pl.col("kind") == "text")
          .join(t.memorization.select("run_id", "capacity_ratio", "alpha_source"), on="run_id")
          .group_by("arch", "params", "precision", "n")
          .agg(pl.col("heldout_loss").mean(), ratio=pl.col("capacity_ratio").mean(),
               alpha_source=pl.col("alpha_source").drop_nulls().first())
          .sort("params", "n", "arch", "precision"))
    if df.is_empty():
        return _empty("Double descent", "no text runs in this experiment")
    peaks = t.double_descent.select("arch", "params", "precision", "peak_ratio",
                                    "peak_heldout_loss", "peak_interior")
    x = alt.X("ratio:Q", scale=alt.Scale(type="log"),
              title="dataset-to-capacity ratio H_ref(D) / (α·P)")
    colour = alt.Color("arch:N", sort=alt.SortField("params"), title="architecture")
    lines = alt.Chart(df).mark_line(point=True).encode(
        x=x, y=alt.Y("heldout_loss:Q", scale=alt.Scale(zero=False),
                     title="held-out loss (nats/token, mean over seeds)"),
        color=colour, strokeDash=alt.StrokeDash("precision:N"),
        tooltip=["arch", "precision", "n", alt.Tooltip("ratio:Q", format=".3g"),
                 alt.Tooltip("heldout_loss:Q", format=".4f")])
    peak = alt.Chart(peaks).mark_point(shape="diamond", size=160, filled=True).encode(
        x="peak_ratio:Q", y="peak_heldout_loss:Q", color=colour,
        tooltip=["arch", alt.Tooltip("peak_ratio:Q", format=".3g"), "peak_interior"])
    one = alt.Chart(pl.DataFrame({"ratio": [1.0]})).mark_rule(
        strokeDash=[4, 4], color="grey").encode(x="ratio:Q")
    return alt.layer(one, lines, peak).properties(
        width=WIDTH, height=HEIGHT,
        title=alt.TitleParams("Double descent on text: held-out loss against data/capacity",
                              subtitle=f"α: {df['alpha_source'][0]}; diamonds: each "
                                       "architecture's held-out-loss peak; grey: ratio 1"))


def quantization(t: Tables) -> alt.Chart:
    """Capacity (bits per parameter) and the loss attack's AUC at the trained capacity's N
    against the bits each parameter is stored in: the trained fp32 weights (32) and every
    quantization scheme, one line per architecture (docs/science.md#quantization)."""
    q = t.quantization
    if q.filter(pl.col("scheme") != "none").is_empty():
        return _empty("Capacity against stored bits", "no quantization scheme in this "
                      "experiment (quantize.schemes)")
    q = q.with_columns(_kind_arch(), method=pl.when(pl.col("scheme").str.starts_with("gptq"))
                       .then(pl.lit("GPTQ")).otherwise(pl.lit("round to nearest"))
                       ).sort("arch", "stored_bits_per_param")
    x = alt.X("stored_bits_per_param:Q", title="stored bits per parameter",
              scale=alt.Scale(type="log", base=2))
    colour = alt.Color("arch:N", title="architecture")
    tips = ["arch", "scheme", alt.Tooltip("stored_bits_per_param:Q", format=".2f"),
            alt.Tooltip("capacity_bits:Q", format=",.0f"),
            alt.Tooltip("bits_per_param:Q", format=".3f"),
            alt.Tooltip("capacity_kept:Q", format=".1%"),
            alt.Tooltip("mia_auc_at_trained_n:Q", format=".3f")]

    shape = alt.Shape("method:N", title="scheme",
                      scale=alt.Scale(domain=["round to nearest", "GPTQ"],
                                      range=["circle", "diamond"]))

    def panel(y: alt.Y, title: str, subtitle: str) -> alt.Chart:
        base = alt.Chart(q).encode(x=x, y=y, color=colour, tooltip=tips)
        # lines through the trained weights and the round-to-nearest schemes; GPTQ beside
        line = base.transform_filter(alt.datum.method == "round to nearest").mark_line()
        return alt.layer(line, base.mark_point(filled=True, size=60).encode(shape=shape),
                         base.mark_text(dy=-9, fontSize=9).encode(text="scheme:N")).properties(
            width=WIDTH * 0.8, height=HEIGHT, title=alt.TitleParams(title, subtitle=subtitle))

    return alt.hconcat(
        panel(alt.Y("bits_per_param:Q", title="capacity (bits per parameter)"),
              "Capacity against the bits it is stored in",
              "max over N of memorized bits (mean over seeds) / P; none: the trained weights"),
        panel(alt.Y("mia_auc_at_trained_n:Q", title="loss attack AUC",
                    scale=alt.Scale(zero=False)),
              "Membership inference against stored bits",
              "the loss attack at the N of the trained capacity (mean over seeds)"))


CHARTS = {
    "memorization_vs_n": memorization_vs_n,
    "capacity_vs_params": capacity_vs_params,
    "bits_per_param": bits_per_param,
    "mia_roc": roc_curves,
    "mia_attacks": attack_rocs,
    "mia_histograms": score_histograms,
    "mia_law": mia_law,
    "extraction_vs_n": extraction_vs_n,
    "double_descent": double_descent,
    "quantization": quantization,
}
assert tuple(CHARTS) == FIGURES, "CHARTS must draw memcap.paths.FIGURES, in that order"


def write_figures(tables_dir: Path, score_files: list[Path], set_files: list[Path],
                  out_dir: Path) -> list[Path]:
    """Write every figure as <name>.html (self-contained) and <name>.png into out_dir, each
    through a temporary file renamed into place. Reads tables_dir/<name>.parquet and, lazily,
    only the rows of score_files (scores.parquet) and set_files (mia_sets.parquet) that a
    figure draws."""
    tables = Tables.read(tables_dir, score_files, set_files)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, make in CHARTS.items():
        chart = make(tables)
        for ext in ("html", "png"):
            path = out_dir / f"{name}.{ext}"
            tmp = out_dir / f".tmp-{name}.{ext}"
            if ext == "html":
                chart.save(str(tmp), format="html", inline=True)
            else:
                chart.save(str(tmp), format="png", scale_factor=2)
            tmp.replace(path)
            written.append(path)
    return written
