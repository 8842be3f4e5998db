"""kfp component `train`: a thin wrapper of fusionrec.steps.run_train."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train(
    ingested: Input[Dataset],
    features: Input[Dataset],
    split_data: Input[Dataset],
    study: Input[Artifact],
    model: Output[Model],
    metrics: Output[Metrics],
    cfg: dict,
):
    """Train `cfg` (the run's train section) with the search's overlay (study/best_overlay.yaml) laid over it."""
    from pathlib import Path

    from fusionrec.config import TrainConfig
    from fusionrec.steps import OVERLAY_FILE, resolve_train_config, run_train

    resolved = resolve_train_config(TrainConfig(**cfg), Path(study.path) / OVERLAY_FILE)
    result = run_train(Path(ingested.path), Path(features.path), Path(split_data.path), Path(model.path), resolved)
    model.metadata["train_config"] = resolved.model_dump(mode="json")
    for key, value in result.metrics.items():
        metrics.log_metric(key, value)
