"""AutoML: the Optuna search over encoders, fusion and hyper-parameters.

The only package that imports optuna. `suggest_config(trial, space, base)` turns a trial
into a TrainConfig; training itself (`fusionrec.training.train`) never sees the trial and
reports per-epoch validation metrics through a callback, which prunes.
"""

from __future__ import annotations

from fusionrec.automl.search import budget_report, run_search, summarise
from fusionrec.automl.space import (
    FittedSpace,
    SpaceError,
    config_from_params,
    default_params,
    fit_space,
    suggest_config,
)
from fusionrec.automl.study import STUDY_DB_ENV, local_storage, open_study, study_database

__all__ = [
    "STUDY_DB_ENV", "FittedSpace", "SpaceError", "budget_report", "config_from_params", "default_params",
    "fit_space", "local_storage", "open_study", "run_search", "study_database", "suggest_config", "summarise",
]
