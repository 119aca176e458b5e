"""Config validation and the experiment grid derived from a config.

The Snakefile calls `validate_config` before it builds the DAG; every other function here is a
pure function of the validated config, used by the rules to name cells and build each job's
params (only the slice a job depends on, so an edit reruns exactly the jobs it touches).
"""

from __future__ import annotations

import copy
import math
from importlib import resources
from typing import Any

import jsonschema
import yaml

from memcap.shapes import param_count

KIND_SYNTHETIC = "synthetic"


class ConfigError(ValueError):
    """A config value is missing, unknown, of the wrong type or out of range."""


def _schema() -> dict:
    text = resources.files("memcap").joinpath("schemas/config.schema.yaml").read_text()
    return yaml.safe_load(text)


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


def validate_config(config: dict) -> dict:
    """Check `config` against the schema and the rules a schema cannot say; fill defaults.

    Returns a new dict; raises ConfigError naming the first offending key.
    """
    if not isinstance(config, dict):
        raise ConfigError(f"config must be a mapping, got {type(config).__name__}")
    schema = _schema()
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), e.path))
    if errors:
        raise ConfigError(_message(errors[0]))
    bad = _non_finite(config)
    if bad is not None:
        raise ConfigError(f"config key '{_key(bad)}': must be a finite number")
    cfg = copy.deepcopy(config)
    _fill_defaults(cfg, schema, schema)
    ids = [arch_id(a) for a in cfg["architectures"]]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ConfigError(f"config key 'architectures': {dupes} listed more than once")
    for i, arch in enumerate(cfg["architectures"]):
        head_dim = {**cfg["train"], **arch.get("train", {})}["head_dim"]
        d = arch["d_model"]
        if d > head_dim and d % head_dim:
            raise ConfigError(f"config key 'architectures[{i}].d_model': {d} is not a multiple "
                              f"of train.head_dim {head_dim}")
    verify = cfg.setdefault("verify", {})
    syn = cfg["synthetic"]
    largest = max(cfg["architectures"], key=lambda a: param_count(
        syn["vocab_size"], syn["seq_len"], a["n_layer"], a["d_model"]))
    verify.setdefault("arch", arch_id(largest))
    verify.setdefault("precision", cfg["precisions"][0])
    if verify["arch"] not in ids:
        raise ConfigError(f"config key 'verify.arch': {verify['arch']!r} is not one of the "
                          f"architectures {ids}")
    if verify["precision"] not in cfg["precisions"]:
        raise ConfigError(f"config key 'verify.precision': {verify['precision']!r} is not one "
                          f"of the precisions {cfg['precisions']}")
    return cfg


def arch_id(arch: dict) -> str:
    return f"L{arch['n_layer']}-d{arch['d_model']}"


def architecture(config: dict, arch: str) -> dict:
    for a in config["architectures"]:
        if arch_id(a) == arch:
            return a
    raise KeyError(f"architecture {arch!r} is not in the config")


def train_spec(config: dict, arch: str, precision: str, n: int) -> dict:
    """The effective training settings of one cell: global train keys + the architecture's
    overrides + its shape and data. Exactly what the cell's weights depend on."""
    a = architecture(config, arch)
    syn = config["synthetic"]
    return {
        **config["train"], **a.get("train", {}),
        "vocab_size": syn["vocab_size"], "seq_len": syn["seq_len"],
        "n_layer": a["n_layer"], "d_model": a["d_model"], "precision": precision, "n": int(n),
    }


def synthetic_cells(config: dict) -> list[dict]:
    """Every training cell of the synthetic grid, as wildcard values."""
    syn = config["synthetic"]
    return [
        {"vocab": syn["vocab_size"], "seq": syn["seq_len"], "arch": arch_id(a),
         "precision": p, "n": n}
        for a in config["architectures"] for p in config["precisions"]
        for n in syn["dataset_sizes"]
    ]


def load_config(path: str) -> dict:
    with open(path) as fh:
        return validate_config(yaml.safe_load(fh))
