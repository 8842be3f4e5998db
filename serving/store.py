"""The BentoML model store as the `package` step's backend (the library never imports bentoml)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any


def store_model(model_dir: Path, name: str, labels: dict[str, str], metadata: dict[str, Any]) -> str:
    """Copy a model folder byte for byte into the store under $BENTOML_HOME; returns its tag."""
    import bentoml  # only now: importing it fixes its home ($BENTOML_HOME) for this process

    with bentoml.models.create(name, labels=labels, metadata=metadata) as ref:
        shutil.copytree(model_dir, ref.path, dirs_exist_ok=True)
    return str(ref.tag)
