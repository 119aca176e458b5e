"""The cell contract: what every model stage (train, score, evaluate) is handed, as one value.

A cell is one (kind, architecture, precision, N) of the grid with all its seeds: the seeds
train together as one packed model. `Cell` names it once: its coordinates, its training spec,
its seeds, and the paths of its inputs and outputs. The rules build it from the config
(`build_cell`) and pass it as JSON; identity (run ids, arch id, kind) comes from it and is never
parsed back from paths. Torch-free: the DAG build imports it.

`TrainSpec` is everything that determines a cell's trained weights: the data and model shape
plus every key of the config's `train:` section. Its training fields are generated from the
config schema, so a key added to the schema's `train` reaches every cell, its checkpoint
identity and its run records with no edit here; defaults live only in the schema.

`Runtime` holds the execution settings (device, threads, intervals, compile, CUDA graphs): they
change no result, so the rules pass them as resources, and editing them reruns nothing.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from memcap import config as cfg
from memcap import paths
from memcap.quantities import memorizable_bits
from memcap.shapes import DEFAULT_FAMILY, Shape, resolve_options

# data and model shape (the family and its resolved options: memcap.shapes); the training
# settings follow from the schema
SHAPE_FIELDS: tuple[tuple[str, type], ...] = (
    ("vocab_size", int), ("seq_len", int), ("n_layer", int), ("d_model", int),
    ("family", str), ("options", dict), ("precision", str), ("n", int))
# A gpt2 cell's records leave out its family and (empty) options: they read as they did
# before families existed, so a gpt2 grid's rules and checkpoints are unchanged.
FAMILY_FIELDS = ("family", "options")
_JSON_TYPES = {"integer": int, "number": float, "boolean": bool, "string": str}


class _SpecMethods:
    """What follows from a spec (shared by every generated TrainSpec class)."""

    def __post_init__(self) -> None:
        for key in ("vocab_size", "seq_len", "n_layer", "d_model", "n", "batch_size",
                    "eval_every", "eval_samples", "head_dim"):
            if getattr(self, key) < 1:
                raise ValueError(f"train spec {key} must be positive, got {getattr(self, key)}")
        if self.steps < 0:
            raise ValueError(f"train.steps must be >= 0, got {self.steps}")
        if not (math.isfinite(self.lr) and self.lr >= 0):
            raise ValueError(f"train.lr must be a finite number >= 0, got {self.lr}")
        # options resolved (every option of the family, defaults filled in); a family,
        # option or width no model can take raises here
        object.__setattr__(self, "options",
                           resolve_options(self.family, self.d_model, dict(self.options)))
        self.shape  # noqa: B018

    @property
    def shape(self) -> Shape:
        """The model: family, data shape, size and options (memcap.shapes.Shape)."""
        return Shape(self.vocab_size, self.seq_len, self.n_layer, self.d_model, self.head_dim,
                     self.family, self.options)

    @property
    def params(self) -> int:
        return self.shape.params

    @property
    def batch(self) -> int:
        """Sequences per step and model: the batch size, or the whole dataset if smaller."""
        return min(self.batch_size, self.n)

    @property
    def memorizable_bits(self) -> float:
        return memorizable_bits(self.n, self.seq_len, self.vocab_size)


def spec_class(schema: dict) -> type:
    """The TrainSpec dataclass for a config schema: the shape fields, then one field per key
    of the schema's `train` section (those marked x-budget aside: they are resolved into
    `steps`), none with a default."""
    train = schema["properties"]["train"]["properties"]
    fields = [*SHAPE_FIELDS, *[(key, _JSON_TYPES.get(prop.get("type"), str))
                               for key, prop in train.items() if not prop.get("x-budget")]]
    return dataclasses.make_dataclass(
        "TrainSpec", fields, bases=(_SpecMethods,), frozen=True,
        namespace={"__doc__": "Everything that determines a cell's trained weights (and "
                              "nothing that does not): the shape and every train: key.",
                   "__module__": __name__})


TrainSpec = spec_class(cfg.schema())


def spec_record(spec: TrainSpec) -> dict[str, Any]:
    """A spec as the JSON the rules pass and checkpoints compare: a gpt2 spec without its
    family fields (FAMILY_FIELDS)."""
    record = dataclasses.asdict(spec)
    if spec.family == DEFAULT_FAMILY:
        for key in FAMILY_FIELDS:
            del record[key]
    return record


def spec_from_record(record: dict[str, Any]) -> TrainSpec:
    """A spec from spec_record's JSON or a run record (extra keys ignored); a record without
    a family is a gpt2's."""
    values = {"family": DEFAULT_FAMILY, "options": {}, **record}
    return TrainSpec(**{f.name: values[f.name] for f in dataclasses.fields(TrainSpec)})


def make_spec(**values: Any) -> TrainSpec:
    """A TrainSpec from the schema's `train` defaults and `values` (for scripts and tests that
    build cells outside the workflow)."""
    budget = cfg.budget_keys()
    return TrainSpec(**{k: v for k, v in {**cfg.defaults("train"), "family": DEFAULT_FAMILY,
                                          "options": {}, **values}.items()
                        if k not in budget})


@dataclass(frozen=True)
class Cell:
    """One training cell: all seeds of (kind, architecture, precision, N), with its files.

    Per seed (same order as `seeds`): its training data, its held-out data and its run folder.
    `references` maps each text reference to its scores of the pool (empty for synthetic data:
    the reference is the uniform distribution); `tokenizer` is the tokenizer folder of text
    cells (top samples are decoded with it). Paths may be given as Path objects (tests and
    scripts outside the workflow build cells directly); they are kept as strings."""

    kind: str
    spec: TrainSpec
    seeds: tuple[int, ...]
    train_data: tuple[str, ...]
    heldout_data: tuple[str, ...]
    run_dirs: tuple[str, ...]
    checkpoint: str
    references: dict[str, str] = field(default_factory=dict)
    tokenizer: str | None = None
    scheme: str | None = None
    trained_dirs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        put("seeds", tuple(int(s) for s in self.seeds))
        for name in ("train_data", "heldout_data", "run_dirs", "trained_dirs"):
            put(name, tuple(str(p) for p in getattr(self, name)))
        put("checkpoint", str(self.checkpoint))
        put("references", {str(k): str(v) for k, v in self.references.items()})
        put("tokenizer", None if self.tokenizer is None else str(self.tokenizer))
        if self.kind not in cfg.KINDS:
            raise ValueError(f"cell kind must be one of {cfg.KINDS}, got {self.kind!r}")
        counts = {len(self.seeds), len(self.train_data), len(self.heldout_data),
                  len(self.run_dirs)}
        if len(counts) != 1:
            raise ValueError("a cell needs one train file, one held-out file and one run folder "
                             f"per seed; got {len(self.seeds)} seeds, {len(self.train_data)} "
                             f"train files, {len(self.heldout_data)} held-out files and "
                             f"{len(self.run_dirs)} run folders")
        if (self.scheme is None) != (not self.trained_dirs) or (
                self.trained_dirs and len(self.trained_dirs) != len(self.seeds)):
            raise ValueError("a quantized cell names its scheme and one trained run folder per "
                             f"seed; got scheme {self.scheme!r} and {len(self.trained_dirs)} "
                             "trained run folders")

    @property
    def arch(self) -> str:
        s = self.spec
        return cfg.arch_id({"family": s.family, "n_layer": s.n_layer, "d_model": s.d_model,
                            **s.options})

    @property
    def run_ids(self) -> list[str]:
        s, tail = self.spec, f"+{self.scheme}" if self.scheme else ""
        return [cfg.run_id(self.kind, s.vocab_size, s.seq_len, self.arch, s.precision, s.n, seed)
                + tail for seed in self.seeds]

    @property
    def label(self) -> str:
        """How progress lines name the cell: 'synthetic L1-d16 fp32 n=128' (+ ' int4')."""
        return (f"{self.kind} {self.arch} {self.spec.precision} n={self.spec.n}"
                + (f" {self.scheme}" if self.scheme else ""))

    def identity(self, seed: int) -> dict[str, Any]:
        """What a run record says of its run: ids, coordinates and the whole spec."""
        m = self.seeds.index(seed)
        return {**dataclasses.asdict(self.spec), "run_id": self.run_ids[m], "kind": self.kind,
                "arch": self.arch, "seed": seed, "params": self.spec.params}

    def quantized(self, scheme: str) -> Cell:
        """This (trained) cell's runs with their weights quantized by `scheme`."""
        s = self.spec
        coords = {"kind": self.kind, "vocab": s.vocab_size, "seq": s.seq_len, "arch": self.arch,
                  "precision": s.precision, "n": s.n, "scheme": scheme}
        return dataclasses.replace(
            self, scheme=scheme, trained_dirs=self.run_dirs,
            run_dirs=tuple(paths.QUANTIZED.format(**coords, seed=seed) for seed in self.seeds))

    def to_json(self) -> str:
        record = {**dataclasses.asdict(self), "spec": spec_record(self.spec)}
        if self.scheme is None:  # a trained cell's JSON (its rules' params) as it always was
            del record["scheme"], record["trained_dirs"]
        return json.dumps(record, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Cell:
        try:
            record = json.loads(text)
            return cls(**{**record, "spec": spec_from_record(record["spec"]),
                          "trained_dirs": tuple(record.get("trained_dirs", ()))})
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"not a cell record ({err}); expected the JSON the rules pass "
                             "(fields: " + ", ".join(f.name for f in dataclasses.fields(cls))
                             + ")") from None


def build_cell(config: dict, kind: str, arch: str, precision: str, n: int) -> Cell:
    """The cell of a validated config at these coordinates, with the paths of the results
    tree (memcap.paths)."""
    spec = TrainSpec(**cfg.train_spec(config, kind, arch, precision, int(n)))
    seeds = tuple(config["seeds"])
    where = {"kind": kind, "vocab": spec.vocab_size, "seq": spec.seq_len}
    heldout = config[kind]["heldout"]
    coords = {**where, "arch": arch, "precision": precision, "n": spec.n}
    text = kind == cfg.KIND_TEXT
    return Cell(
        kind=kind, spec=spec, seeds=seeds,
        train_data=tuple(paths.DATA.format(**where, seed=s, split="train", n=spec.n)
                         for s in seeds),
        heldout_data=tuple(paths.DATA.format(**where, seed=s, split="heldout", n=heldout)
                           for s in seeds),
        run_dirs=tuple(paths.RUN.format(**coords, seed=s) for s in seeds),
        checkpoint=paths.CHECKPOINT.format(**coords),
        references={"same-arch": paths.SAME_ARCH.format(**where, arch=arch, precision=precision),
                    "oracle": paths.ORACLE.format(**where)} if text else {},
        tokenizer=paths.TOKENIZER if text else None)


class Preempted(Exception):
    """A model stage stopped on a signal (a scheduler preempting it) after saving its
    checkpoint: the command exits with EXIT_CODE (128 + SIGTERM) and a rerun resumes."""

    EXIT_CODE = 143


@dataclass(frozen=True)
class Runtime:
    """Execution settings of a model stage (the config's `device` and `runtime:`)."""

    device: str
    threads: int
    log_every: int
    checkpoint_every: int
    checkpoint_minutes: float
    score_batch_size: int
    compile: str  # auto | true | false
    cuda_graphs: bool

    @classmethod
    def defaults(cls, **overrides: Any) -> Runtime:
        """The schema's execution defaults, with overrides (scripts and tests)."""
        device = cfg.schema()["properties"]["device"]["default"]
        return cls(**{**cfg.defaults("runtime"), "device": device, **overrides}).normalised()

    @classmethod
    def from_config(cls, config: dict) -> Runtime:
        rt = config["runtime"]
        return cls(device=config["device"], **{
            f.name: rt[f.name] for f in dataclasses.fields(cls) if f.name != "device"}
        ).normalised()

    def normalised(self) -> Runtime:
        """compile as 'auto' / 'true' / 'false' (YAML gives booleans), cuda_graphs a bool."""
        return dataclasses.replace(self, compile=str(self.compile).lower(),
                                   cuda_graphs=str(self.cuda_graphs).lower() in ("1", "true"))

    @classmethod
    def parse(cls, values: dict[str, str]) -> Runtime:
        """From command-line strings (every field given)."""
        types = {f.name: {"int": int, "float": float}.get(f.type, str)
                 for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: types[k](v) for k, v in values.items()}).normalised()
        except ValueError as err:
            raise ValueError(f"runtime settings {values}: {err}") from None

    @property
    def compile_model(self) -> bool | None:
        """torch.compile the training loss: True / False, or None to decide by device."""
        return None if self.compile == "auto" else self.compile == "true"

    def resources(self) -> dict[str, str | int]:
        """As Snakemake resources (strings and integers), threads aside (a rule's `threads`)."""
        return {f.name: int(v) if isinstance(v, bool) else v
                for f in dataclasses.fields(self) if f.name != "threads"
                for v in [getattr(self, f.name)]}

    @classmethod
    def shell_args(cls) -> str:
        """The runtime options of `memcap <stage>`, filled from a rule's resources."""
        return " ".join("--threads {threads}" if f.name == "threads" else
                        f"--{f.name.replace('_', '-')} {{resources.{f.name}}}"
                        for f in dataclasses.fields(cls))
