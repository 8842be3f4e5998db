"""The committed pipeline YAML is what the code and params.yaml compile to today."""

from __future__ import annotations

from pathlib import Path

import yaml

from pipelines.compile import COMPILED, compile_pipeline


def test_compiled_pipeline_is_up_to_date(tmp_path: Path) -> None:
    fresh = compile_pipeline(tmp_path / "training.yaml")
    assert COMPILED.exists(), "run `fusionrec pipeline compile` and commit pipelines/compiled/training.yaml"
    assert yaml.safe_load(fresh.read_text()) == yaml.safe_load(COMPILED.read_text()), (
        "pipelines/compiled/training.yaml is out of date: run `fusionrec pipeline compile` and commit it"
    )


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
