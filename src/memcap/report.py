"""results/report.html: the key numbers beside the paper's, and the figures (self-contained)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import duckdb
import polars as pl

from memcap.io import atomic_path
from memcap.paper import PAPER_ALPHA_BF16, PAPER_BPP_RANGE, PAPER_CAPACITY_BITS, PAPER_MEAN_BPP

CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0 1.4em}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right}th{background:#f3f3f3}td.l,th.l{text-align:left}.lb{color:#b35900;font-weight:600}
.ok{color:#11772d;font-weight:600}img{max-width:100%;border:1px solid #eee}.note{color:#555}
"""


def _fmt(v: object) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3f}"
    if isinstance(v, int):
        return f"{v:,}"
    return html.escape(str(v))


def _table(df: pl.DataFrame, left: tuple[str, ...] = ()) -> str:
    head = "".join(f"<th class='{'l' if c in left else ''}'>{html.escape(c)}</th>"
                   for c in df.columns)
    body = []
    for row in df.iter_rows(named=True):
        cells = []
        for c, v in row.items():
            cls = "l" if c in left else ""
            text = _fmt(v)
            if c == "status":
                cls += " ok" if v == "saturated" else " lb"
            if c == "status" and v != "saturated":
                text = f"<b>{text}</b>"
            cells.append(f"<td class='{cls}'>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _status(cap: pl.DataFrame) -> pl.Expr:
    return (pl.when(pl.col("saturated")).then(pl.lit("saturated"))
            .when(~pl.col("training_saturated")).then(pl.lit("lower bound: training not saturated"))
            .when(pl.col("n_at_max") == pl.col("n_max"))
            .then(pl.lit("lower bound: maximum at the largest N"))
            .otherwise(pl.lit("lower bound: data-limited at the maximum")))


def write_report(db_path: str | Path, figures_dir: str | Path, out: str | Path) -> None:
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        runs = con.sql("SELECT * FROM runs").pl()
        cap = con.sql("SELECT * FROM capacity ORDER BY kind, precision, params").pl()
        laws = con.sql("SELECT * FROM laws ORDER BY kind, precision, parameter").pl()
        sat = con.sql("""SELECT arch, precision, count(*) AS runs,
                                    sum(saturated::INT) AS saturated_runs
                             FROM runs GROUP BY ALL ORDER BY min(params), precision""").pl()
    finally:
        con.close()

    vocab, seq = runs["vocab_size"][0], runs["seq_len"][0]
    devices = ", ".join(sorted(set(runs["device"])))
    cell_seconds = (runs.group_by("kind", "arch", "precision", "n")
                    .agg(pl.col("train_seconds").first())["train_seconds"].sum())
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>memcap report</title>"
             f"<style>{CSS}</style></head><body><h1>memcap: how many bits does a model memorize?"
             f"</h1><p>{runs.height} trained models: {runs['arch'].n_unique()} architectures × "
             f"{runs['n'].n_unique()} dataset sizes × {runs['seed'].n_unique()} seeds × "
             f"{runs['precision'].n_unique()} precision(s); uniform random tokens, V = {vocab}, "
             f"S = {seq}; trained on {devices} in {cell_seconds:,.0f} s of training jobs "
             f"(each job trains all seeds of its cell together).</p>"]

    # α with CI, beside the paper
    rows = []
    for r in laws.filter(pl.col("law") == "capacity").iter_rows(named=True):
        paper = (PAPER_ALPHA_BF16 if r["precision"] == "bf16" else None) \
            if r["parameter"] == "alpha" else PAPER_MEAN_BPP.get(r["precision"])
        rows.append({"kind": r["kind"], "precision": r["precision"], "quantity": r["parameter"],
                     "memcap": r["value"], "CI low": r["ci_low"], "CI high": r["ci_high"],
                     "seeds": r["n_seeds"], "architectures": r["n_archs"],
                     "status": f"lower bound: {r['lower_bound_reason']}" if r["lower_bound"]
                     else "saturated",
                     "paper": paper})
    parts.append("<h2>Bits per parameter</h2><p>α is the least-squares slope of capacity "
                 "against parameters through the origin; the CI is a percentile bootstrap over "
                 "seeds. <b>A lower bound</b> means at least one capacity behind it is not a "
                 "saturated plateau (SCIENCE.md §4: short CPU runs bound α from below; do not "
                 "read them as the paper's number).</p>")
    parts.append(_table(pl.DataFrame(rows), left=("kind", "precision", "quantity", "status")))
    tokens = runs["tokens_per_model"].max()
    parts.append(f"<p class='note'>Training budget: at most {tokens:,} tokens per model "
                 f"(the paper: 10^6 steps × 2048 × 64 = 1.3e11).</p>")
    parts.append(f"<p class='note'>Paper (V 2048, S 64, 10^6 steps × 2048 sequences): α = "
                 f"{PAPER_ALPHA_BF16} (bf16); mean per-config ratio {PAPER_MEAN_BPP['bf16']} "
                 f"(bf16) / {PAPER_MEAN_BPP['fp32']} (fp32); range {PAPER_BPP_RANGE[0]}–"
                 f"{PAPER_BPP_RANGE[1]}.</p>")

    # capacity per architecture
    capv = cap.with_columns(status=_status(cap)).with_columns(
        paper_bits=pl.col("arch").map_elements(
            lambda a: PAPER_CAPACITY_BITS.get(a, (None, None))[0]
            if (vocab, seq) == (2048, 64) else None, return_dtype=pl.Float64))
    parts.append("<h2>Capacity per architecture</h2><p>capacity = max over N of the mean over "
                 "seeds of the memorized bits; <i>saturated</i> needs every run at that N to "
                 "pass the training saturation rule (&lt; 1 % growth over the last 10 % of "
                 "steps) and a plateau: a larger N in the grid and less than 95 % of the "
                 "memorizable bits memorized at the maximum. Any capacity remains a lower "
                 "bound on what the architecture can store: the optimizer may not reach the "
                 "optimum.</p>")
    parts.append(_table(capv.select(
        "kind", "precision", "arch", "params", "capacity_bits", "capacity_seed_std",
        "bits_per_param", "n_at_max", "n_max", "memorized_fraction_at_max", "status",
        "paper_bits"), left=("kind", "precision", "arch", "status")))

    parts.append("<h2>Saturated runs</h2><p>Runs passing the saturation rule, per cell row "
                 "(all dataset sizes and seeds).</p>")
    parts.append(_table(sat, left=("arch", "precision")))
    unsat = runs.filter(~pl.col("saturated")).sort("params", "n", "seed")
    if unsat.height:
        parts.append("<p>Runs that did not saturate (their memorization is a lower bound):</p>")
        parts.append(_table(unsat.select("run_id", "n", "steps", "mem_growth_last_window"),
                            left=("run_id",)))
    else:
        parts.append("<p>Every run passed the saturation rule.</p>")

    parts.append("<h2>Figures</h2>")
    fdir = Path(figures_dir)
    for name, caption in (("memorization_vs_n", "Memorized bits against dataset size"),
                          ("capacity_vs_params", "Capacity against parameters"),
                          ("bits_per_param", "Bits per parameter per architecture")):
        png = fdir / f"{name}.png"
        data = base64.b64encode(png.read_bytes()).decode()
        parts.append(f"<h3>{caption}</h3><p><a href='figures/{name}.html'>interactive "
                     f"version</a></p><img alt='{caption}' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    with atomic_path(out) as tmp:
        tmp.write_text("\n".join(parts))
