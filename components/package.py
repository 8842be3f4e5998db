"""kfp component `package`: a thin wrapper of fusionrec.steps.run_package."""

from kfp import dsl
from kfp.dsl import Input, Metrics, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def package(model: Input[Model], packaged: Output[Model], metrics: Output[Metrics], cfg: dict):
    """Store the promoted model in the BentoML model store, with its metadata."""
    from pathlib import Path

    from fusionrec.config import PackageConfig
    from fusionrec.steps import run_package

    result = run_package(Path(model.path), Path(packaged.path), PackageConfig(**cfg))
    for key, value in result.metrics.items():
        metrics.log_metric(key, value)
