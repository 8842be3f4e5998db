"""kfp component `study_storage`: where the search workers of one run share their Optuna study."""

from kfp import dsl

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def study_storage(storage: str, run_id: str) -> str:
    """The given SQLAlchemy URL (PostgreSQL on a cluster), or a local SQLite file per run.

    The SQLite fallback is for `fusionrec pipeline run-local`, where every task shares one
    file system; on a cluster, pass the PostgreSQL URL so pods share the study.
    """
    from fusionrec.automl import local_study_storage

    return storage or local_study_storage(run_id)
