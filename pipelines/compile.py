"""Compile the training pipeline to the YAML that is committed under pipelines/compiled/."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from pipelines.training import build_pipeline

COMPILED = Path(__file__).resolve().parent / "compiled" / "training.yaml"  # shipped in the wheel
HEADER_DICT = re.compile(r"^(#\s+\w+: dict \[Default: )(\{.*\})(\]\s*)$")  # '#    train_cfg: dict [Default: {...}]'


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def pipeline_file(configured: str | Path) -> Path:
    """The compiled pipeline a setting names (`monitor.pipeline_package`): the path as given when it is
    absolute or exists; else, relative and absent from the working directory (as in a pod), the same
    path under the installed packages, where the wheel ships `pipelines/compiled/training.yaml`."""
    path = Path(configured)
    if path.is_absolute() or path.is_file():
        return path
    installed = Path(__file__).resolve().parents[1] / path
    return installed if installed.is_file() else path


def sort_header(text: str) -> str:
    """Sort the dict defaults in the YAML's comment header.

    kfp prints them in protobuf map order, which changes from one process to the next; the
    YAML body is already sorted. Sorted, the same code and params.yaml give the same bytes.
    """
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if not line.startswith("#"):
            break
        match = HEADER_DICT.match(line)
        if match:
            lines[i] = f"{match.group(1)}{_sorted(ast.literal_eval(match.group(2)))!r}{match.group(3)}"
    return "".join(lines)


def compile_pipeline(out: Path = COMPILED, params_path: Path | str | None = "params.yaml") -> Path:
    """Write the pipeline spec YAML (byte-identical for the same code and params file)."""
    from kfp import compiler

    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(params_path), str(out))
    out.write_text(sort_header(out.read_text()))
    return out
