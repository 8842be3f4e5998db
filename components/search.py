"""kfp component `search`: Optuna trials on one study (fusionrec.steps.run_search).

Two shapes, chosen when the pipeline is compiled (`pipeline.study_secret` in params.yaml):
- shared study: dsl.ParallelFor pods each add trials to one study in a database whose URL
  reaches them from a Kubernetes Secret as $FUSIONREC_STUDY_DB; a last call with trials_per_worker=0
  reads the whole study and writes the overlay train reads (best_overlay.yaml) and the reports.
- one pod: `workers` processes share a SQLite study inside the task's own output folder, and
  the same task writes the outputs. Pods share no file system, so this is the only correct
  search without a database.
"""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def search(
    ingested: Input[Dataset],
    features: Input[Dataset],
    split_data: Input[Dataset],
    study: Output[Artifact],
    report: Output[HTML],
    metrics: Output[Metrics],
    cfg: dict,
    base: dict,
    study_name: str,
    trials_per_worker: int,
    workers: int,
    shared_study: bool,
):
    """Run `workers` processes of trials_per_worker trials each on the study (0: only summarise it).

    `study` receives best_overlay.yaml (what train lays over its config; `{}` with search.enabled
    false), metrics.json, history.csv and study/ (the study's reports; its database when one pod).
    """
    import shutil
    from pathlib import Path

    from fusionrec.automl import study_database
    from fusionrec.config import SearchConfig, TrainConfig
    from fusionrec.steps import run_search

    out = Path(study.path)
    url = study_database() if shared_study else ""  # "": sqlite:///<out>/study/study.db, this task only
    search_cfg = SearchConfig(**{**cfg, "storage": url, "study_name": study_name, "workers": max(1, workers),
                                 "n_trials": trials_per_worker * max(1, workers)})
    result = run_search(Path(ingested.path), Path(features.path), Path(split_data.path), out, search_cfg, TrainConfig(**base))
    history = out / "study" / "plots" / "optimization_history.html"
    if history.exists():
        shutil.copyfile(history, report.path)
    else:
        reason = "the search is off (search.enabled: false)" if not search_cfg.enabled else "no trials yet"
        Path(report.path).write_text(f"<html><body>{reason}</body></html>")
    for key, value in result.metrics.items():
        metrics.log_metric(key, value)
