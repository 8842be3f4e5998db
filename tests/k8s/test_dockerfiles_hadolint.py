"""hadolint passes on every Dockerfile in the repository (no finding at any level)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from k8s_manifests import REPO, tool

SKIP_DIRS = {".git", ".venv", "venv", "node_modules", "work", ".dvc", ".bentoml", "bentos", "build"}


def dockerfiles() -> list[Path]:
    """Dockerfile, Dockerfile.<x> and <x>.Dockerfile outside build outputs and environments."""
    found = []
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]  # never descend into environments
        for name in files:
            if name.endswith(".dockerignore"):
                continue
            if name == "Dockerfile" or name.startswith("Dockerfile.") or name.endswith(".Dockerfile"):
                found.append(Path(root) / name)
    return sorted(found)


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("hadolint"), "--no-color", "--failure-threshold", "style", str(path)],
        capture_output=True, text=True, timeout=60,
    )


def test_the_pipeline_dockerfile_is_found() -> None:
    assert REPO / "components" / "Dockerfile" in dockerfiles()


@pytest.mark.parametrize("path", dockerfiles(), ids=lambda p: str(p.relative_to(REPO)))
def test_hadolint_clean(path: Path) -> None:
    proc = hadolint(path)
    assert proc.returncode == 0, f"hadolint {path.relative_to(REPO)}:\n{proc.stdout}{proc.stderr}"


def test_hadolint_reports_a_bad_dockerfile(tmp_path: Path) -> None:
    """Guards the test above: an unpinned base image and a root user are findings."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install torch\nUSER root\n")
    proc = hadolint(bad)
    assert proc.returncode != 0 and "DL3007" in proc.stdout
