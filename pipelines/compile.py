"""Compile the training pipeline to the YAML that is committed under pipelines/compiled/."""

from __future__ import annotations

from pathlib import Path

from pipelines.training import ROOT, build_pipeline

COMPILED = ROOT / "pipelines" / "compiled" / "training.yaml"


def compile_pipeline(out: Path = COMPILED, params_path: Path = ROOT / "params.yaml") -> Path:
    """Write the pipeline spec YAML (deterministic for the same code and params.yaml)."""
    from kfp import compiler

    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(params_path), str(out))
    return out
