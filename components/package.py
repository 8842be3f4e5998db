"""kfp component `package`: a thin wrapper of fusionrec.steps.run_package, gated by the evaluation."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def package(model: Input[Model], evaluation: Input[Dataset], packaged: Output[Model], metrics: Output[Metrics],
            cfg: dict, force: bool = False):
    """Store the model in the BentoML model store, with its metadata, if the promotion gate allows.

    evaluation: the `evaluate` task's output folder; its promotion.json is the gate's verdict, and
    a rejected model fails this task (as `fusionrec package --promotion` does) unless `force`.
    A pod's model store ($BENTOML_HOME) goes with the pod, so the stored model is also exported
    into the output artifact as `<name>-<version>.bentomodel` (`bentoml models import FILE`).
    """
    from pathlib import Path

    import bentoml
    from serving.store import BentoStore

    from fusionrec.config import PackageConfig
    from fusionrec.evaluation.gate import PROMOTION_FILE
    from fusionrec.io import read_json
    from fusionrec.steps import run_package

    out = Path(packaged.path)
    result = run_package(Path(model.path), out, PackageConfig(**cfg), BentoStore(),
                         promotion=Path(evaluation.path) / PROMOTION_FILE, force=force)
    tag = bentoml.models.get(read_json(result.outputs["package"])["tag"]).tag
    bentoml.models.export_model(tag, str(out / f"{tag.name}-{tag.version}.bentomodel"))
    packaged.metadata["tag"] = str(tag)
    for key, value in result.metrics.items():
        metrics.log_metric(key, value)
