"""Cheap step configs (TF-IDF + colour, tiny model, few epochs) and what one kfp.local task leaves behind."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fusionrec.config import EvaluateConfig, FeaturizeConfig, SearchConfig, SearchSpace, TrainConfig

# Cheap settings: TF-IDF text + colour histogram images, a tiny model, a few epochs.
TINY_FEATURIZE = FeaturizeConfig(text_encoders=["tfidf"], image_encoders=["color"], tfidf_dim=16, num_workers=0,
                                 torch_threads=1)
TINY_TRAIN = TrainConfig(text_encoder="tfidf", image_encoder="color", dim=16, n_layers=1, epochs=2, patience=1,
                         batch_size=512, n_negatives=32)
TINY_SPACE = SearchSpace(text_encoder=["tfidf"], image_encoder=["color"], fusion=["mean"], dim=[16],
                         n_layers=[0, 1], knn_k=[0], epochs=[2, 2], ease_blend_auto=False)
TINY_SEARCH = SearchConfig(n_trials=1, pruner="none", space=TINY_SPACE)
TINY_EVALUATE = EvaluateConfig(baselines=["mostpop"], plot_ks=[10, 20])


@dataclass(frozen=True)
class TaskRun:
    """What one kfp.local task left behind."""

    folder: Path  # <pipeline_root>/<run>/<task>

    def output(self, name: str) -> Path:
        """The local path of an output artifact."""
        return self.folder / name

    def executor_output(self) -> dict[str, Any]:
        return json.loads((self.folder / "executor_output.json").read_text())

    def metrics(self, name: str = "metrics") -> dict[str, Any]:
        """The metrics the component logged into its Output[Metrics] artifact."""
        for artifact in self.executor_output()["artifacts"][name]["artifacts"]:
            return dict(artifact.get("metadata", {}))
        return {}

    def returned(self) -> Any:
        """The component's return value (its `Output` parameter)."""
        return self.executor_output()["parameterValues"]["Output"]


def as_params(section: Any) -> dict[str, Any]:
    """A config section as a kfp dict parameter (JSON values, no None: kfp cannot hold None)."""
    from pipelines.training import without_nones

    return without_nones(section.model_dump(mode="json"))
