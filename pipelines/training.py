"""The fusionrec training pipeline for Kubeflow Pipelines v2.

ingest -> split -> featurize -> search -> train -> evaluate -> (dsl.If promoted) package.
The train task trains the run's `train_cfg` with the search task's overlay laid over it, as
`dvc repro` does (an empty overlay when `search_cfg.enabled` is false).
Each task is a component from components/, each a thin wrapper of fusionrec.steps, on the
image that installs the fusionrec wheel. params.yaml decides, at compile time:
- the step configs' defaults (the compiled YAML records the params it was built with);
- the search's shape: with `pipeline.study_secret`, dsl.ParallelFor pods share one Optuna
  study in the database whose URL that Kubernetes Secret holds; without, one search pod runs
  `pipeline.search_workers` processes on a study of its own;
- every task's CPU/memory requests and limits and its retry policy (`pipeline.resources`,
  `pipeline.retries`);
- the rollout of a promoted model: the package task reads the serving state's database URL from
  the Secret `pipeline.state_secret` (optional: without it the model is packaged only) and mounts
  the claim `pipeline.models_pvc` at /models, where the serving pods mount it; it publishes the
  model under the run's `models_root` and moves the champion pointer every replica follows.
Database URLs reach the tasks only from Secrets, never as run parameters.
"""


from pathlib import Path
from typing import Any

from kfp import dsl
from kfp.dsl import Dataset

from components import evaluate, featurize, ingest, package, search, split, train
from fusionrec.automl.study import STUDY_DB_ENV
from fusionrec.config import Params, PipelineConfig, load_params
from fusionrec.monitoring.rollout import FEEDBACK_URL_ENV, is_remote

PIPELINE_NAME = "fusionrec-training"
MODELS_MOUNT = "/models"  # where the promoting task mounts pipeline.models_pvc (the serving pods' mount too)


def without_nones(value: Any) -> Any:
    """kfp parameter defaults cannot hold None: drop those keys (the config's default is None)."""
    if isinstance(value, dict):
        return {k: without_nones(v) for k, v in value.items() if v is not None}
    return value


STEP_CONFIGS = ("ingest", "split", "featurize", "search", "train", "evaluate", "package")


def step_arguments(params: Params) -> dict[str, Any]:
    """The run's `<step>_cfg` parameters from params, as kfp takes them (no None, no credential).

    `search.storage` stays out: a database URL is a Secret's, never a run parameter (the KFP UI
    and the run history show every parameter).
    """
    p = without_nones(params.model_dump(mode="json"))
    p["search"].pop("storage", None)
    return {f"{name}_cfg": p[name] for name in STEP_CONFIGS}


def configure(task: Any, step: str, cfg: PipelineConfig) -> Any:
    """Requests, limits and retries of one task, from params.yaml's `pipeline` section."""
    res = cfg.task_resources(step)
    task.set_cpu_request(res.cpu_request).set_cpu_limit(res.cpu_limit)
    task.set_memory_request(res.memory_request).set_memory_limit(res.memory_limit)
    if cfg.retries > 0:
        task.set_retry(num_retries=cfg.retries, backoff_duration=cfg.retry_backoff, backoff_factor=2.0)
    return task


def use_study_secret(task: Any, cfg: PipelineConfig) -> Any:
    """The study database URL as $FUSIONREC_STUDY_DB, from the Secret (the pod fails to start without it)."""
    from kfp import kubernetes

    return kubernetes.use_secret_as_env(task, secret_name=cfg.study_secret,
                                        secret_key_to_env={cfg.study_secret_key: STUDY_DB_ENV})


def use_state_secret(task: Any, cfg: PipelineConfig) -> Any:
    """The serving state's database URL as $FUSIONREC_FEEDBACK_URL, from the Secret when it exists
    (optional: a task without it packages the model and moves no pointer)."""
    from kfp import kubernetes

    return kubernetes.use_secret_as_env(task, secret_name=cfg.state_secret,
                                        secret_key_to_env={cfg.state_secret_key: FEEDBACK_URL_ENV}, optional=True)


# The object store's credentials and endpoint, as s3fs (botocore) reads them from the environment.
OBJECT_STORE_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL")


def use_object_store_secret(task: Any, cfg: PipelineConfig) -> Any:
    """The object store's keys as env, from the Secret when it exists (an s3:// models root needs them;
    a key the Secret lacks, say AWS_ENDPOINT_URL on AWS itself, is left unset)."""
    from kfp import kubernetes

    return kubernetes.use_secret_as_env(task, secret_name=cfg.object_store_secret,
                                        secret_key_to_env={k: k for k in OBJECT_STORE_KEYS}, optional=True)


def mount_models(task: Any, cfg: PipelineConfig) -> Any:
    """The models volume at /models, writable: the promoting task publishes there."""
    from kfp import kubernetes

    return kubernetes.mount_pvc(task, pvc_name=cfg.models_pvc, mount_path=MODELS_MOUNT)


def default_models_root(params: Params) -> str:
    """The run's `models_root` default: an object-store monitor.models_root as it is (every pod reaches
    it); else, with pipeline.models_pvc, /models, the claim's mount in the promoting task and in the
    serving pods (a path of the monitor's machine means nothing in a pod); else monitor.models_root."""
    root = params.monitor.models_root
    if is_remote(root) or not params.pipeline.models_pvc:
        return root
    return MODELS_MOUNT


def build_pipeline(params_path: Path | str | None = "params.yaml") -> Any:
    """Define the pipeline from a params file (absent: every default)."""
    params = load_params(params_path)
    p = step_arguments(params)
    cfg = params.pipeline

    @dsl.pipeline(name=PIPELINE_NAME, description="Multi-modal recommender: ingest to a packaged, gated model.")
    def training(
        data_uri: str,
        trials_per_worker: int = cfg.trials_per_worker,
        models_root: str = default_models_root(params),
        champion_metrics: dict = {},  # noqa: B006 (kfp parameters are declared by their defaults)
        ingest_cfg: dict = p["ingest_cfg"],
        split_cfg: dict = p["split_cfg"],
        featurize_cfg: dict = p["featurize_cfg"],
        search_cfg: dict = p["search_cfg"],
        train_cfg: dict = p["train_cfg"],
        evaluate_cfg: dict = p["evaluate_cfg"],
        package_cfg: dict = p["package_cfg"],
    ) -> None:
        data = dsl.importer(artifact_uri=data_uri, artifact_class=Dataset, reimport=False)
        ingest_task = configure(ingest(data=data.output, cfg=ingest_cfg), "ingest", cfg)
        ingested = ingest_task.outputs["ingested"]
        split_data = configure(split(ingested=ingested, cfg=split_cfg), "split", cfg).outputs["split_data"]
        features = configure(featurize(data=data.output, ingested=ingested, cfg=featurize_cfg),
                             "featurize", cfg).outputs["features"]
        common = dict(ingested=ingested, features=features, split_data=split_data, cfg=search_cfg,
                      base=train_cfg, study_name=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
        if cfg.study_secret:
            with dsl.ParallelFor(items=list(range(cfg.search_workers)), name="search-workers"):
                worker = search(trials_per_worker=trials_per_worker, workers=1, shared_study=True, **common)
                use_study_secret(configure(worker.set_display_name("search-worker"), "search", cfg), cfg)
            summary = search(trials_per_worker=0, workers=1, shared_study=True, **common)
            use_study_secret(configure(summary.set_display_name("search-summary").after(worker), "search", cfg), cfg)
        else:
            summary = search(trials_per_worker=trials_per_worker, workers=cfg.search_workers, shared_study=False,
                             **common)
            configure(summary, "search", cfg)
        model = configure(train(ingested=ingested, features=features, split_data=split_data,
                                study=summary.outputs["study"], cfg=train_cfg), "train", cfg).outputs["model"]
        verdict = configure(evaluate(ingested=ingested, features=features, split_data=split_data, model=model,
                                     cfg=evaluate_cfg, champion_metrics=champion_metrics), "evaluate", cfg)
        with dsl.If(verdict.outputs["Output"] == True, name="promoted"):  # noqa: E712 (a kfp condition, not Python)
            promote = configure(package(model=model, evaluation=verdict.outputs["evaluation"], cfg=package_cfg,
                                        models_root=models_root, run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                                        keep_models=params.monitor.keep_models),
                                "package", cfg)
            if cfg.state_secret:
                use_state_secret(promote, cfg)
            if cfg.object_store_secret:
                use_object_store_secret(promote, cfg)
            if cfg.models_pvc:
                mount_models(promote, cfg)

    return training
