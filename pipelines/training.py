"""The fusionrec training pipeline for Kubeflow Pipelines v2.

ingest -> split -> featurize -> search (dsl.ParallelFor workers on one Optuna study) ->
summarise the study -> train -> evaluate -> (dsl.If promoted) package. Each task is a
component from components/, each a thin wrapper of fusionrec.steps. The step configs
default to params.yaml's sections at compile time, so the compiled YAML records the params
it was built with (a test recompiles and compares).
"""


from pathlib import Path
from typing import Any

from kfp import dsl
from kfp.dsl import Dataset

from components import evaluate, featurize, ingest, package, search, split, train
from fusionrec.config import load_params

ROOT = Path(__file__).resolve().parents[1]
PIPELINE_NAME = "fusionrec-training"


def without_nones(value: Any) -> Any:
    """kfp parameter defaults cannot hold None: drop those keys (the config's default is None)."""
    if isinstance(value, dict):
        return {k: without_nones(v) for k, v in value.items() if v is not None}
    return value


def build_pipeline(params_path: Path = ROOT / "params.yaml") -> Any:
    """Define the pipeline with params.yaml's sections as the config parameters' defaults."""
    p = without_nones(load_params(params_path).model_dump(mode="json"))
    workers = list(range(p["pipeline"]["search_workers"]))

    @dsl.pipeline(name=PIPELINE_NAME, description="Multi-modal recommender: ingest to a packaged, gated model.")
    def training(
        data_uri: str,
        study_db: str = "",
        search_workers: list = workers,
        trials_per_worker: int = p["pipeline"]["trials_per_worker"],
        champion_metrics: dict = {},  # noqa: B006 (kfp parameters are declared by their defaults)
        ingest_cfg: dict = p["ingest"],
        split_cfg: dict = p["split"],
        featurize_cfg: dict = p["featurize"],
        search_cfg: dict = p["search"],
        train_cfg: dict = p["train"],
        evaluate_cfg: dict = p["evaluate"],
        package_cfg: dict = p["package"],
    ) -> None:
        data = dsl.importer(artifact_uri=data_uri, artifact_class=Dataset, reimport=False)
        ingested = ingest(data=data.output, cfg=ingest_cfg).outputs["ingested"]
        split_data = split(ingested=ingested, cfg=split_cfg).outputs["split_data"]
        features = featurize(data=data.output, ingested=ingested, cfg=featurize_cfg).outputs["features"]
        # study_db goes straight to the workers: kfp.local (2.17) replaces every task-output parameter
        # entering a ParallelFor by the loop item, so no task may compute it. Empty: SQLite per run.
        common = dict(ingested=ingested, features=features, split_data=split_data, cfg=search_cfg,
                      base=train_cfg, storage=study_db, study_name=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
        with dsl.ParallelFor(items=search_workers, name="search-workers"):
            worker = search(n_trials=trials_per_worker, **common).set_display_name("search-worker")
        summary = search(n_trials=0, **common).set_display_name("search-summary").after(worker)
        model = train(ingested=ingested, features=features, split_data=split_data,
                      study=summary.outputs["study"]).outputs["model"]
        verdict = evaluate(ingested=ingested, features=features, split_data=split_data, model=model,
                           cfg=evaluate_cfg, champion_metrics=champion_metrics)
        with dsl.If(verdict.outputs["Output"] == True, name="promoted"):  # noqa: E712 (a kfp condition, not Python)
            package(model=model, cfg=package_cfg)

    return training
