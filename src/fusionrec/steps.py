"""Every pipeline step as one path-based function: `run_<verb>(inputs..., out_dir, cfg) -> StepResult`.

This module is the index of the steps. The CLI, the DVC stages (through the CLI) and the kfp
components call only these functions; the logic lives in the module each one names.
"""

from __future__ import annotations

from fusionrec.automl import run_search
from fusionrec.data.demo import run_demo_data
from fusionrec.data.ingest import run_ingest
from fusionrec.data.splits import run_split
from fusionrec.evaluation.evaluator import run_evaluate
from fusionrec.features.pipeline import run_featurize
from fusionrec.io import StepResult
from fusionrec.monitoring.monitor import run_monitor
from fusionrec.packaging import run_package
from fusionrec.training import run_train

STEPS = ("ingest", "split", "featurize", "search", "train", "evaluate", "package")  # the training pipeline, in order

__all__ = [
    "STEPS", "StepResult", "run_demo_data", "run_evaluate", "run_featurize", "run_ingest", "run_monitor",
    "run_package", "run_search", "run_split", "run_train",
]
