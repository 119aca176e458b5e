"""Config validation and the experiment grid derived from a config.

The Snakefile calls `validate_config` before it builds the DAG; every other function here is a
pure function of the validated config, used by the rules to name cells and build each job's
params (only the slice a job depends on, so an edit reruns exactly the jobs it touches).
"""

from __future__ import annotations

import copy
import functools
import math
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from memcap.schemes import Scheme, SchemeError
from memcap.shapes import (
    DEFAULT_FAMILY,
    OPTION_TAGS,
    Shape,
    ShapeError,
    input_widths,
    option_defaults,
)

KIND_SYNTHETIC = "synthetic"
KIND_TEXT = "text"
KINDS = (KIND_SYNTHETIC, KIND_TEXT)
GPT2_VOCAB_SIZE = 50257


class ConfigError(ValueError):
    """A config value is missing, unknown, of the wrong type or out of range."""


@functools.cache
def _schema_text() -> str:
    return resources.files("memcap").joinpath("schemas/config.schema.yaml").read_text()


def schema() -> dict:
    """The config schema: every key, its type, range and default (the only place defaults
    live)."""
    return yaml.safe_load(_schema_text())


def defaults(section: str) -> dict[str, Any]:
    """The schema's defaults of one section (e.g. "train", "runtime", "evaluate")."""
    props = schema()["properties"][section]["properties"]
    return {k: copy.deepcopy(v["default"]) for k, v in props.items() if "default" in v}


def _with_overrides(sch: dict) -> dict:
    """Fill `$defs/train_overrides` from `train`: every train key, without its default, except
    the ones marked `x-global` (the saturation rule is one rule for the whole grid). A key added
    to `train` is thus overridable per architecture and in `text.train` with no second entry."""
    train = sch["properties"]["train"]["properties"]
    sch["$defs"]["train_overrides"]["properties"] = {
        k: {kk: vv for kk, vv in v.items() if kk != "default"}
        for k, v in train.items() if not v.get("x-global")}
    return sch


def _key(path: Any) -> str:
    parts = [f"[{p}]" if isinstance(p, int) else f".{p}" for p in path]
    return "".join(parts).lstrip(".") or "<top level>"


def _message(err: jsonschema.ValidationError) -> str:
    key = _key(err.absolute_path)
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed))
        where = f"config key '{key}'" if err.absolute_path else "config"
        return f"{where}: unknown key(s) {extra}; allowed keys are {allowed}"
    if err.validator == "required":
        return f"config key '{key}': {err.message}"
    if err.validator == "minItems" and err.validator_value == 1:
        return f"config key '{key}': the list is empty; give at least one value"
    if err.validator == "uniqueItems":
        return f"config key '{key}': values must be unique, got {err.instance}"
    return f"config key '{key}': {err.message}"


def _non_finite(value: Any, path: tuple = ()) -> tuple | None:
    """The path of the first NaN or infinite number in `value` (JSON schema bounds let NaN
    through: every comparison with it is false)."""
    if isinstance(value, float) and not math.isfinite(value):
        return path
    items = value.items() if isinstance(value, dict) else (
        enumerate(value) if isinstance(value, list) else ())
    for key, item in items:
        found = _non_finite(item, (*path, key))
        if found is not None:
            return found
    return None


def _fill_defaults(instance: Any, schema: dict, root: dict) -> None:
    if "$ref" in schema:
        schema = root["$defs"][schema["$ref"].split("/")[-1]]
    if isinstance(instance, dict):
        for name, sub in schema.get("properties", {}).items():
            if name not in instance and "default" in sub:
                instance[name] = copy.deepcopy(sub["default"])
            if name in instance:
                _fill_defaults(instance[name], sub, root)
    elif isinstance(instance, list) and "items" in schema:
        for item in instance:
            _fill_defaults(item, schema["items"], root)


def _check_schemes(cfg: dict) -> None:
    """Every quantization scheme exists and fits every architecture it quantizes."""
    for key, names in (("quantize.schemes", cfg["quantize"]["schemes"]),
                       ("audit.quantize", cfg["audit"].get("quantize", []))):
        for i, name in enumerate(names):
            try:
                scheme = Scheme.parse(name)
                if key == "audit.quantize":
                    scheme.check_kind("audit")
                else:
                    for kind in KINDS:
                        if cfg[kind]["enabled"]:
                            scheme.check_kind(kind)
                            for a in architectures(cfg, kind):
                                for width in input_widths(arch_shape(cfg, kind, a)):
                                    scheme.check_width(width, f"{kind} architecture "
                                                       f"{arch_id(a)}")
            except SchemeError as err:
                raise ConfigError(f"config key '{key}[{i}]': {err}") from None


def validate_config(config: dict) -> dict:
    """Check `config` against the schema and the rules a schema cannot say; fill defaults.

    Returns a new dict; raises ConfigError naming the first offending key.
    """
    if not isinstance(config, dict):
        raise ConfigError(f"config must be a mapping, got {type(config).__name__}")
    sch = _with_overrides(schema())
    validator = jsonschema.Draft202012Validator(sch)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), e.path))
    if errors:
        raise ConfigError(_message(errors[0]))
    bad = _non_finite(config)
    if bad is not None:
        raise ConfigError(f"config key '{_key(bad)}': must be a finite number")
    cfg = copy.deepcopy(config)
    _fill_defaults(cfg, sch, sch)
    text = cfg["text"]
    audit = cfg["audit"]
    if not (cfg["synthetic"]["enabled"] or text["enabled"] or audit["enabled"]):
        raise ConfigError("config keys 'synthetic.enabled' and 'text.enabled' are both false "
                          "and no audit is configured: nothing to run")
    if audit["enabled"]:
        for key in ("targets", "members", "nonmembers"):
            if key not in audit:
                raise ConfigError(f"config key 'audit.{key}' is required when the audit is "
                                  "enabled")
    if "reference" in audit and "references" in audit:
        raise ConfigError("config keys 'audit.reference' and 'audit.references': give one "
                          "(references: one per tokenizer group)")
    _check_architectures(cfg, "architectures", cfg["architectures"], cfg["train"])
    if text["enabled"]:
        for key in ("dataset_sizes", "architectures"):
            if key not in text:
                raise ConfigError(f"config key 'text.{key}' is required when text.enabled is "
                                  "true")
        if text["source"] == "local" and "local_path" not in text:
            raise ConfigError("config key 'text.local_path' is required when text.source is "
                              "local (a folder or file of .txt, .jsonl or .parquet documents)")
        _check_architectures(cfg, "text.architectures", text["architectures"],
                             {**cfg["train"], **text.get("train", {})})
        for i, arch in enumerate(text["architectures"]):
            if "dataset_sizes" in arch:
                raise ConfigError(f"config key 'text.architectures[{i}].dataset_sizes': text "
                                  "architectures share text.dataset_sizes (each reference is "
                                  "trained on its largest N); give N per architecture on "
                                  "synthetic data only")
        if "oracle" in text:
            _check_oracle(cfg, text["oracle"])
    _check_schemes(cfg)
    verify = cfg.setdefault("verify", {})
    ids = [arch_id(a) for a in cfg["architectures"]]
    largest = max(cfg["architectures"],
                  key=lambda a: arch_shape(cfg, KIND_SYNTHETIC, a).params)
    verify.setdefault("arch", arch_id(largest))
    verify.setdefault("precision", cfg["precisions"][0])
    if verify["arch"] not in ids:
        raise ConfigError(f"config key 'verify.arch': {verify['arch']!r} is not one of the "
                          f"architectures {ids}")
    if verify["precision"] not in cfg["precisions"]:
        raise ConfigError(f"config key 'verify.precision': {verify['precision']!r} is not one "
                          f"of the precisions {cfg['precisions']}")
    return cfg


def _check_architectures(cfg: dict, key: str, archs: list[dict], train: dict) -> None:
    for i, arch in enumerate(archs):
        head_dim = {**train, **arch.get("train", {})}["head_dim"]
        options = family_options(arch)
        for option in options:
            if _option_families()[option] != arch["family"]:
                raise ConfigError(f"config key '{key}[{i}].{option}': an option of the "
                                  f"{_option_families()[option]} family, but this "
                                  f"architecture's family is {arch['family']}")
        try:
            Shape(1, 1, arch["n_layer"], arch["d_model"], head_dim, arch["family"], options)
        except ShapeError as err:
            raise ConfigError(f"config key '{key}[{i}].d_model': {err} (family "
                              f"{arch['family']}, train.head_dim {head_dim})") from None
    ids = [arch_id(a) for a in archs]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ConfigError(f"config key '{key}': {dupes} listed more than once")


@functools.cache
def _option_families() -> dict[str, str]:
    """Each family option of an architecture entry (marked x-family in the schema) and the
    family that reads it."""
    props = schema()["$defs"]["architectures"]["items"]["properties"]
    return {k: v["x-family"] for k, v in props.items() if "x-family" in v}


def family_options(arch: dict) -> dict[str, Any]:
    """The family options an architecture entry gives (keys marked x-family in the schema)."""
    return {k: v for k, v in arch.items() if k in _option_families()}


def arch_shape(config: dict, kind: str, arch: dict) -> Shape:
    """The model of an architecture entry on a kind's data (memcap.shapes.Shape)."""
    vocab, seq = shape(config, kind)
    train = {**config["train"], **(config["text"].get("train", {}) if kind == KIND_TEXT
                                   else {}), **arch.get("train", {})}
    return Shape(vocab, seq, arch["n_layer"], arch["d_model"], train["head_dim"],
                 arch.get("family", DEFAULT_FAMILY), family_options(arch))


def _check_oracle(cfg: dict, oracle: str) -> None:
    arch, precision, n, seed = oracle.split(":")
    text = cfg["text"]
    problems = []
    if arch not in [arch_id(a) for a in text["architectures"]]:
        problems.append(f"{arch} is not in text.architectures")
    if precision not in cfg["precisions"]:
        problems.append(f"{precision} is not in precisions")
    if int(n[1:]) not in text["dataset_sizes"]:
        problems.append(f"{n[1:]} is not in text.dataset_sizes")
    if int(seed[1:]) not in cfg["seeds"]:
        problems.append(f"seed {seed[1:]} is not in seeds")
    if problems:
        raise ConfigError(f"config key 'text.oracle': {oracle!r} names no run of the text grid: "
                          + "; ".join(problems))


def arch_id(arch: dict) -> str:
    """L<layers>-d<width>, e.g. L2-d128, for GPT-2; other families lead with their name and
    end with their options that differ from the defaults: llama-L1-d32, llama-L1-d32-untied,
    mamba-L2-d64-n8 (state size 8)."""
    family, d = arch.get("family", DEFAULT_FAMILY), arch["d_model"]
    core = f"L{arch['n_layer']}-d{d}"
    if family == DEFAULT_FAMILY:
        return core
    defaults = option_defaults(family, d)
    tags = []
    for key, default in defaults.items():
        value = arch.get(key, default)
        if value != default:
            tags.append("untied" if key == "tie_embeddings" else f"{OPTION_TAGS[key]}{value}")
    return "-".join([family, core, *tags])


def run_id(kind: str, vocab: int, seq: int, arch: str, precision: str, n: int, seed: int) -> str:
    """A compact, unique, readable id: synthetic:V64:S32:L1-d16:fp32:n128:s0."""
    return f"{kind}:V{vocab}:S{seq}:{arch}:{precision}:n{n}:s{seed}"


def architectures(config: dict, kind: str) -> list[dict]:
    return config["text"]["architectures"] if kind == KIND_TEXT else config["architectures"]


def architecture(config: dict, arch: str, kind: str = KIND_SYNTHETIC) -> dict:
    for a in architectures(config, kind):
        if arch_id(a) == arch:
            return a
    raise KeyError(f"architecture {arch!r} is not in the config's {kind} architectures")


def text_vocab_size(config: dict) -> int:
    text = config["text"]
    return GPT2_VOCAB_SIZE if text["tokenizer"] == "gpt2" else text["bpe_vocab_size"]


def shape(config: dict, kind: str) -> tuple[int, int]:
    """(vocabulary size, sequence length) of a kind's data."""
    if kind == KIND_TEXT:
        return text_vocab_size(config), config["text"]["seq_len"]
    return config["synthetic"]["vocab_size"], config["synthetic"]["seq_len"]


@functools.cache
def budget_keys() -> frozenset[str]:
    """The train keys that only set a cell's step count (marked x-budget in the schema)."""
    return frozenset(k for k, v in schema()["properties"]["train"]["properties"].items()
                     if v.get("x-budget"))


@functools.cache
def conditional_keys() -> dict[str, tuple[dict[str, Any], Any]]:
    """The train keys read only by cells with certain settings (marked x-when {KEY: VALUE} in
    the schema, e.g. the plateau schedule's keys): key -> (condition, default)."""
    return {k: (v["x-when"], v["default"])
            for k, v in schema()["properties"]["train"]["properties"].items()
            if "x-when" in v}


def budget_steps(train: dict, n: int, params: int, seq_len: int) -> int:
    """A cell's optimizer steps from the budget keys of its `train` settings: `steps`, raised
    where needed so that each of its n samples is seen at least min_passes times and the
    model sees at least tokens_per_param·params tokens (batch: min(batch_size, n) sequences of
    seq_len tokens a step), then capped at max_steps (0: no cap). Under the plateau schedule
    this is the cell's step cap; a plateau ends the run sooner."""
    batch = min(train["batch_size"], n)
    steps = max(train["steps"], math.ceil(train["min_passes"] * n / batch),
                math.ceil(train["tokens_per_param"] * params / (batch * seq_len)))
    return min(steps, train["max_steps"]) if train["max_steps"] else steps


def train_spec(config: dict, kind: str, arch: str, precision: str, n: int) -> dict:
    """The effective training settings of one cell: global train keys + the text section's
    overrides (text cells) + the architecture's overrides + its shape and data, with the step
    count resolved from the budget keys (budget_steps). Exactly what the cell's weights
    depend on."""
    a = architecture(config, arch, kind)
    vocab, seq = shape(config, kind)
    text_train = config["text"].get("train", {}) if kind == KIND_TEXT else {}
    train = {**config["train"], **text_train, **a.get("train", {})}
    model = arch_shape(config, kind, a)
    steps = budget_steps(train, int(n), model.params, seq)
    # keys of a setting the cell does not use (another schedule, optimizer) cannot change its
    # weights: their defaults
    unused = {k: default for k, (when, default) in conditional_keys().items()
              if any(train[key] != value for key, value in when.items())}
    return {
        **{k: v for k, v in train.items() if k not in budget_keys()}, **unused, "steps": steps,
        "vocab_size": vocab, "seq_len": seq,
        "n_layer": a["n_layer"], "d_model": a["d_model"], "family": model.family,
        "options": model.options, "precision": precision, "n": int(n),
    }


def cells(config: dict, kind: str) -> list[dict]:
    """Every training cell of a kind's grid, as wildcard values ([] when it is disabled)."""
    if not config[kind]["enabled"]:
        return []
    vocab, seq = shape(config, kind)
    return [
        {"kind": kind, "vocab": vocab, "seq": seq, "arch": arch_id(a), "precision": p, "n": n}
        for a in architectures(config, kind) for p in config["precisions"]
        for n in a.get("dataset_sizes", config[kind]["dataset_sizes"])
    ]


def merge_configs(configs: list[dict]) -> dict:
    """Config mappings merged in order, as Snakemake merges --configfile over the Snakefile's
    config.yaml: mappings key by key, everything else (lists) replaced whole."""
    def merge(base: dict, over: dict) -> dict:
        out = dict(base)
        for key, value in over.items():
            out[key] = (merge(out[key], value) if isinstance(value, dict)
                        and isinstance(out.get(key), dict) else copy.deepcopy(value))
        return out

    merged: dict = {}
    for c in configs:
        merged = merge(merged, c or {})
    return merged


def load_config(*paths: str | Path) -> dict:
    """The config files merged in order (merge_configs), validated."""
    configs = []
    for path in paths:
        with open(path) as fh:
            configs.append(yaml.safe_load(fh))
    return validate_config(merge_configs(configs))
