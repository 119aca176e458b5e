"""Figures from the database: Altair charts saved as standalone HTML (inline JS) and PNG."""

from __future__ import annotations

from pathlib import Path

import altair as alt
import duckdb
import numpy as np
import polars as pl

from memcap.evaluate import balanced_sets, roc_curve
from memcap.laws import LAW_SEQ_LEN, PAPER_MIA, mia_f1
from memcap.paper import PAPER_ALPHA_BF16

WIDTH, HEIGHT = 520, 340


def _query(con: duckdb.DuckDBPyConnection, sql: str) -> pl.DataFrame:
    return con.sql(sql).pl()


def _empty(title: str, why: str) -> alt.Chart:
    """A placeholder panel for a figure whose data the experiment does not produce."""
    return alt.Chart(pl.DataFrame({"why": [why]})).mark_text(size=14).encode(
        text="why:N").properties(width=WIDTH, height=80, title=title)


def memorization_vs_n(con: duckdb.DuckDBPyConnection) -> alt.Chart:
    """Unintended memorization against N, one line per architecture (mean over seeds,
    min–max band), one panel per data kind (synthetic beside text). Dashed: the data's
    size under the reference, N·(S−1)·log2 V for synthetic data, Σ nll(x | same-arch
    reference) for text."""
    df = _query(con, """
        SELECT r.kind, r.arch, r.params, r.precision, r.n,
               avg(m.mem_bits) AS mem_bits, min(m.mem_bits) AS mem_min,
               max(m.mem_bits) AS mem_max, avg(m.dataset_bits) AS memorizable_bits
        FROM runs r JOIN memorization m USING (run_id)
        GROUP BY ALL HAVING avg(m.mem_bits) > 0 ORDER BY r.params, r.n""")
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


def capacity_vs_params(con: duckdb.DuckDBPyConnection) -> alt.Chart:
    """Capacity against parameter count, one colour per precision, with the fitted α line,
    its CI band and the paper's α (bf16) for reference. Open marks are lower bounds."""
    cap = _query(con, "SELECT * FROM capacity WHERE kind = 'synthetic'")
    if cap.is_empty():
        return _empty("Capacity against parameters", "no synthetic runs in this experiment")
    cap = cap.with_columns(status=pl.when(pl.col("saturated")).then(pl.lit("saturated"))
                           .otherwise(pl.lit("lower bound")))
    laws = _query(con, """SELECT kind, precision, value AS alpha, ci_low, ci_high FROM laws
                          WHERE law = 'capacity' AND parameter = 'alpha'""")
    pmax = float(cap["params"].max()) * 1.05
    fit = pl.concat([
        laws.with_columns(params=pl.lit(0.0)),
        laws.with_columns(params=pl.lit(pmax)),
    ]).with_columns(fit=pl.col("alpha") * pl.col("params"), lo=pl.col("ci_low") * pl.col("params"),
                    hi=pl.col("ci_high") * pl.col("params"),
                    label=pl.format("α = {} bits/param", pl.col("alpha").round(3)))
    paper = pl.DataFrame({"params": [0.0, pmax]}).with_columns(
        paper=pl.col("params") * PAPER_ALPHA_BF16)
    x = alt.X("params:Q", title="parameters P")
    colour = alt.Color("precision:N")
    points = alt.Chart(cap).mark_point(size=90, filled=True).encode(
        x=x, y=alt.Y("capacity_bits:Q", title="capacity (bits)"), color=colour,
        shape=alt.Shape("status:N", title="capacity",
                        scale=alt.Scale(domain=["saturated", "lower bound"],
                                        range=["circle", "triangle-down"])),
        tooltip=["arch", "params", alt.Tooltip("capacity_bits:Q", format=",.0f"),
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


def bits_per_param(con: duckdb.DuckDBPyConnection) -> alt.Chart:
    """Bits per parameter per architecture at its capacity (mean over seeds, seed min–max)."""
    df = _query(con, """
        SELECT c.arch, c.precision, c.params, c.bits_per_param, c.saturated,
               min(m.mem_bits / r.params) AS bpp_min, max(m.mem_bits / r.params) AS bpp_max
        FROM capacity c
        JOIN runs r ON r.kind = c.kind AND r.arch = c.arch AND r.precision = c.precision
                   AND r.n = c.n_at_max
        JOIN memorization m USING (run_id)
        WHERE c.kind = 'synthetic'
        GROUP BY ALL ORDER BY c.params""")
    if df.is_empty():
        return _empty("Bits per parameter at capacity", "no synthetic runs in this experiment")
    df = df.with_columns(status=pl.when(pl.col("saturated")).then(pl.lit("saturated"))
                         .otherwise(pl.lit("lower bound")))
    order = df.sort("params")["arch"].unique(maintain_order=True).to_list()
    x = alt.X("arch:N", sort=order, title="architecture (by parameter count)")
    xo = alt.XOffset("precision:N")
    bars = alt.Chart(df).mark_bar().encode(
        x=x, xOffset=xo, y=alt.Y("bits_per_param:Q", title="bits per parameter"),
        color="precision:N",
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


def _roc_points(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """ROC curves of the loss attack for seed 0 of every cell, on the attack's balanced sets."""
    runs = _query(con, """SELECT r.run_id, r.kind || ' ' || r.arch AS arch,
                                 r.kind = 'text' AS text, r.params, r.n, r.precision,
                                 m.n_members
                          FROM runs r JOIN mia m USING (run_id)
                          WHERE m.attack = 'loss' AND r.seed = (SELECT min(seed) FROM runs)""")
    ids = ", ".join(f"'{r}'" for r in runs["run_id"])
    all_scores = _query(con, f"""SELECT run_id, sample_id, member, nll_bits FROM samples
                                 WHERE run_id IN ({ids}) AND primary_reference"""
                        ).partition_by("run_id", as_dict=True)
    frames = []
    for run in runs.iter_rows(named=True):
        scores = all_scores[(run["run_id"],)]
        members, others = balanced_sets(scores, run["n_members"])
        fpr, tpr = roc_curve(-members["nll_bits"].to_numpy(), -others["nll_bits"].to_numpy())
        frames.append(pl.DataFrame({"fpr": fpr, "tpr": tpr}).with_columns(
            arch=pl.lit(run["arch"]), params=pl.lit(run["params"] + run["text"] * 10**12),
            n=pl.lit(run["n"]),
            precision=pl.lit(run["precision"])))
    return pl.concat(frames, how="vertical_relaxed")


def roc_curves(con: duckdb.DuckDBPyConnection) -> alt.Chart:
    """ROC of the loss attack on linear and log-log axes, one line per N, one panel per
    architecture (seed 0). The diagonal is chance."""
    df = _roc_points(con)
    colour = alt.Color("n:O", scale=alt.Scale(scheme="viridis"), title="N")
    charts = []
    for log in (False, True):
        data = df.filter(pl.col("fpr") > 0) if log else df
        scale = alt.Scale(type="log", domain=[1e-3, 1]) if log else alt.Scale(domain=[0, 1])
        line = alt.Chart(data).mark_line(interpolate="step-after" if not log else "linear",
                                         clip=True).encode(
            x=alt.X("fpr:Q", scale=scale, title="false positive rate"),
            y=alt.Y("tpr:Q", scale=scale, title="true positive rate"),
            color=colour, detail="n:O")
        diag = alt.Chart(pl.DataFrame({"fpr": [1e-3, 1.0], "tpr": [1e-3, 1.0]})).mark_line(
            strokeDash=[4, 4], color="grey", clip=True).encode(x="fpr:Q", y="tpr:Q")
        charts.append(alt.layer(diag, line).properties(width=180, height=180).facet(
            column=alt.Column("arch:N", sort=alt.SortField("params"), title=None),
            data=data).properties(title="log-log axes" if log else "linear axes"))
    return alt.vconcat(*charts).properties(
        title=alt.TitleParams("Membership inference (loss attack): ROC by dataset size",
                              subtitle="members vs as many held-out samples; seed 0"))


def score_histograms(con: duckdb.DuckDBPyConnection) -> alt.Chart:
    """Code length of members and non-members for the largest architecture at three sizes:
    the smallest N, N at capacity and the largest N (seed 0)."""
    arch = _query(con, """SELECT kind, arch, n_at_max FROM capacity
                          ORDER BY kind = 'synthetic' DESC, params DESC LIMIT 1""")
    kind, name, n_cap = arch["kind"][0], arch["arch"][0], arch["n_at_max"][0]
    ns = _query(con, f"""SELECT DISTINCT n FROM runs WHERE kind = '{kind}' AND arch = '{name}'
                         ORDER BY n""")["n"]
    picks = sorted({ns.min(), n_cap, ns.max()})
    df = _query(con, f"""SELECT r.n, s.member, s.nll_bits FROM samples s JOIN runs r USING
                         (run_id) WHERE r.kind = '{kind}' AND r.arch = '{name}'
                         AND r.n IN ({", ".join(map(str, picks))}) AND s.primary_reference
                         AND r.seed = (SELECT min(seed) FROM runs)""")
    name = f"{kind} {name}"
    df = df.with_columns(sample=pl.when(pl.col("member")).then(pl.lit("member"))
                         .otherwise(pl.lit("held out")))
    return alt.Chart(df).mark_bar(opacity=0.55, binSpacing=0).encode(
        x=alt.X("nll_bits:Q", bin=alt.Bin(maxbins=40), title="nll(x | model), bits"),
        y=alt.Y("count():Q", stack=None, title="samples"),
        color=alt.Color("sample:N", title=None),
    ).properties(width=220, height=180).facet(column=alt.Column("n:O", title="N")).properties(
        title=alt.TitleParams(f"Member and held-out code lengths, {name}",
                              subtitle="smallest N, N at capacity, largest N (seed 0)"))


def mia_law(con: duckdb.DuckDBPyConnection) -> alt.Chart:
    """Median-threshold F1 of the loss attack against tokens per parameter, with memcap's fitted
    law and the paper's (both evaluated on N in 64-token sequences)."""
    pts = _query(con, """SELECT r.kind, r.kind || ' ' || r.arch AS arch, r.params, r.n,
                                r.seq_len, r.seed, m.f1_median,
                                r.n * r.seq_len / r.params AS tokens_per_param
                         FROM runs r JOIN mia m USING (run_id) WHERE m.attack = 'loss'""")
    lo, hi = float(pts["tokens_per_param"].min()) / 2, float(pts["tokens_per_param"].max()) * 2
    grid = np.geomspace(lo, hi, 200)
    curves = [pl.DataFrame({"tokens_per_param": grid, "f1": mia_f1(grid / LAW_SEQ_LEN,
                                                                    **PAPER_MIA),
                            "law": "paper (c1 1.34, c2 33.14, c3 0.034)"})]
    fit = _query(con, """SELECT kind, precision, parameter, value FROM laws
                         WHERE law = 'mia_f1'""")
    for kind, precision in fit.select("kind", "precision").unique().sort("kind", "precision"
                                                                        ).iter_rows():
        c = dict(fit.filter((pl.col("precision") == precision) & (pl.col("kind") == kind))
                 .select("parameter", "value").iter_rows())
        curves.append(pl.DataFrame({
            "tokens_per_param": grid, "f1": mia_f1(grid / LAW_SEQ_LEN, **c),
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
                                       "with N in 64-token sequences"))


def extraction_vs_n(con: duckdb.DuckDBPyConnection) -> alt.Chart:
    """Exact-match extraction rate against N for training and held-out samples."""
    df = _query(con, """SELECT r.kind || ' ' || r.arch AS arch,
                               r.params + (r.kind = 'text')::INT * 1e12 AS params, r.n,
                               e.prefix_len, e.split, avg(e.rate) AS rate
                        FROM runs r JOIN extraction e USING (run_id) GROUP BY ALL""")
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


def double_descent(con: duckdb.DuckDBPyConnection) -> alt.Chart:
    """Held-out loss against the dataset-to-capacity ratio H_ref(D) / (α·P), one line per
    text architecture (mean over seeds), with the ratio-1 line and each peak marked."""
    df = _query(con, """
        SELECT r.arch, r.params, r.precision, r.n, avg(r.heldout_loss) AS heldout_loss,
               avg(m.capacity_ratio) AS ratio, any_value(m.alpha_source) AS alpha_source
        FROM runs r JOIN memorization m USING (run_id)
        WHERE r.kind = 'text' GROUP BY ALL ORDER BY r.params, r.n""")
    if df.is_empty():
        return _empty("Double descent", "no text runs in this experiment")
    peaks = _query(con, "SELECT arch, params, precision, peak_ratio, peak_heldout_loss, "
                        "peak_interior FROM double_descent")
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


FIGURES = {
    "memorization_vs_n": memorization_vs_n,
    "capacity_vs_params": capacity_vs_params,
    "bits_per_param": bits_per_param,
    "mia_roc": roc_curves,
    "mia_histograms": score_histograms,
    "mia_law": mia_law,
    "extraction_vs_n": extraction_vs_n,
    "double_descent": double_descent,
}


def write_figures(db_path: str | Path, out_dir: str | Path) -> list[Path]:
    """Write every figure as <name>.html (self-contained) and <name>.png into out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        for name, make in FIGURES.items():
            chart = make(con)
            for ext in ("html", "png"):
                path = out_dir / f"{name}.{ext}"
                tmp = out_dir / f".tmp-{name}.{ext}"
                if ext == "html":
                    chart.save(str(tmp), format="html", inline=True)
                else:
                    chart.save(str(tmp), format="png", scale_factor=2)
                tmp.replace(path)
                written.append(path)
    finally:
        con.close()
    return written
