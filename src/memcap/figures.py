"""Figures from the database: Altair charts saved as standalone HTML (inline JS) and PNG."""

from __future__ import annotations

from pathlib import Path

import altair as alt
import duckdb
import polars as pl

from memcap.paper import PAPER_ALPHA_BF16

WIDTH, HEIGHT = 520, 340


def _query(con: duckdb.DuckDBPyConnection, sql: str) -> pl.DataFrame:
    return con.sql(sql).pl()


def memorization_vs_n(con: duckdb.DuckDBPyConnection) -> alt.Chart:
    """Memorized bits against N, one line per architecture (mean over seeds, min–max band),
    and the data's memorizable bits N·(S−1)·log2 V as the dashed reference."""
    df = _query(con, """
        SELECT r.kind, r.arch, r.params, r.precision, r.n,
               avg(m.mem_bits) AS mem_bits, min(m.mem_bits) AS mem_min,
               max(m.mem_bits) AS mem_max, avg(m.dataset_bits) AS memorizable_bits
        FROM runs r JOIN memorization m USING (run_id)
        GROUP BY ALL ORDER BY r.params, r.n""")
    df = df.with_columns(architecture=pl.format("{} ({} params)", "arch", "params"))
    x = alt.X("n:Q", scale=alt.Scale(type="log", base=2), title="dataset size N (sequences)")
    y_scale = alt.Scale(type="log")
    colour = alt.Color("architecture:N", sort=alt.SortField("params"), title="architecture")
    band = alt.Chart(df).mark_area(opacity=0.18).encode(
        x=x, y=alt.Y("mem_min:Q", scale=y_scale), y2="mem_max:Q",
        color=alt.Color("architecture:N", sort=alt.SortField("params"), legend=None))
    lines = alt.Chart(df).mark_line(point=True).encode(
        x=x, y=alt.Y("mem_bits:Q", scale=y_scale, title="memorized bits (mean over seeds)"),
        color=colour,
        tooltip=["arch", "params", "n", alt.Tooltip("mem_bits:Q", format=",.0f"),
                 alt.Tooltip("mem_min:Q", format=",.0f"), alt.Tooltip("mem_max:Q", format=",.0f")])
    ref = (alt.Chart(df.select("n", "memorizable_bits").unique())
           .mark_line(strokeDash=[6, 4], color="black")
           .encode(x=x, y="memorizable_bits:Q",
                   tooltip=[alt.Tooltip("memorizable_bits:Q", format=",.0f")]))
    chart = alt.layer(band, lines, ref).properties(
        width=WIDTH, height=HEIGHT,
        title=alt.TitleParams("Memorization plateaus at capacity",
                              subtitle="dashed: memorizable bits N·(S−1)·log2 V; band: seed "
                                       "min–max"))
    return chart.facet(column="precision:N") if df["precision"].n_unique() > 1 else chart


def capacity_vs_params(con: duckdb.DuckDBPyConnection) -> alt.Chart:
    """Capacity against parameter count, one colour per precision, with the fitted α line,
    its CI band and the paper's α (bf16) for reference. Open marks are lower bounds."""
    cap = _query(con, "SELECT * FROM capacity")
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
        GROUP BY ALL ORDER BY c.params""")
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


FIGURES = {
    "memorization_vs_n": memorization_vs_n,
    "capacity_vs_params": capacity_vs_params,
    "bits_per_param": bits_per_param,
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
