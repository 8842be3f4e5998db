"""The BentoML model store as the `package` step's backend (the library never imports bentoml).

`BentoStore` implements `fusionrec.packaging.ModelStore`; the CLI, the kfp `package` component
and retraining's promotion pass one to `run_package`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any


class BentoStore:
    """The BentoML model store under $BENTOML_HOME (default ~/bentoml)."""

    @property
    def location(self) -> str:
        """The store's folder: $BENTOML_HOME, as BentoML itself resolves it."""
        return os.environ.get("BENTOML_HOME") or str(Path.home() / "bentoml")

    def put(self, model_dir: Path, name: str, labels: dict[str, str], metadata: dict[str, Any]) -> str:
        """Copy a model folder byte for byte into the store as a new version of `name`; returns its tag."""
        import bentoml  # only now: importing it fixes its home ($BENTOML_HOME) for this process

        with bentoml.models.create(name, labels=labels, metadata=metadata) as ref:
            shutil.copytree(model_dir, ref.path, dirs_exist_ok=True)
        return str(ref.tag)


__all__ = ["BentoStore"]
