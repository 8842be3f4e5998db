"""kfp component `search`: one Optuna worker on a shared study (fusionrec.steps.run_search).

The pipeline fans this out with dsl.ParallelFor; every worker adds trials to the same study
through `storage` (a PostgreSQL URL on a cluster). Without a URL the study is a SQLite file
named after the study (`fusionrec.automl.local_study_storage`), which the tasks of a local
run (`fusionrec pipeline run-local`) share because they share one file system; pods do not.
A last call with n_trials=0 reads the whole study and writes best.yaml, trials.csv and the plots.
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
    storage: str,
    study_name: str,
    n_trials: int,
):
    """Run n_trials of the shared study (0: only summarise it) and keep its outputs."""
    import shutil
    from pathlib import Path

    from fusionrec.automl import local_study_storage
    from fusionrec.config import SearchConfig, TrainConfig
    from fusionrec.steps import run_search

    out = Path(study.path)
    url = storage or local_study_storage(study_name)
    search_cfg = SearchConfig(**{**cfg, "storage": url, "study_name": study_name, "n_trials": n_trials, "workers": 1})
    result = run_search(Path(ingested.path), Path(features.path), Path(split_data.path), out, search_cfg, TrainConfig(**base))
    history = out / "plots" / "optimization_history.html"
    if history.exists():
        shutil.copyfile(history, report.path)
    else:
        Path(report.path).write_text("<html><body>no trials yet</body></html>")
    for key, value in result.metrics.items():
        metrics.log_metric(key, value)
