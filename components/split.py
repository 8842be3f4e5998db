"""kfp component `split`: a thin wrapper of fusionrec.steps.run_split."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def split(ingested: Input[Dataset], split_data: Output[Dataset], metrics: Output[Metrics], cfg: dict):
    """Split the ingested interactions into train/valid/test by the configured protocol."""
    from pathlib import Path

    from fusionrec.config import SplitConfig
    from fusionrec.steps import run_split

    result = run_split(Path(ingested.path), Path(split_data.path), SplitConfig(**cfg))
    for key, value in result.metrics.items():
        metrics.log_metric(key, value)
