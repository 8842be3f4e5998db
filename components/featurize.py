"""kfp component `featurize`: a thin wrapper of fusionrec.steps.run_featurize."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def featurize(data: Input[Dataset], ingested: Input[Dataset], features: Output[Dataset], metrics: Output[Metrics],
              cfg: dict):
    """Embed every item with each configured encoder (one matrix + mask per encoder).

    `data` is not read here directly: ingested/items.parquet holds absolute image paths into the
    raw dataset, and declaring it an input makes the kfp launcher materialise it in this pod at
    the path the ingest pod saw (same artifact URI, same local path).
    """
    from pathlib import Path

    from fusionrec.config import FeaturizeConfig
    from fusionrec.steps import run_featurize

    if not Path(data.path).exists():
        raise FileNotFoundError(f"raw dataset {data.uri} is not available at {data.path}: item images cannot be read")
    result = run_featurize(Path(ingested.path), Path(features.path), FeaturizeConfig(**cfg))
    for key, value in result.metrics.items():
        metrics.log_metric(key, value)
