"""Small file helpers shared by every step: the StepResult, JSON and table I/O."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class StepResult:
    """What a `run_<verb>` step returns: a small flat metrics dict and the paths it wrote."""

    metrics: dict[str, float | int] = field(default_factory=dict)
    outputs: dict[str, Path] = field(default_factory=dict)


def write_json(path: Path | str, data: Any) -> Path:
    """Write JSON atomically (temp file + rename), so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=False, default=str)
        fh.write("\n")
    os.replace(tmp, path)
    return path


def read_json(path: Path | str) -> Any:
    return json.loads(Path(path).read_text())


def find_table(folder: Path, stem: str) -> Path | None:
    """The `stem.parquet` or `stem.csv` file in folder (parquet preferred), or None."""
    for ext in (".parquet", ".csv"):
        candidate = folder / f"{stem}{ext}"
        if candidate.exists():
            return candidate
    return None


def read_table(path: Path, dtype: dict[str, Any] | None = None) -> pd.DataFrame:
    """Read a CSV or Parquet table; CSV ids stay strings when dtype says so."""
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path, dtype=dtype, keep_default_na=False, na_values=[""])
