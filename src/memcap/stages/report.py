"""The report stage: results/report.html, the key numbers beside the paper's, and the figures
(self-contained). `query` reads the database, `render` writes the HTML."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

from memcap.io import atomic_path
from memcap.paper import (
    PAPER_ALPHA_BF16,
    PAPER_BPP_RANGE,
    PAPER_CAPACITY_BITS,
    PAPER_MEAN_BPP,
    PAPER_MIA,
    PAPER_MIA_VALIDATION,
    PRECISION_INDEX,
)
from memcap.quantities import LAW_SEQ_LEN, MIN_CI_SEEDS, mia_f1, sequences_per_param, verify_verdict

CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0 1.4em}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right}th{background:#f3f3f3}td.l,th.l{text-align:left}.lb{color:#b35900;font-weight:600}
.ok{color:#11772d;font-weight:600}img{max-width:100%;border:1px solid #eee}.note{color:#555}
.wide{max-width:100%;overflow-x:auto}td.l{white-space:normal;min-width:8em}
"""


def _quantization_sections(q: pl.DataFrame, fdir: Path) -> list[str]:
    """Capacity against the bits the weights are stored in (docs/science.md#quantization)."""
    parts = ["<h2>Quantization: capacity against stored bits</h2>"]
    if q.filter(pl.col("scheme") != "none").is_empty():
        return [*parts, "<p>No quantization scheme in this experiment (quantize.schemes).</p>"]
    parts.append(
        "<p>Every trained run's weights quantized after training (round to nearest: int{b} "
        "with one fp16 scale and b-bit zero point per output channel, int{b}-g{G} per group "
        "of G inputs; bf16: every value rounded), then scored and evaluated against the same "
        "references. Stored bits count the integers, scales, zero points and the fp32 "
        "vectors left as they were; <i>none</i> is the trained weights, 32 bits each. "
        "capacity_kept: the scheme's capacity over the trained one; kept_at_trained_n: the "
        "same at the trained capacity's N; bits_per_stored_bit: capacity over the stored "
        "bits. Text rows measure memorization against a learned reference, not a "
        "capacity.</p>")
    parts.append(_table(q.select(
        "kind", "precision", "arch", "scheme", "stored_bits_per_param", "capacity_bits",
        "bits_per_param", "bits_per_stored_bit", "capacity_kept", "n_at_max",
        "kept_at_trained_n", "mia_auc_at_trained_n"), left=("kind", "precision", "arch",
                                                            "scheme")))
    caption = "Capacity and membership inference against stored bits per parameter"
    parts.append(f"<h3>{caption}</h3>{_figure(fdir, 'quantization', caption)}")
    return parts


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
    return f"<div class='wide'><table><tr>{head}</tr>{''.join(body)}</table></div>"


def _status() -> pl.Expr:
    """A capacity row's status: saturated, or a lower bound and why (the grid does not bracket
    the maximum: docs/science.md#bracketing; or the runs at it were data-limited)."""
    return (pl.when(pl.col("saturated")).then(pl.lit("saturated"))
            .when(~pl.col("bracketed")).then(pl.format("lower bound: {}", "bracket_status"))
            .otherwise(pl.lit("lower bound: data-limited at the maximum")))


def write_report(db_path: str | Path, figures_dir: str | Path, out: str | Path) -> str:
    """The report: query the database, then render it with the figures."""
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        data = query(con)
    finally:
        con.close()
    with atomic_path(out) as tmp:
        tmp.write_text(render(data, Path(figures_dir)))
    return f"wrote {out}"


def query(con: duckdb.DuckDBPyConnection) -> dict:
    """Every number the report shows, as frames: the training grid's from the `grid_runs`
    view (the database's runs of the grid, audited models apart), the audit's from
    `audits`."""
    tables = {t for (t,) in con.sql("SELECT table_name FROM information_schema.tables")
              .fetchall()}
    audit = _audit_tables(con, tables) if "audits" in tables else None
    if "capacity" not in tables:  # an audit alone: no training grid
        return {"audit": audit}
    data = {
        "audit": audit,
        "runs": con.sql("SELECT * FROM grid_runs").pl(),
        "cap": con.sql("""SELECT * FROM capacity WHERE kind = 'synthetic'
                          ORDER BY precision, params""").pl(),
        "laws": con.sql("SELECT * FROM laws ORDER BY kind, family, precision, parameter").pl(),
        "plateau": con.sql("""SELECT r.arch, r.precision, r.n, count(*) AS seeds,
                                     avg(m.mem_bits) AS measured_bits,
                                     avg(r.mem_bits_plateau) AS estimate_bits,
                                     avg(r.mem_bits_plateau_ci_low) AS estimate_ci_low,
                                     avg(r.mem_bits_plateau_ci_high) AS estimate_ci_high,
                                     avg(r.mem_bits_plateau) / avg(m.mem_bits) - 1
                                         AS "estimate / measured − 1",
                                     string_agg(DISTINCT r.plateau_fit, '; ') AS fit
                              FROM grid_runs r JOIN memorization m USING (run_id)
                              WHERE r.kind = 'synthetic'
                              GROUP BY ALL ORDER BY min(r.params), r.precision, r.n""").pl(),
        "sat": con.sql("""SELECT kind, arch, precision, count(*) AS runs,
                                 sum(saturated::INT) AS saturated_runs
                          FROM grid_runs
                          GROUP BY ALL ORDER BY kind, min(params), precision""").pl(),
        "mia": con.sql("""SELECT r.kind, r.arch, r.precision, r.n, m.attack,
                                 round(r.n * r.seq_len / r.params, 4) AS tokens_per_param,
                                 avg(m.auc) AS auc, avg(m.f1_median) AS f1_median,
                                 avg(m.f1_best) AS "f1_best (optimistic)",
                                 avg(m.tpr_at_1pct_fpr) AS tpr_at_1pct_fpr,
                                 avg(m.tpr_at_0_1pct_fpr) AS tpr_at_0_1pct_fpr,
                                 min(m.n_members) AS members
                          FROM grid_runs r JOIN mia m USING (run_id)
                          GROUP BY ALL ORDER BY r.kind, min(r.params), r.precision, r.n,
                          m.attack""").pl(),
        "attack_gap": con.sql("""SELECT r.kind, b.attack, max(abs(a.auc - b.auc)) AS gap,
                                        avg(b.auc - a.auc) AS mean_gain
                                 FROM mia a JOIN mia b USING (run_id)
                                 JOIN grid_runs r USING (run_id)
                                 WHERE a.attack = 'loss' AND b.attack <> 'loss'
                                 GROUP BY ALL ORDER BY r.kind, b.attack""").pl(),
        "verify": (con.sql("SELECT * FROM verify ORDER BY target_f1").pl()
                   if "verify" in {t for (t,) in con.sql("SHOW TABLES").fetchall()} else None),
        "extraction": con.sql("""SELECT r.kind, r.arch, r.n,
                                        e.split || ' k=' || e.prefix_len AS col,
                                        avg(e.rate) AS rate
                                 FROM grid_runs r JOIN extraction e USING (run_id)
                                 GROUP BY ALL ORDER BY r.kind, min(r.params), r.n""").pl(),
        "tfidf": con.sql("""SELECT r.kind, r.arch,
                                   avg(m.tfidf_mem_spearman) AS spearman_tfidf_mem,
                                   min(m.tfidf_mem_spearman) AS min,
                                   max(m.tfidf_mem_spearman) AS max
                            FROM grid_runs r JOIN memorization m USING (run_id)
                            GROUP BY ALL ORDER BY r.kind, min(r.params)""").pl(),
        "tops": {},
        "quantization": con.sql("""SELECT * FROM quantization
                                   ORDER BY kind, precision, params,
                                   stored_bits_per_param DESC""").pl(),
    }
    # per kind: the largest architecture at its capacity (most memorized N), first seed
    for kind, run in con.sql("""SELECT c.kind, arg_min(r.run_id, r.seed) FROM capacity c
                                JOIN grid_runs r ON r.arch = c.arch AND r.precision = c.precision
                                AND r.kind = c.kind AND r.n = c.n_at_max
                                GROUP BY c.kind, c.params, c.arch
                                QUALIFY row_number() OVER (PARTITION BY c.kind
                                ORDER BY c.params DESC) = 1""").fetchall():
        data["tops"][kind] = (run, con.sql("""SELECT rank, sample_id, mem_bits, nll_bits,
                                              ref_nll_bits, tfidf, tokens, text
                                              FROM top_samples WHERE run_id = ?
                                              ORDER BY rank""", params=[run]).pl())
    data["text"] = _text_tables(con) if (data["runs"]["kind"] == "text").any() else None
    return data


def render(data: dict, fdir: Path) -> str:
    """The report's HTML (figures inlined as PNG) from the frames of `query`."""
    if "runs" not in data:
        return "\n".join([_audit_head(), *_audit_sections(data["audit"]), "</body></html>"])
    runs, laws = data["runs"], data["laws"]
    parts = [_head(runs)]
    parts += _capacity_sections(runs, data["cap"], laws, data["sat"])
    parts += _plateau_sections(data["cap"], data["plateau"])
    if data["text"] is not None:
        parts += _text_sections(data["text"], fdir)
    parts += _mia_sections(data["mia"], data["attack_gap"], laws, data["extraction"],
                           data["tfidf"], data["tops"], data["verify"])
    parts += _quantization_sections(data["quantization"], fdir)
    if data["audit"] is not None:
        parts += _audit_sections(data["audit"])
    parts.append("<h2>Figures</h2>")
    for name, caption in (("memorization_vs_n", "Memorized bits against dataset size"),
                          ("capacity_vs_params", "Capacity against parameters"),
                          ("bits_per_param", "Bits per parameter per architecture"),
                          ("mia_law", "Membership inference F1 against tokens per parameter"),
                          ("mia_roc", "ROC of the loss attack"),
                          ("mia_attacks", "ROC of every attack on one run per kind"),
                          ("mia_histograms", "Member and held-out code lengths"),
                          ("extraction_vs_n", "Extraction rate against dataset size")):
        parts.append(f"<h3>{caption}</h3>{_figure(fdir, name, caption)}")
    parts.append("</body></html>")
    return "\n".join(parts)


def _figure(fdir: Path, name: str, caption: str) -> str:
    data = base64.b64encode((fdir / f"{name}.png").read_bytes()).decode()
    return (f"<p><a href='figures/{name}.html'>interactive version</a></p>"
            f"<img alt='{caption}' src='data:image/png;base64,{data}'>")


def _head(runs: pl.DataFrame) -> str:
    devices = ", ".join(sorted(set(runs["device"])))
    cell_seconds = (runs.group_by("kind", "arch", "precision", "n")
                    .agg(pl.col("train_seconds").first())["train_seconds"].sum())
    what = {"synthetic": "uniform random tokens", "text": "real text"}
    grids = "; ".join(
        f"{part.height} on {what[kind]} ({part['arch'].n_unique()} architectures × "
        f"{part['n'].n_unique()} dataset sizes × {part['seed'].n_unique()} seeds × "
        f"{part['precision'].n_unique()} precision(s), V = {part['vocab_size'][0]}, "
        f"S = {part['seq_len'][0]})"
        for (kind,), part in runs.sort("kind").group_by("kind", maintain_order=True))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>memcap report</title>"
            f"<style>{CSS}</style></head><body><h1>memcap: how many bits does a model memorize?"
            f"</h1><p>{runs.height} trained models: {grids}; trained on {devices} in "
            f"{cell_seconds:,.0f} s of training jobs (each job trains all seeds of its cell "
            f"together).</p>")


def _paper_bpp(parameter: str, precision: str) -> str | None:
    """The paper's figure beside an α or mean-ratio row: its fitted slope (bf16 only) or its
    mean per-config ratio (both precisions)."""
    if parameter == "alpha":
        if precision == "bf16":
            return f"{PAPER_ALPHA_BF16} (slope)"
        return f"{PAPER_MEAN_BPP[precision]} (mean ratio; no {precision} slope published)"
    return f"{PAPER_MEAN_BPP[precision]}" if precision in PAPER_MEAN_BPP else None


def _family_note(laws: pl.DataFrame) -> list[str]:
    """With several model families: each family's α against GPT-2's at the same precision
    (docs/science.md#model-families)."""
    alpha = laws.filter((pl.col("law") == "capacity") & (pl.col("parameter") == "alpha"))
    if alpha["family"].n_unique() < 2:
        return []
    gpt2 = {r["precision"]: r["value"] for r in
            alpha.filter(pl.col("family") == "gpt2").iter_rows(named=True)}
    lines = [f"{r['family']} {r['precision']}: α {r['value']:.3f} ({r['ci_low']:.3f}–"
             f"{r['ci_high']:.3f})" + (f", {r['value'] / gpt2[r['precision']]:.2f}× GPT-2's"
                                      if r["precision"] in gpt2 else "")
             for r in alpha.filter(pl.col("family") != "gpt2").iter_rows(named=True)]
    return ["<h3>Model families</h3><p>Capacity of each family on the same data, seeds, "
            "budget rules and estimator: " + "; ".join(lines) + ". Knowledge capacity "
            "(Allen-Zhu &amp; Li 2024, a different protocol) found Llama-style models storing "
            "1.3× less than GPT-2 at 100 exposures, and equal at 1,000.</p>"]


def _few_seeds_note(laws: pl.DataFrame) -> str:
    """A warning where CIs come from fewer seeds than laws.MIN_CI_SEEDS."""
    few = laws.filter(pl.col("ci_few_seeds"))
    if few.is_empty():
        return ""
    k = int(few["n_seeds"].min())
    distinct = math.comb(2 * k - 1, k)
    return (f"<p class='note'><b>CIs from {k} seed{'s' if k > 1 else ''}:</b> a bootstrap over "
            f"{k} seeds has {distinct} distinct resample{'s' if distinct > 1 else ''}, so these "
            "intervals show the spread between seeds, not a confidence interval. Run at "
            f"least {MIN_CI_SEEDS} seeds (config key seeds) for one.</p>")


def _verify_section(verify: pl.DataFrame) -> list[str]:
    shown = verify.with_columns(observed_by_seed=pl.col("observed_by_seed").list.eval(
        pl.element().round(3).cast(pl.String)).list.join(" / ")).select(
        "target_f1", "n", "sequences_per_param", "steps", "predicted_f1", "observed_f1",
        "observed_by_seed", "gap", "passed")
    kind, precision = verify["kind"][0], verify["precision"][0]
    return [f"<h3>Predict, then verify</h3><p><b>{html.escape(verify_verdict(verify))}</b>. The "
            f"{kind} law ({precision}) was inverted for each target F1; the runs trained on "
            "the N it asked for (each sample seen as often as in the grid the law was fitted "
            "on: train.min_passes) give the observed F1 (loss attack, median threshold).</p>",
            _table(shown, left=())]


def _capacity_sections(runs: pl.DataFrame, cap: pl.DataFrame, laws: pl.DataFrame,
                       sat: pl.DataFrame) -> list[str]:
    syn = runs.filter(pl.col("kind") == "synthetic")
    vocab, seq = (syn["vocab_size"][0], syn["seq_len"][0]) if syn.height else (None, None)
    # α with CI per model family, beside the paper (which measured GPT-2)
    rows = [{"kind": r["kind"], "family": r["family"], "precision": r["precision"],
             "quantity": r["parameter"], "memcap": r["value"], "CI low": r["ci_low"],
             "CI high": r["ci_high"], "seeds": r["n_seeds"], "architectures": r["n_archs"],
             "status": f"lower bound: {r['note']}" if r["lower_bound"] else "saturated",
             "paper": _paper_bpp(r["parameter"], r["precision"]) if r["family"] == "gpt2"
             else None}
            for r in laws.filter(pl.col("law") == "capacity").iter_rows(named=True)]
    parts = ["<h2>Bits per parameter</h2><p>α is the least-squares slope of capacity "
             "against parameters through the origin, one fit per model family; the CI is a "
             "percentile bootstrap over seeds. <b>A lower bound</b> means at least one "
             "capacity behind it is not a saturated plateau (short CPU runs bound α from "
             "below; do not read them as the paper's number: "
             "docs/science.md#what-a-cpu-can-show).</p>"]
    parts.append(_few_seeds_note(laws.filter(pl.col("law") == "capacity")))
    parts += _family_note(laws)
    parts.append(_table(pl.DataFrame(rows),
                        left=("kind", "family", "precision", "quantity", "status"))
                 if rows else "<p>No synthetic runs in this experiment: capacity and α are "
                 "measured on synthetic data only.</p>")
    tokens = runs["tokens_per_model"].max()
    parts.append(f"<p class='note'>Training budget: at most {tokens:,} tokens per model "
                 f"(the paper: 10^6 steps × 2048 × 64 = 1.3e11).</p>")
    parts.append(f"<p class='note'>Paper (V 2048, S 64, 10^6 steps × 2048 sequences): α = "
                 f"{PAPER_ALPHA_BF16} (bf16); mean per-config ratio {PAPER_MEAN_BPP['bf16']} "
                 f"(bf16) / {PAPER_MEAN_BPP['fp32']} (fp32); range {PAPER_BPP_RANGE[0]}–"
                 f"{PAPER_BPP_RANGE[1]}.</p>")

    # capacity per architecture, beside the paper's at its precision (V 2048, S 64 only)
    paper_shape = (vocab, seq) == (2048, 64)
    capv = cap.with_columns(status=_status()).with_columns(
        paper_bits=pl.struct("arch", "precision").map_elements(
            lambda r: PAPER_CAPACITY_BITS[r["arch"]][PRECISION_INDEX[r["precision"]]]
            if paper_shape and r["arch"] in PAPER_CAPACITY_BITS else None,
            return_dtype=pl.Float64))
    parts.append("<h2>Capacity per architecture</h2><p>capacity = max over N of the mean over "
                 "seeds of the memorized bits; <i>saturated</i> needs the grid to bracket the "
                 "maximum (a smaller and a larger N beside it, bracket_n_below and "
                 "bracket_n_above, holding less, and every run at the three N passing the "
                 "saturation rule: trained to its plateau) and less than 95 % of the "
                 "memorizable bits memorized at the maximum (not data-limited). Any capacity "
                 "remains a lower bound on what the architecture can store: the optimizer may "
                 "not reach the optimum.</p>")
    parts.append(_table(capv.select(
        "kind", "family", "precision", "arch", "params", "capacity_bits", "capacity_seed_std",
        "bits_per_param", "n_at_max", "bracket_n_below", "bracket_n_above",
        "memorized_fraction_at_max", "status", "paper_bits"),
        left=("kind", "family", "precision", "arch", "status")))
    parts += _bracket_note(cap)

    parts.append("<h2>Saturated runs</h2><p>Runs passing the saturation rule, per kind, "
                 "architecture and precision (all dataset sizes and seeds).</p>")
    parts.append(_table(sat, left=("kind", "arch", "precision")))
    unsat = runs.filter(~pl.col("saturated")).sort("params", "n", "seed")
    if unsat.height:
        parts.append("<p>Runs that did not saturate (their memorization is a lower bound):</p>")
        parts.append(_table(unsat.select("run_id", "n", "steps", "mem_growth_last_window"),
                            left=("run_id",)))
    else:
        parts.append("<p>Every run passed the saturation rule.</p>")
    return parts


def _plateau_sections(cap: pl.DataFrame, plateau: pl.DataFrame) -> list[str]:
    """The plateau estimate beside the measured memorization, and the capacity computed from
    it, labelled as estimates (docs/science.md#the-plateau-estimate)."""
    if cap.is_empty() or plateau.is_empty():
        return []
    parts = ["<h2>Plateau estimate (unlimited steps)</h2><p class='note'><b>Estimates, not "
             "measurements.</b> Each run's training log (memorization every eval_every "
             "steps) is fitted with a saturating curve of the cumulative learning rate; its "
             "asymptote (plus what a final decay of the rate added) estimates the "
             "memorization the run would reach with unlimited steps, with a 95 % CI from the "
             "fit. The capacity from the estimates is the same maximum over N of the means "
             "over seeds; its CI is that maximum of the runs' CI bounds (the fits' "
             "uncertainty, not the seeds'). Validation: docs/recipe.md.</p>"]
    parts.append(_table(cap.select(
        "precision", "arch", "params", pl.col("capacity_bits").alias("capacity (measured)"),
        pl.col("capacity_bits_estimate").alias("capacity estimate"),
        pl.col("capacity_bits_estimate_ci_low").alias("estimate CI low"),
        pl.col("capacity_bits_estimate_ci_high").alias("estimate CI high"),
        pl.col("bits_per_param").alias("bits/param (measured)"),
        pl.col("bits_per_param_estimate").alias("bits/param estimate"),
        pl.col("n_at_max_estimate").alias("N at the estimate's maximum")),
        left=("precision", "arch")))
    if cap["capacity_bits_estimate"].is_null().all():
        parts.append("<p class='lb'>No capacity has an estimate: the estimate extrapolates a "
                     "constant-rate phase (train.schedule plateau or constant), and a rate "
                     "that decays throughout (cosine, linear) has none; the reason per cell "
                     "is in the fit column.</p>")
    parts.append("<p>Per cell (means over seeds):</p>")
    parts.append(_table(plateau, left=("arch", "precision", "fit")))
    return parts


def _bracket_note(cap: pl.DataFrame) -> list[str]:
    """Which maxima the grid does not bracket or brackets too coarsely (data-limited), and
    how to extend it (docs/science.md#bracketing)."""
    open_ = cap.filter(~pl.col("bracketed") | pl.col("bracket_next_n").is_not_null())
    if open_.is_empty():
        return ["<p>The grid brackets every architecture's maximum.</p>"]
    items = "".join(
        f"<li>{html.escape(r['arch'])} ({r['precision']}): "
        + html.escape(r["bracket_status"] if not r["bracketed"] else
                      "data-limited at the maximum: the capacity lies between it and the N "
                      "above")
        + (f"; next N: <b>{r['bracket_next_n']:,}</b>" if r["bracket_next_n"] else
           "; no N to add: train the unsaturated runs longer")
        + "</li>" for r in open_.iter_rows(named=True))
    how = ("" if open_["bracket_next_n"].is_null().all() else
           "<p>Extend the grid by the next N (only their cells train; cached cells are "
           "reused): <code>snakemake --cores 2 bracket</code> (with the same "
           "<code>--configfile</code> as this run) writes results/bracket.yaml, then rerun "
           "with it as the last <code>--configfile</code>; or <code>memcap bracket</code> "
           "(README, Bracketing the capacity).</p>")
    return [f"<p class='lb'>The grid does not bracket every maximum closely:</p>"
            f"<ul>{items}</ul>{how}"]


def _text_tables(con: duckdb.DuckDBPyConnection) -> dict[str, pl.DataFrame]:
    return {
        "datasets": con.sql("""SELECT corpus, split, documents, tokens, samples_before_dedup,
                                      samples_after_dedup, duplicates, duplicate_pct
                               FROM text_datasets ORDER BY corpus = 'all' DESC, corpus,
                               split DESC""").pl(),
        "setup": con.sql("SELECT DISTINCT tokenizer, vocab_size, seq_len, sampling "
                         "FROM text_datasets").pl(),
        "references": con.sql("""SELECT reference, run_id, heldout_loss, uniform_loss,
                                        better_than_uniform, chosen_is_lowest, lowest_run_id,
                                        named
                                 FROM reference_models ORDER BY reference, arch""").pl(),
        "max_mem": con.sql("""SELECT arch, precision, params, capacity_bits AS max_mem_bits,
                                     bits_per_param, n_at_max
                              FROM capacity WHERE kind = 'text' ORDER BY precision, params
                              """).pl(),
        "peaks": con.sql("""SELECT arch, precision, params, peak_n, peak_ratio,
                                   peak_heldout_loss, peak_interior, ratio_at_min_n,
                                   ratio_at_max_n
                            FROM double_descent ORDER BY precision, params""").pl(),
        "by_reference": con.sql("""SELECT r.arch, r.precision, r.n, b.reference,
                                          avg(b.mem_bits) AS mem_bits,
                                          avg(b.mem_bits / r.n) AS bits_per_sample,
                                          avg(b.dataset_bits) AS reference_bits,
                                          avg(m.capacity_ratio) AS capacity_ratio,
                                          avg(r.heldout_loss) AS heldout_loss
                                   FROM grid_runs r JOIN memorization_by_reference b USING (run_id)
                                   JOIN memorization m USING (run_id)
                                   WHERE r.kind = 'text' GROUP BY ALL
                                   ORDER BY min(r.params), r.precision, r.n, b.reference
                                   """).pl(),
    }


def _text_sections(t: dict[str, pl.DataFrame], fdir: Path) -> list[str]:
    setup = t["setup"].row(0, named=True)
    cut = ("the first S tokens of each document" if setup["sampling"] == "first"
           else "every S-token window of each document")
    parts = [f"<h2>Real text</h2><p>Tokenizer {setup['tokenizer']} (V = "
             f"{setup['vocab_size']}), {setup['seq_len']}-token samples ({cut}), exact "
             "deduplication; train pool and held-out set split by document.</p>"]
    parts.append(_table(t["datasets"], left=("corpus", "split")))
    parts.append("<h3>References</h3><p>same-arch: the run of the same architecture trained on "
                 "the largest dataset (first seed); oracle: the text run with the lowest "
                 "held-out loss (or the configured one). Memorization of a sample = "
                 "max(0, nll under the reference − nll under the model).</p>")
    parts.append(_table(t["references"], left=("reference", "run_id", "lowest_run_id")))
    bad = t["references"].filter(~pl.col("better_than_uniform"))
    if bad.height:
        parts.append("<p class='lb'>Warning: " + ", ".join(bad["run_id"]) + " code held-out "
                     "text worse than the uniform code (ln V nats per token): trained on too "
                     "little data, they memorized instead of learning, and memorization "
                     "measured against them is inflated. Add a text dataset size well past "
                     "capacity.</p>")
    parts.append("<h3>Double descent</h3><p>Held-out loss (nats per token, mean over seeds) "
                 "against the dataset-to-capacity ratio H_ref(D) / (α·P), H_ref under the "
                 "same-arch reference. Per architecture, the held-out loss peaks at:</p>")
    lines = []
    for r in t["peaks"].iter_rows(named=True):
        where = "" if r["peak_interior"] else (
            " — at the edge of the grid, so the grid does not bracket the peak")
        lines.append(f"<li>{r['arch']} ({r['precision']}): held-out loss peaks at ratio "
                     f"{r['peak_ratio']:.3g} (N = {r['peak_n']:,}, loss "
                     f"{r['peak_heldout_loss']:.3f}){where}</li>")
    parts.append("<ul>" + "".join(lines) + "</ul>")
    parts.append("<p class='note'>The paper finds the peak where the ratio crosses 1.</p>")
    parts.append(_figure(fdir, "double_descent", "Double descent"))
    parts.append(_table(t["peaks"], left=("arch", "precision")))
    parts.append("<h3>Unintended memorization of text, per reference</h3><p>The most bits a "
                 "text model memorized beyond what its same-arch reference predicts (mean over "
                 "seeds, maximum over N). This is no capacity measurement: the reference itself "
                 "learned the text, and what both models share counts as generalization.</p>")
    parts.append(_table(t["max_mem"], left=("arch", "precision")))
    parts.append(_table(t["by_reference"], left=("arch", "precision", "reference")))
    return parts


ATTACK_NOTES = {
    "reference": "score nll(x|θ) − nll(x|θ̂) against the primary reference",
    "reference_oracle": "the same against the oracle reference (text)",
    "zlib": "score −nll(x|θ̂) / zlib(x), zlib(x) the sample's compressed size",
    "min_k": "score −(mean code length of the sample's 20 % least likely tokens), Min-K% Prob",
}
SYNTHETIC_EQUIVALENCE = (
    "On uniform synthetic data the reference code length is the same (S−1)·log2 V bits for "
    "every sample, so the reference-calibrated attack ranks exactly like the loss attack (equal "
    "AUC and F1); zlib cannot compress uniform tokens, so its calibration is nearly constant "
    "and the zlib attack is the loss attack up to that noise. Min-K% differs: it scores only "
    "each sample's least likely tokens.")


def _mia_sections(mia: pl.DataFrame, attack_gap: pl.DataFrame, laws: pl.DataFrame,
                  extraction: pl.DataFrame, tfidf: pl.DataFrame,
                  tops: dict[str, tuple[str, pl.DataFrame]],
                  verify: pl.DataFrame | None = None) -> list[str]:
    parts = ["<h2>Membership inference</h2><p>Members: up to the configured number of "
             "training samples; non-members: as many held-out samples, drawn alike: a seeded "
             "random subset of each class, with the same number per corpus in both on text "
             "(the draw's seed and per-corpus counts are in the <code>mia</code> table). F1 at "
             "the median threshold calls the upper half of the pooled scores member, so chance "
             "is 0.5; F1 at the best threshold is optimistic (chosen on the same data). Means "
             "over seeds. The loss attack:</p>"]
    parts.append(_table(mia.filter(pl.col("attack") == "loss").drop("attack"),
                        left=("kind", "arch", "precision")))
    parts.append("<p>AUC of every attack (mean over seeds; one standard error of an AUC of 0.5 "
                 "is about sqrt((m+m+1)/(12·m²)) for m members):</p>")
    parts.append(_table(mia.pivot(on="attack", index=["kind", "arch", "precision", "n",
                                                      "members"], values="auc"),
                        left=("kind", "arch", "precision")))
    for r in attack_gap.iter_rows(named=True):
        parts.append(f"<p class='note'>{r['kind']}, {r['attack']} attack "
                     f"({ATTACK_NOTES.get(r['attack'], '')}): AUC differs from the loss "
                     f"attack's by at most {r['gap']:.2g}, by {r['mean_gain']:+.3g} on "
                     "average.</p>")
    if (attack_gap["kind"] == "synthetic").any():
        parts.append(f"<p class='note'>{SYNTHETIC_EQUIVALENCE}</p>")
    fit = laws.filter(pl.col("law") == "mia_f1")
    parts.append("<h2>Membership-inference law</h2><p>F1(N/P) = ½·(1 + c1·σ(−c2·(N/P − "
                 "c3))), N counted in 64-token sequences (N·S/64), fitted to the cell means "
                 "of the loss attack's median-threshold F1, one law per kind (synthetic, "
                 "text), model family and precision; CIs from a bootstrap over seeds.</p>")
    if fit.height:
        parts.append(_few_seeds_note(fit))
        rows = [{"kind": r["kind"], "family": r["family"], "precision": r["precision"],
                 "parameter": r["parameter"], "memcap": r["value"], "CI low": r["ci_low"],
                 "CI high": r["ci_high"], "paper": PAPER_MIA[r["parameter"]], "fit": r["note"]}
                for r in fit.iter_rows(named=True)]
        parts.append(_table(pl.DataFrame(rows),
                            left=("kind", "family", "precision", "parameter", "fit")))
    else:
        parts.append("<p>Too few cells to fit the law (at least 4 are needed).</p>")
    if verify is not None:
        parts += _verify_section(verify)
    val = []
    for model, params, n, pred, obs, pm in PAPER_MIA_VALIDATION:
        x = sequences_per_param(n, LAW_SEQ_LEN, params)  # the paper counts 64-token sequences
        row = {"model": model, "params": params, "N sequences": n, "N/P": x,
               "paper predicted %": pred, "paper observed %": f"{obs} ± {pm}",
               "law, paper constants %": 100 * float(mia_f1(np.array([x]),
                                                            **PAPER_MIA)[0])}
        for kind, precision in fit.select("kind", "precision").unique().sort(
                "kind", "precision").iter_rows():
            c = dict(fit.filter((pl.col("precision") == precision) & (pl.col("kind") == kind))
                     .select("parameter", "value").iter_rows())
            row[f"memcap {kind} {precision} %"] = 100 * float(
                mia_f1(np.array([x]), **c)[0])
        val.append(row)
    parts.append("<h3>The paper's validation table, recomputed</h3>")
    parts.append(_table(pl.DataFrame(val), left=("model", "paper observed %")))

    parts.append("<h2>Extraction</h2><p>Exact-match rate of greedy decoding from a k-token "
                 "prefix (mean over seeds), on training samples and on held-out samples.</p>")
    parts.append(_table(extraction.pivot(on="col", index=["kind", "arch", "n"], values="rate",
                                         sort_columns=True), left=("kind", "arch")))

    parts.append("<h2>What gets memorized</h2><p>Spearman correlation between a training "
                 "sample's TF-IDF (mean unigram surprisal of its tokens within the training "
                 "set) and its memorized bits, per run:</p>")
    parts.append(_table(tfidf, left=("kind", "arch")))
    for kind, (run, top) in sorted(tops.items()):
        shown = "as token ids" if kind == "synthetic" else "decoded"
        parts.append(f"<p>The 20 most memorized training samples of <code>{html.escape(run)}"
                     f"</code> (the largest {kind} architecture at its maximum memorization, "
                     f"first seed), {shown}.</p>")
        parts.append(_table(top.drop("text" if kind == "synthetic" else "tokens"),
                            left=("tokens", "text")))
    return parts


def _audit_tables(con: duckdb.DuckDBPyConnection, tables: set[str]) -> dict:
    """The audited models' rows (the `audits` table and the rows of the other tables it
    names); memorization and top samples exist only for targets with a reference model."""
    audit = {
        "headline": con.sql("""SELECT target, excess_bits, excess_bits_se, mem_bits,
                                      floor_bits_per_sample, members,
                                      heldout_bits_per_token AS target_nonmember_bits_per_token,
                                      reference_heldout_bits_per_token
                                          AS reference_nonmember_bits_per_token,
                                      uniform_bits_per_token, reference_dir
                               FROM audits ORDER BY target""").pl(),
        "warnings": con.sql("""SELECT target, reference_flag FROM audits
                               WHERE reference_flag IS NOT NULL ORDER BY target""").pl(),
        "audits": con.sql("""SELECT target, scheme, stored_bits_per_param, model_type,
                                    loader, params, tokenizer, vocab_size, reference_dir,
                                    members, nonmembers, duplicates, member_loss,
                                    nonmember_loss, reference_nonmember_loss, run_id
                             FROM audits ORDER BY target""").pl(),
        "setup": con.sql("SELECT DISTINCT seq_len, sampling FROM audits").pl(),
        "mia": con.sql("""SELECT a.target, m.attack, m.auc, m.f1_median, m.f1_best,
                                 m.tpr_at_1pct_fpr, m.tpr_at_0_1pct_fpr, m.n_members
                          FROM audits a JOIN mia m USING (run_id)
                          ORDER BY a.target, m.attack""").pl(),
        "extraction": con.sql("""SELECT a.target, e.split || ' k=' || e.prefix_len AS col,
                                        e.rate
                                 FROM audits a JOIN extraction e USING (run_id)""").pl(),
        "memorization": None, "tops": {},
    }
    if "memorization" in tables:
        audit["memorization"] = con.sql(
            """SELECT a.target, m.mem_bits, m.mem_bits_unclamped, m.dataset_bits,
                      m.memorizable_fraction, m.bits_per_param, m.tfidf_mem_spearman
               FROM audits a JOIN memorization m USING (run_id) ORDER BY a.target""").pl()
    if "top_samples" in tables:
        for target, run in audit["audits"].select("target", "run_id").iter_rows():
            audit["tops"][target] = con.sql(
                """SELECT rank, mem_bits, nll_bits, ref_nll_bits, tfidf, text
                   FROM top_samples WHERE run_id = ? ORDER BY rank""", params=[run]).pl()
    return audit


def _audit_head() -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>memcap audit</title>"
            f"<style>{CSS}</style></head><body><h1>memcap: what did these models memorize?"
            "</h1>")


def _audit_sections(audit: dict) -> list[str]:
    setup = audit["setup"].row(0, named=True)
    cut = {"first": "the first S tokens of each document",
           "windows": "every S-token window of each document",
           "given": "the token ids given (a memcap dataset)"}[setup["sampling"]]
    parts = ["<h2>Audit of models trained elsewhere</h2>"]
    for target, flag in audit["warnings"].iter_rows():
        parts.append(f"<p class='lb'><b>Reference warning</b> ({html.escape(target)}): "
                     f"the {html.escape(flag)}. Memorization against it credits bits to "
                     "samples the target never saw; read the excess, not mem_bits, and use "
                     "the target's base checkpoint as the reference "
                     "(docs/science.md#audit).</p>")
    parts.append("<p><b>Excess memorization</b>: the bits memorized beyond what the "
                 "estimator credits to a sample the target never saw, excess_bits = mem_bits "
                 "− members · floor_bits_per_sample, with its standard error (an excess "
                 "within 3 SE of 0 is no memorization). The floor is the mean memorization "
                 "of the non-members; code lengths per predicted token beside the uniform "
                 "code's, log2 V.</p>")
    parts.append(_table(audit["headline"], left=("target", "reference_dir")))
    parts.append(f"<p>Member documents (the target's training data) and non-member documents "
                 f"(never trained on), tokenized with each tokenizer group's tokenizer (targets "
                 f"that give the same ids audit together) into {setup['seq_len']}-token "
                 f"samples ({cut}), exact duplicates dropped (a non-member that repeats a "
                 "member too). Losses in nats per predicted token; loader <i>memcap</i>: a "
                 "GPT-2 checkpoint scored by memcap's own model, <i>transformers</i>: scored "
                 "by transformers.</p>")
    parts.append(_table(audit["audits"].drop("run_id"),
                        left=("target", "model_type", "loader", "reference_dir")))
    parts.append("<h3>Membership inference</h3><p>Balanced members and non-members; AUC and "
                 "F1 at the median threshold are 0.5 for a model that memorized nothing.</p>")
    parts.append(_table(audit["mia"], left=("target", "attack")))
    parts.append("<h3>Memorization</h3>")
    if audit["memorization"] is None or not audit["memorization"].height:
        parts.append("<p class='lb'>No reference model was given: unintended memorization, "
                     "the reference-calibrated attack, the TF-IDF correlation and the most "
                     "memorized samples are left out (set audit.reference to a model of the "
                     "same tokenizer that never saw the members).</p>")
    else:
        parts.append("<p>mem_bits = Σ over members of max(0, nll under the reference − nll "
                     "under the target) (docs/science.md#audit).</p>")
        parts.append(_table(audit["memorization"], left=("target",)))
    parts.append("<h3>Extraction</h3><p>Exact-match rate of greedy decoding from a k-token "
                 "prefix, on members (train) and non-members (heldout).</p>")
    parts.append(_table(audit["extraction"].pivot(on="col", index="target", values="rate",
                                                  sort_columns=True), left=("target",)))
    for target, top in sorted(audit["tops"].items()):
        parts.append(f"<p>The 20 most memorized members under <code>{html.escape(target)}"
                     "</code>, decoded.</p>")
        parts.append(_table(top, left=("text",)))
    return parts
