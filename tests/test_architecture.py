"""The library holds the logic; kfp, BentoML and DVC are reached only through the adapters."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "fusionrec"
FRAMEWORKS = ("kfp", "bentoml", "dvc", "optuna")
OPTUNA_HOME = "automl"  # the one room allowed to import optuna (search space apart from training)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_library_never_imports_the_orchestration_frameworks() -> None:
    offenders = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        for name in _imports(path) & set(FRAMEWORKS):
            if name == "optuna" and rel.parts[0].removesuffix(".py") == OPTUNA_HOME:
                continue
            offenders.append(f"{rel} imports {name}")
    assert not offenders, "adapters (components/, pipelines/, serving/) own these imports: " + "; ".join(offenders)


def test_cli_help_imports_no_heavy_library() -> None:
    code = (
        "import sys; from typer.testing import CliRunner; from fusionrec.cli import app; "
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
        "heavy = [m for m in ('torch', 'transformers', 'evidently', 'bentoml', 'kfp', 'optuna') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"`fusionrec --help` imported {out}: heavy imports belong inside the functions"
