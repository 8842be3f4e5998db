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
):
    """Train the model with the search's best configuration (study/best.yaml)."""
    from pathlib import Path

    from fusionrec.config import TrainConfig, load_config_file
    from fusionrec.steps import run_train

    cfg = load_config_file(Path(study.path) / "best.yaml", TrainConfig)
    result = run_train(Path(ingested.path), Path(features.path), Path(split_data.path), Path(model.path), cfg)
    for key, value in result.metrics.items():
        metrics.log_metric(key, value)
