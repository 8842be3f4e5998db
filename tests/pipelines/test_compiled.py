"""The committed pipeline YAML is what the code and params.yaml compile to today."""

from __future__ import annotations

from pathlib import Path

import yaml
from pipelines.compile import COMPILED, compile_pipeline, sort_header


def test_compiled_pipeline_is_up_to_date(tmp_path: Path) -> None:
    fresh = compile_pipeline(tmp_path / "training.yaml")
    assert COMPILED.exists(), "run `fusionrec pipeline compile` and commit pipelines/compiled/training.yaml"
    assert yaml.safe_load(fresh.read_text()) == yaml.safe_load(COMPILED.read_text()), (
        "pipelines/compiled/training.yaml is out of date: run `fusionrec pipeline compile` and commit it"
    )
    assert fresh.read_text() == COMPILED.read_text(), "same spec, other bytes: recompile with `fusionrec pipeline compile`"


def test_header_defaults_are_sorted_so_the_bytes_are_stable() -> None:
    header = "# Inputs:\n#    cfg: dict [Default: {'b': 1.0, 'a': {'z': [1.0], 'y': True}}]\n#    n: int [Default: 5.0]\n"
    body = "components:\n  x: {'b': 1}\n"
    out = sort_header(header + body)
    assert out == "# Inputs:\n#    cfg: dict [Default: {'a': {'y': True, 'z': [1.0]}, 'b': 1.0}]\n#    n: int [Default: 5.0]\n" + body


def test_pipeline_fans_out_search_and_gates_package() -> None:
    spec = yaml.safe_load(COMPILED.read_text())
    tasks = spec["root"]["dag"]["tasks"]
    loops = [t for t in tasks.values() if "parameterIterator" in t]
    assert loops, "search is not fanned out with dsl.ParallelFor"
    gated = [t for t in tasks.values() if "condition" in t.get("triggerPolicy", {})]
    assert gated, "package is not behind a dsl.If promotion gate"
    components = spec["components"]
    assert any("package" in name for name in components)
    assert spec["deploymentSpec"]["executors"]["exec-train"]["container"]["image"].startswith("ghcr.io/fusionrec/fusionrec:")
