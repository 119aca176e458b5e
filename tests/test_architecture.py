"""The house rules: stages sit on a library layer and never import each other; the figures and
the DAG build load neither torch nor duckdb; a config key is declared once, in the schema."""

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
# modules a rule runs as a stage (`memcap <stage>`); everything else is the library below them
STAGES = {"data", "text", "train", "score", "evaluate", "quantize", "reference", "aggregate",
          "laws", "figures", "report", "verify", "predict"}
ENTRY = {"cli", "__main__", "__init__"}


def memcap_imports(path) -> set[str]:
    """The memcap modules a file imports, at top level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("memcap"):
            parts = node.module.split(".")
            if len(parts) > 1:
                found.add(parts[1])
            else:  # from memcap import x
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names
                         if a.name.startswith("memcap."))
    return found


def modules() -> dict[str, object]:
    return {p.stem: p for p in PACKAGE.glob("*.py")} | {
        p.parent.name: p for p in PACKAGE.glob("*/__init__.py")}


def test_every_module_is_a_stage_or_library():
    assert STAGES <= set(modules()), STAGES - set(modules())


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_no_stage_imports_another_stage(stage):
    imported = memcap_imports(PACKAGE / f"{stage}.py")
    assert not (imported & STAGES) - {stage}, f"memcap.{stage} imports stage(s) " \
        f"{sorted((imported & STAGES) - {stage})}"


def test_the_library_imports_no_stage():
    for name, path in modules().items():
        if name in STAGES or name in ENTRY:
            continue
        files = [path] if path.name != "__init__.py" else list(path.parent.glob("*.py"))
        for f in files:
            assert not memcap_imports(f) & STAGES, f"library module {f.name} imports a stage"


def loaded(imports: str) -> list[str]:
    """Which of torch and duckdb a fresh interpreter loads for `imports`."""
    code = (f"{imports}\nimport sys\n"
            "print(sorted(m for m in ('torch', 'duckdb') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=REPO)
    return eval(out.stdout.strip())


def test_figures_load_neither_torch_nor_duckdb():
    assert loaded("import memcap.figures") == []


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
    assert fields == ["vocab_size", "seq_len", "n_layer", "d_model", "precision", "n",
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
