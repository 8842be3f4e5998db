"""kfp component `package`: a thin wrapper of fusionrec.steps.run_package, gated by the evaluation."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def package(model: Input[Model], evaluation: Input[Dataset], packaged: Output[Model], metrics: Output[Metrics],
            cfg: dict, force: bool = False, models_root: str = "", run_id: str = "", keep_models: int = 0):
    """Store the model in the BentoML model store, with its metadata, if the promotion gate allows;
    then, where the task has the serving state's database, make it the champion of every replica.

    evaluation: the `evaluate` task's output folder; its promotion.json is the gate's verdict, and
    a rejected model fails this task (as `fusionrec package --promotion` does) unless `force`.
    A pod's model store ($BENTOML_HOME) goes with the pod, so the stored model is also exported
    into the output artifact as `<name>-<version>.bentomodel` (`bentoml models import FILE`).
    models_root: where the model is published for the serving replicas when $FUSIONREC_FEEDBACK_URL
    (the Secret pipeline.state_secret) is set; the champion pointer in that database then names it.
    keep_models: then the folders of champions older than the last keep_models promotions are
    deleted from models_root (monitor.keep_models; 0 = keep all).
    run_id: the pipeline run, kept on the pointer as what promoted the model.
    """
    from pathlib import Path

    import bentoml
    from serving.store import BentoStore

    from fusionrec.config import PackageConfig
    from fusionrec.evaluation.gate import PROMOTION_FILE
    from fusionrec.io import read_json
    from fusionrec.monitoring.rollout import rollout_from_env
    from fusionrec.steps import run_package

    out = Path(packaged.path)
    result = run_package(Path(model.path), out, PackageConfig(**cfg), BentoStore(),
                         promotion=Path(evaluation.path) / PROMOTION_FILE, force=force,
                         rollout=rollout_from_env(models_root, keep=keep_models), source=f"kfp run {run_id}")
    record = read_json(result.outputs["package"])
    tag = bentoml.models.get(record["tag"]).tag
    bentoml.models.export_model(tag, str(out / f"{tag.name}-{tag.version}.bentomodel"))
    packaged.metadata["tag"] = str(tag)
    if record["champion"]:
        packaged.metadata["champion"] = record["champion"]["uri"]
    for key, value in result.metrics.items():
        metrics.log_metric(key, value)
