"""kfp component `ingest`: a thin wrapper of fusionrec.steps.run_ingest."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def ingest(data: Input[Dataset], ingested: Output[Dataset], metrics: Output[Metrics], cfg: dict):
    """Validate a raw dataset folder into the ingested layout (rejected rows kept with reasons)."""
    from pathlib import Path  # kfp ships only this function's source

    from fusionrec.config import IngestConfig
    from fusionrec.steps import run_ingest

    result = run_ingest(Path(data.path), Path(ingested.path), IngestConfig(**cfg))
    for key, value in result.metrics.items():
        metrics.log_metric(key, value)
