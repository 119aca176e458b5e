"""`memcap <stage>`: one thin command per pipeline stage (the rules call these).

Each command parses its arguments and calls one library function; it exits non-zero with a
one-line message on bad input. The model stages (train, score, evaluate) take the cell as one
JSON value (memcap.cell.Cell, built by the rules) plus the execution settings: a failed job
reruns by hand from the command line in its log.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

COMMANDS: dict[str, tuple[str, list[tuple[tuple, dict]], Callable]] = {}


def arg(*flags: str, **kwargs) -> tuple[tuple, dict]:
    return flags, kwargs


def command(name: str, help: str, *args: tuple[tuple, dict]):
    """Register `memcap <name>` with its arguments, declared right above the function."""
    def register(func: Callable[[argparse.Namespace], None]):
        COMMANDS[name] = (help, list(args), func)
        return func
    return register


def _cell(a: argparse.Namespace):
    from memcap.cell import Cell

    return Cell.from_json(a.cell)


def _json(text: str):
    return json.loads(text)


CELL = arg("--cell", required=True, help="the cell record as JSON (the rules "
           "pass it; memcap.cell.Cell)")


def runtime_args() -> list[tuple[tuple, dict]]:
    """--device, --threads, ...: the execution settings (memcap.cell.Runtime); defaults are
    the config schema's."""
    from memcap.cell import Runtime

    base = Runtime.defaults()
    return [arg(f"--{f.name.replace('_', '-')}", default=str(getattr(base, f.name)),
                help=f"runtime: {f.name}") for f in dataclasses.fields(Runtime)]


def _runtime(a: argparse.Namespace):
    from memcap.cell import Runtime

    return Runtime.parse({f.name: getattr(a, f.name) for f in dataclasses.fields(Runtime)})


# ------------------------------------------------------------------------- data and text

@command("data", "write a synthetic dataset (uniform random tokens)",
         arg("--seed", type=int, required=True),
         arg("--split", choices=["train", "heldout"], required=True),
         arg("--n", type=int, required=True), arg("--seq-len", type=int, required=True),
         arg("--vocab-size", type=int, required=True), arg("--out", type=Path, required=True))
def cmd_data(a: argparse.Namespace) -> None:
    from memcap.stages.data import write_synthetic

    write_synthetic(a.out, seed=a.seed, split=a.split, n=a.n, seq_len=a.seq_len,
                    vocab_size=a.vocab_size)
    print(f"wrote {a.n} {a.split} sequences (seed {a.seed}, S {a.seq_len}, V {a.vocab_size}) "
          f"to {a.out}")


@command("fetch", "fetch one pinned registry artifact (SHA-256 checked)",
         arg("--artifact", required=True), arg("--cache-dir", type=Path, required=True),
         arg("--out", type=Path, required=True, help="JSON record of the artifact"))
def cmd_fetch(a: argparse.Namespace) -> None:
    from memcap.stages.text import fetch

    print(fetch(a.artifact, a.cache_dir, a.out))


@command("documents", "text documents of the configured source, split into train pool and "
                      "held-out by document",
         arg("--source", type=_json, required=True, help="the text source settings as JSON"),
         arg("--heldout-fraction", type=float, required=True),
         arg("--split-seed", type=int, required=True),
         arg("--cache-dir", type=Path, required=True), arg("--out", type=Path, required=True))
def cmd_documents(a: argparse.Namespace) -> None:
    from memcap.stages.text import write_documents

    print(write_documents(a.source, a.cache_dir, a.heldout_fraction, a.split_seed, a.out))


@command("tokenizer", "train a BPE on the train pool, or install GPT-2's",
         arg("--kind", choices=["bpe", "gpt2"], required=True),
         arg("--vocab-size", type=int, required=True),
         arg("--documents", type=Path, required=True),
         arg("--cache-dir", type=Path, required=True),
         arg("--out-dir", type=Path, required=True), arg("--threads", type=int, required=True))
def cmd_tokenizer(a: argparse.Namespace) -> None:
    from memcap.stages.text import write_tokenizer

    print(write_tokenizer(a.kind, a.vocab_size, a.documents, a.cache_dir, a.out_dir, a.threads))


@command("pool", "tokenize, cut samples, deduplicate",
         arg("--documents", type=Path, required=True),
         arg("--tokenizer", type=Path, required=True, help="tokenizer folder"),
         arg("--seq-len", type=int, required=True),
         arg("--sampling", choices=["first", "windows"], required=True),
         arg("--out", type=Path, required=True), arg("--stats", type=Path, required=True),
         arg("--threads", type=int, required=True))
def cmd_pool(a: argparse.Namespace) -> None:
    from memcap.stages.text import write_pool

    print(write_pool(a.documents, a.tokenizer, a.seq_len, a.sampling, a.out, a.stats,
                     a.threads))


@command("text-data", "one seed's text dataset of size n from the pool",
         arg("--pool", type=Path, required=True), arg("--seed", type=int, required=True),
         arg("--split", choices=["train", "heldout"], required=True),
         arg("--n", type=int, required=True), arg("--out", type=Path, required=True))
def cmd_text_data(a: argparse.Namespace) -> None:
    from memcap.stages.text import write_text_dataset

    write_text_dataset(a.pool, a.out, seed=a.seed, split=a.split, n=a.n)
    print(f"wrote {a.n} {a.split} text samples (seed {a.seed}) to {a.out}")


@command("reference", "score the text pool with a same-arch reference run",
         arg("--run-dir", type=Path, required=True), arg("--pool", type=Path, required=True),
         arg("--out", type=Path, required=True), arg("--record", type=Path, required=True),
         *runtime_args())
def cmd_reference(a: argparse.Namespace) -> None:
    from memcap.stages.reference import same_arch_reference

    print(same_arch_reference(a.run_dir, a.pool, a.out, a.record, _runtime(a)))


@command("oracle", "pick the oracle reference and score the text pool",
         arg("--run-dirs", type=Path, nargs="+", required=True),
         arg("--heldout", type=Path, required=True), arg("--pool", type=Path, required=True),
         arg("--out", type=Path, required=True), arg("--record", type=Path, required=True),
         arg("--named", default="", help="run id suffix of a configured oracle (text.oracle)"),
         *runtime_args())
def cmd_oracle(a: argparse.Namespace) -> None:
    from memcap.stages.reference import oracle_reference

    record = oracle_reference(a.run_dirs, a.heldout, a.pool, a.out, a.record, a.named or None,
                              _runtime(a))
    print(f"oracle: {record['chosen']} (held-out loss {record['heldout_loss']:.4f}); lowest "
          f"held-out loss: {record['lowest']}")


# ------------------------------------------------------------------------- model stages

@command("train", "train all seeds of one cell", CELL, *runtime_args())
def cmd_train(a: argparse.Namespace) -> None:
    from memcap.stages.train import train_cell

    cell = _cell(a)
    for r in train_cell(cell, _runtime(a), echo=lambda s: print(s, flush=True)):
        print(f"{cell.label} seed {r['seed']}: {r['final_mem_bits_estimate']:,.0f} bits "
              f"({r['final_mem_bits_estimate'] / r['params']:.3f} bits/param), "
              f"saturated={r['saturated']}, {r['train_seconds']:.1f} s on {r['device']}")


@command("score", "per-sample code lengths of all seeds of one cell", CELL, *runtime_args())
def cmd_score(a: argparse.Namespace) -> None:
    from memcap.stages.score import score_cell

    for r in score_cell(_cell(a), _runtime(a)):
        print(f"seed {r['seed']}: mem {r['mem_bits']:,.0f} of {r['dataset_bits']:,.0f} bits, "
              f"held-out loss {r['heldout_loss']:.4f} nats/token")


@command("evaluate", "membership inference, extraction, top samples of one cell", CELL,
         arg("--settings", type=_json, required=True, help="the config's evaluate: section "
             "as JSON"), *runtime_args())
def cmd_evaluate(a: argparse.Namespace) -> None:
    from memcap.stages.evaluate import evaluate_cell

    for r in evaluate_cell(_cell(a), _runtime(a), **a.settings):
        loss = next(m for m in r["mia"] if m["attack"] == "loss")
        print(f"{r['run_id']}: loss attack AUC {loss['auc']:.3f}, F1 {loss['f1_median']:.3f}; "
              + ", ".join(f"{e['split']} k={e['prefix_len']}: {e['rate']:.3f}"
                          for e in r["extraction"]))


@command("quantize", "quantize the weights of all seeds of one cell by one scheme, then score "
         "and evaluate them (the score and evaluate stages, in one process)", CELL,
         arg("--settings", type=_json, required=True, help="the config's evaluate: section "
             "as JSON"),
         arg("--calibration-samples", type=int, default=0,
             help="GPTQ schemes: fresh sequences per run to calibrate on"), *runtime_args())
def cmd_quantize(a: argparse.Namespace) -> None:
    from memcap.stages.quantize import quantize_cell

    cell = _cell(a)
    for r in quantize_cell(cell, a.calibration_samples):
        print(f"{r['run_id']}: {r['stored_bits']:,} stored bits ({r['stored_bits_per_param']:.2f} "
              f"per parameter), largest error {r['max_error_steps']:.3f} steps, "
              f"torchao difference {r['torchao_max_abs_diff']:.2e}")
    cmd_score(a)
    cmd_evaluate(a)


# ------------------------------------------------------------------------- audit

@command("audit-samples", "check the audited models and cut the member and non-member samples",
         arg("--targets", type=_json, required=True, help="audit.targets as JSON"),
         arg("--references", type=_json, default=[],
             help="the reference model folders as a JSON list (none: [])"),
         arg("--members", type=Path, required=True),
         arg("--nonmembers", type=Path, required=True),
         arg("--seq-len", type=int, required=True),
         arg("--sampling", choices=["first", "windows"], required=True),
         arg("--out-dir", type=Path, required=True))
def cmd_audit_samples(a: argparse.Namespace) -> None:
    from memcap.stages.audit import write_samples

    print(write_samples(a.targets, a.references, a.members, a.nonmembers, a.seq_len,
                        a.sampling, a.out_dir))


@command("audit-score", "code lengths of the audit's samples under one model",
         arg("--model-dir", type=Path, required=True),
         arg("--key", required=True, help="the config key naming the model"),
         arg("--samples-dir", type=Path, required=True),
         arg("--scheme", default="", help="quantize the weights by this scheme first ('': no)"),
         arg("--out-dir", type=Path, required=True), *runtime_args())
def cmd_audit_score(a: argparse.Namespace) -> None:
    from memcap.stages.audit import score_model

    print(score_model(a.model_dir, a.key, a.samples_dir, a.out_dir, _runtime(a),
                      a.scheme or None))


@command("audit-evaluate", "memorization, membership inference and extraction of one target",
         arg("--target", required=True), arg("--model-dir", required=True),
         arg("--samples-dir", type=Path, required=True),
         arg("--scores", type=Path, required=True, help="the target's scores folder"),
         arg("--reference-scores", default="",
             help="the reference's score.json (none: '')"),
         arg("--out-dir", type=Path, required=True),
         arg("--settings", type=_json, required=True, help="the config's evaluate: section "
             "as JSON"),
         arg("--require-good-reference", action="store_true",
             help="stop when the reference is flagged (audit.require_good_reference)"),
         *runtime_args())
def cmd_audit_evaluate(a: argparse.Namespace) -> None:
    from memcap.stages.audit import evaluate_target

    reference = Path(a.reference_scores).parent if a.reference_scores else None
    r = evaluate_target(a.target, a.model_dir, a.samples_dir, a.scores, reference,
                        a.out_dir, _runtime(a), **a.settings,
                        require_good_reference=a.require_good_reference)
    loss = next(m for m in r["mia"] if m["attack"] == "loss")
    mem = (f"{r['mem_bits']:,.0f} memorized bits" if r["reference"] else
           "no reference model: memorization left out")
    print(f"{r['run_id']}: loss attack AUC {loss['auc']:.3f}; {mem}")


@command("export-run", "a memcap run as a transformers checkpoint folder (for the audit or any "
                       "tool); with --documents, its training and held-out samples as text",
         arg("--run", type=Path, required=True, help="the run folder (results/runs/...)"),
         arg("--tokenizer", type=Path, help="the text stage's tokenizer folder, for a text "
             "run (default: results/text/tokenizer); a synthetic run has none"),
         arg("--out", type=Path, required=True, help="the checkpoint folder to write"),
         arg("--documents", type=Path, help="write members.jsonl (the run's training "
             "samples) and nonmembers.jsonl (its held-out samples) here, decoded (text runs)"))
def cmd_export_run(a: argparse.Namespace) -> None:
    from memcap.io import read_json
    from memcap.models.causal_lm import export_documents, export_run
    from memcap.paths import DATA

    kind = read_json(a.run / "run.json")["kind"] if (a.run / "run.json").exists() else None
    if a.tokenizer is None and kind == "text":
        a.tokenizer = Path("results/text/tokenizer")
    if a.documents and a.tokenizer is None:
        raise SystemExit(f"--documents decodes a text run's samples; {a.run} is a {kind} run")
    run = export_run(a.run, a.out, a.tokenizer)
    print(f"wrote {run['run_id']} to {a.out} ({run['params']:,} parameters, "
          f"{run.get('family', 'gpt2')} as transformers)")
    if a.documents:
        where = {"kind": run["kind"], "vocab": run["vocab_size"], "seq": run["seq_len"],
                 "seed": run["seed"]}
        files = {"members": Path(DATA.format(**where, split="train", n=run["n"])),
                 "nonmembers": sorted(Path().glob(DATA.format(**where, split="heldout",
                                                              n="*")))}
        if len(files["nonmembers"]) != 1:
            raise SystemExit(f"expected one held-out file for {run['run_id']} "
                             f"({DATA.format(**where, split='heldout', n='*')}), found "
                             f"{len(files['nonmembers'])}: run this from the project root")
        files["nonmembers"] = files["nonmembers"][0]
        for name, data in files.items():
            count = export_documents(data, a.tokenizer, a.documents / f"{name}.jsonl")
            print(f"wrote {count} {name} of {data} to {a.documents / f'{name}.jsonl'}")


# ------------------------------------------------------------------------- aggregation

@command("collect", "the run tables from run folders",
         arg("--run-dirs", type=Path, nargs="+", required=True),
         arg("--references", type=Path, nargs="*", default=[], help="text reference records"),
         arg("--text-stats", type=Path, nargs="*", default=[], help="text pool statistics"),
         arg("--quantized-dirs", type=Path, nargs="*", default=[],
             help="quantized run folders"),
         arg("--tables-dir", type=Path, required=True),
         arg("--memorization", type=Path, required=True,
             help="where memorization goes (its capacity ratio is added by `laws`)"))
def cmd_collect(a: argparse.Namespace) -> None:
    from memcap.stages.aggregate import collect

    print(collect(a.run_dirs, a.references, a.text_stats, a.tables_dir, a.memorization,
                  a.quantized_dirs))


@command("laws", "capacity, the bits/parameter and membership laws, double descent",
         arg("--runs", type=Path, required=True), arg("--memorization", type=Path, required=True),
         arg("--mia", type=Path, required=True),
         arg("--quantized-runs", type=Path, required=True),
         arg("--quantized-mia", type=Path, required=True),
         arg("--out", type=Path, nargs="+", required=True,
             help="capacity, laws, double_descent, quantization and memorization Parquet "
                  "files (by stem)"),
         arg("--settings", type=_json, required=True, help="the config's laws: section as JSON"))
def cmd_laws(a: argparse.Namespace) -> None:
    from memcap.stages.laws import fit_laws

    print(fit_laws(a.runs, a.memorization, a.mia, {p.stem: p for p in a.out},
                   quantized_runs=a.quantized_runs, quantized_mia=a.quantized_mia,
                   **a.settings))


@command("database", "build results/memcap.duckdb atomically",
         arg("--tables", type=Path, nargs="*", default=[],
             help="Parquet files; each becomes the table named by its file stem"),
         arg("--samples", type=Path, nargs="*", default=[]),
         arg("--quantized-samples", type=Path, nargs="*", default=[]),
         arg("--audit-tables", type=Path, nargs="*", default=[],
             help="an audit's rows, appended to the table named by each file's stem"),
         arg("--audit-samples", type=Path, nargs="*", default=[]),
         arg("--out", type=Path, required=True))
def cmd_database(a: argparse.Namespace) -> None:
    from memcap.stages.aggregate import build_database

    print(build_database(a.out, a.tables, a.samples, a.audit_tables, a.audit_samples,
                         a.quantized_samples))


@command("figures", "Altair figures as HTML and PNG",
         arg("--tables-dir", type=Path, required=True),
         arg("--samples", type=Path, nargs="+", required=True, help="per-run score files"),
         arg("--mia-sets", type=Path, nargs="+", required=True,
             help="per-run membership sets (mia_sets.parquet)"),
         arg("--out-dir", type=Path, required=True))
def cmd_figures(a: argparse.Namespace) -> None:
    from memcap.stages.figures import write_figures

    for path in write_figures(a.tables_dir, a.samples, a.mia_sets, a.out_dir):
        print(f"wrote {path}")


@command("report", "results/report.html",
         arg("--db", type=Path, required=True), arg("--figures-dir", type=Path, required=True),
         arg("--out", type=Path, required=True))
def cmd_report(a: argparse.Namespace) -> None:
    from memcap.stages.report import write_report

    print(write_report(a.db, a.figures_dir, a.out))


@command("bracket", "add the N that bracket each synthetic capacity maximum: a config "
                    "overlay (docs/science.md#bracketing)",
         arg("--configfile", type=Path, nargs="*", default=[],
             help="the run's config files, merged over ./config.yaml in order, as Snakemake "
                  "merges them"),
         arg("--grid", type=_json, help="instead of --configfile: the validated config's "
             "architectures and synthetic dataset_sizes as JSON (the bracket rule)"),
         arg("--database", type=Path, default=Path("results/memcap.duckdb")),
         arg("--out", type=Path, default=Path("results/bracket.yaml"),
             help="the overlay to write (only when some N is to be added)"))
def cmd_bracket(a: argparse.Namespace) -> None:
    from memcap.stages.bracket import read_capacity, write_overlay

    if a.grid is None:
        from memcap.config import load_config

        base = [Path("config.yaml")] if Path("config.yaml").exists() else []
        config = load_config(*base, *a.configfile)
        a.grid = {"architectures": config["architectures"],
                  "dataset_sizes": config["synthetic"]["dataset_sizes"]}
    if not a.database.exists():
        raise FileNotFoundError(f"{a.database}: run the workflow first (snakemake)")
    for line in write_overlay(a.grid["architectures"], a.grid["dataset_sizes"],
                              read_capacity(a.database), a.out):
        print(line)


# ------------------------------------------------------------------------- predict, verify

@command("verify-plan", "dataset sizes where the fitted law predicts target F1 values",
         arg("--laws", type=Path, required=True), arg("--precision", required=True),
         arg("--family", default="gpt2"), arg("--params", type=int, required=True),
         arg("--seq-len", type=int, required=True),
         arg("--targets", type=float, nargs="+", required=True),
         arg("--out", type=Path, required=True))
def cmd_verify_plan(a: argparse.Namespace) -> None:
    from memcap.stages.verify import write_plan

    print(write_plan(a.out, a.laws, "synthetic", a.precision, a.family, a.params, a.seq_len,
                     a.targets))


@command("verify-summary", "predicted against observed F1",
         arg("--plan", type=Path, required=True),
         arg("--evaluations", type=Path, nargs="+", required=True),
         arg("--tolerance", type=float, required=True),
         arg("--out-table", type=Path, required=True), arg("--out-html", type=Path, required=True))
def cmd_verify_summary(a: argparse.Namespace) -> None:
    from memcap.quantities import verify_verdict
    from memcap.stages.verify import summarize

    table = summarize(a.plan, a.evaluations, a.out_table, a.out_html, a.tolerance)
    print(table)
    print(verify_verdict(table))


@command("predict", "capacity, data/capacity ratio and membership F1 for P parameters "
                    "trained on N sequences",
         arg("--params", type=int, required=True, help="parameter count P"),
         arg("--n", type=int, required=True, help="training sequences N"),
         arg("--seq-len", type=int, default=64, help="tokens per sequence (64)"),
         arg("--bits-per-token", type=float, help="entropy per token of the data"),
         arg("--vocab-size", type=int, help="uniform random tokens over V ids"),
         arg("--precision", choices=["bf16", "fp32"], default="bf16"),
         arg("--family", choices=["gpt2", "llama", "mamba"], default="gpt2",
             help="the model family whose fitted α and law answer (gpt2)"),
         arg("--kind", choices=["synthetic", "text"],
             help="whose fitted membership law: synthetic or text (default: text when "
                  "--bits-per-token is given, else synthetic)"),
         arg("--db", type=Path, default=Path("results/memcap.duckdb")),
         arg("--paper", action="store_true", help="use the paper's constants only"))
def cmd_predict(a: argparse.Namespace) -> None:
    from memcap.stages.predict import answer

    print(answer(a.params, a.n, a.seq_len, a.bits_per_token, a.vocab_size, a.precision,
                 None if a.paper else a.db, a.kind, a.family))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="memcap", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    for name, (help_text, args, func) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text)
        for flags, kwargs in args:
            sp.add_argument(*flags, **kwargs)
        sp.set_defaults(func=func)
    return p


# the model stages log their own command line first, so a failed job reruns from its log
LOGGED = {"train", "score", "evaluate", "reference", "oracle", "audit-score", "audit-evaluate"}
# stages that run models chunk by chunk over every sample: a fixed mmap threshold keeps
# their heap from fragmenting as N grows (memcap.memory.bound_heap_growth)
INFERENCE = {"score", "evaluate", "reference", "oracle", "audit-score", "audit-evaluate"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.command in LOGGED:
        print("$ python -m memcap " + shlex.join(argv), file=sys.stderr, flush=True)
    if args.command in INFERENCE:
        from memcap.memory import bound_heap_growth

        bound_heap_growth()
    from memcap.cell import Preempted

    try:
        args.func(args)
    except Preempted as stop:
        print(f"memcap {args.command}: {stop}", file=sys.stderr)
        return Preempted.EXIT_CODE
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"memcap {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0
