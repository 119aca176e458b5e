"""The house rules: three layers, one folder each (stages/, models/, the library below them),
read from the folders; stages never import each other and name no family; the figures and the
DAG build load neither torch nor duckdb; a config key is declared once, in the schema."""

from __future__ import annotations

import ast
import copy
import dataclasses
import re
import subprocess
import sys

import pytest
import yaml

from conftest import REPO
from memcap import config
from memcap.cell import Cell, Runtime, TrainSpec, spec_class

PACKAGE = REPO / "src/memcap"
ENTRY = {"memcap.cli", "memcap.__main__", "memcap"}
# the layers, read from the folders: memcap/stages/ (what the rules run), memcap/models/ (one
# module per family behind memcap.models.base), and the library (everything else) below them
LAYERS = ("library", "models", "stages")


def module_name(path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ("stages", "models") else "library"


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
STAGES = sorted(n for n in MODULES if layer(n) == "stages" and n != "memcap.stages")
FAMILIES = sorted(n for n in MODULES if layer(n) == "models"
                  and n.rsplit(".", 1)[-1] not in ("models", "base", "causal_lm"))


def memcap_imports(path) -> set[str]:
    """The memcap modules a file imports, at top level or inside functions, by full name."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("memcap"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names
                         if f"{node.module}.{a.name}" in MODULES)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("memcap."))
    return found


def test_every_command_a_rule_runs_is_a_stage_and_every_stage_a_command():
    """The rules run `python -m memcap <command>`; each such command's function comes from a
    module in stages/, and every module there is some command's (read from the rules and the
    CLI, not from a list kept here)."""
    import inspect

    from memcap import cli

    ruled = {m for f in (REPO / "rules").glob("*.smk")
             for m in re.findall(r"python -m memcap ([\w-]+)", f.read_text())}
    assert len(ruled) >= 15, ruled
    of_command = {name: memcap_imports_of(inspect.getsource(func))
                  for name, (_, _, func) in cli.COMMANDS.items()}
    for command in ruled:
        stages = {m for m in of_command[command] if layer(m) == "stages"}
        assert stages, f"`memcap {command}` (run by a rule) runs no module of stages/"
    assert set(STAGES) <= set().union(*of_command.values()), \
        set(STAGES) - set().union(*of_command.values())


def test_the_families_are_the_modules_of_models():
    from memcap.models import FAMILIES as REGISTERED
    from memcap.shapes import FAMILIES as DECLARED

    assert [n.rsplit(".", 1)[-1] for n in FAMILIES] == sorted(REGISTERED) == sorted(DECLARED)


def memcap_imports_of(source: str) -> set[str]:
    return {node.module for node in ast.walk(ast.parse(source.strip()))
            if isinstance(node, ast.ImportFrom) and node.module
            and node.module.startswith("memcap")}


@pytest.mark.parametrize("name", sorted(set(MODULES) - ENTRY))
def test_a_module_imports_only_layers_below_it(name):
    """stages import the library and the models, never another stage; the models import the
    library, never a stage; a family module imports no other family; the library imports
    neither models nor stages."""
    mine = layer(name)
    for other in memcap_imports(MODULES[name]) - {name}:
        theirs = layer(other)
        assert LAYERS.index(theirs) < LAYERS.index(mine) or theirs == mine != "stages", \
            f"{name} ({mine}) imports {other} ({theirs})"
        if name in FAMILIES:
            assert other not in FAMILIES, f"family {name} imports family {other}"


def test_the_stages_and_trainer_name_no_family():
    """The trainer and the stages know no family: they build and load models through
    memcap.models and never import a family module or name a family class."""
    for name in STAGES:
        source = MODULES[name].read_text()
        assert not memcap_imports(MODULES[name]) & set(FAMILIES), name
        for cls in ("PackedGPT", "PackedLlama", "PackedMamba"):
            assert cls not in source, f"{name} names {cls}"


def loaded(imports: str) -> list[str]:
    """Which of torch and duckdb a fresh interpreter loads for `imports`."""
    code = (f"{imports}\nimport sys\n"
            "print(sorted(m for m in ('torch', 'duckdb') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=REPO)
    return eval(out.stdout.strip())


def test_figures_load_neither_torch_nor_duckdb():
    assert loaded("import memcap.stages.figures") == []


def test_the_dag_build_loads_neither_torch_nor_duckdb():
    sources = [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]
    statements = [m.group(0) for f in sources for m in re.finditer(
        r"(?m)^(from memcap[\w.]* import \([^)]*\)|from memcap[\w.]* import .*|import memcap.*)$",
        f.read_text())]
    assert len(statements) >= 5, statements  # the Snakefile and common.smk import the library
    assert loaded("\n".join(statements)) == []


def test_train_spec_is_the_shape_and_the_schemas_train_section():
    train = config.schema()["properties"]["train"]["properties"]
    fields = [f.name for f in dataclasses.fields(TrainSpec)]
    # budget keys (x-budget) are resolved into `steps`, not fields of the spec
    assert fields == ["vocab_size", "seq_len", "n_layer", "d_model", "family", "options",
                      "precision", "n",
                      *[k for k, v in train.items() if not v.get("x-budget")]]
    assert config.budget_keys() == {"min_passes", "tokens_per_param", "max_steps"}
    # defaults live in the schema only: no record carries one of its own
    for record in (TrainSpec, Runtime):
        assert all(f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                   for f in dataclasses.fields(record)), record


def test_a_new_train_key_is_declared_in_the_schema_alone(monkeypatch):
    """Adding `train.label_smoothing` to the schema is all the workflow needs: the config
    accepts it globally and as a per-architecture override, the cell's spec (its rerun trigger,
    checkpoint identity and run record) carries it, defaults included."""
    schema = config.schema()
    schema["properties"]["train"]["properties"]["label_smoothing"] = {
        "type": "number", "minimum": 0, "maximum": 1, "default": 0.0}
    monkeypatch.setattr(config, "schema", lambda: copy.deepcopy(schema))
    raw = yaml.safe_load((REPO / "config.yaml").read_text())
    raw["architectures"][0]["train"] = {"label_smoothing": 0.1}
    cfg = config.validate_config(raw)
    assert cfg["train"]["label_smoothing"] == 0.0  # the schema's default, filled in
    spec_cls = spec_class(schema)
    first, other = (spec_cls(**config.train_spec(cfg, "synthetic", arch, "fp32", 16))
                    for arch in ("L1-d8", "L1-d16"))
    assert (first.label_smoothing, other.label_smoothing) == (0.1, 0.0)
    raw["train"]["label_smoothing"] = 2.0
    with pytest.raises(config.ConfigError, match="train.label_smoothing"):
        config.validate_config(raw)


def test_the_cell_round_trips_through_json():
    cfg = config.load_config(str(REPO / "config.yaml"))
    from memcap.cell import build_cell

    for kind, arch in (("synthetic", "L1-d8"), ("text", "L1-d16")):
        cell = build_cell(cfg, kind, arch, "fp32", 64)
        assert Cell.from_json(cell.to_json()) == cell
        assert cell.run_ids[0] == config.run_id(kind, cell.spec.vocab_size, cell.spec.seq_len,
                                                arch, "fp32", 64, cfg["seeds"][0])
    with pytest.raises(ValueError, match="not a cell record"):
        Cell.from_json('{"kind": "synthetic"}')
