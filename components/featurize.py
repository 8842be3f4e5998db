"""kfp component `featurize`: a thin wrapper of fusionrec.steps.run_featurize."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def featurize(ingested: Input[Dataset], features: Output[Dataset], metrics: Output[Metrics], cfg: dict):
    """Embed every item with each configured encoder (one matrix + mask per encoder)."""
    from pathlib import Path

    from fusionrec.config import FeaturizeConfig
    from fusionrec.steps import run_featurize

    result = run_featurize(Path(ingested.path), Path(features.path), FeaturizeConfig(**cfg))
    for key, value in result.metrics.items():
        metrics.log_metric(key, value)
