"""Fixtures that run one kfp component through kfp.local on the tiny demo.

kfp.local cannot pass an input artifact to a lone component, so `run_component` wraps one
task in a pipeline whose inputs are `dsl.importer`s of the session's folders, runs it with
`SubprocessRunner(use_venv=False)` (this interpreter, no image) and returns the task's
folder under the pipeline root: one sub-folder per output artifact plus kfp's
executor_output.json (logged metrics and the returned value).
"""

# No `from __future__ import annotations`: kfp reads the pipeline function's annotations as types.

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.components.component_tasks import TINY_FEATURIZE, TINY_TRAIN, TaskRun


@pytest.fixture()
def run_component(tmp_path: Path) -> Callable[..., TaskRun]:
    """run_component(component, {input: (path, artifact class)}, **params) -> TaskRun."""
    from kfp import dsl, local

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp-outputs"),
               workspace_root=str(tmp_path / "kfp-workspace"), raise_on_error=True)

    def run(component: Any, inputs: dict[str, tuple[Path, type]], **params: Any) -> TaskRun:
        @dsl.pipeline(name=f"test-{component.name}")
        def one_task() -> None:
            artifacts = {name: dsl.importer(artifact_uri=str(Path(path).resolve()), artifact_class=cls,
                                            reimport=False).set_display_name(f"import-{name}").output
                         for name, (path, cls) in inputs.items()}
            component(**artifacts, **params)

        one_task()
        folders = sorted((tmp_path / "kfp-outputs").glob(f"*/{component.name}"))
        assert folders, f"kfp.local left no task folder for {component.name}"
        return TaskRun(folders[-1])

    return run


@pytest.fixture(scope="session")
def features_dir(ingested_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny demo featurized with TF-IDF and colour histograms."""
    from fusionrec.steps import run_featurize

    out = tmp_path_factory.mktemp("features") / "features"
    run_featurize(ingested_dir, out, TINY_FEATURIZE)
    return out


@pytest.fixture(scope="session")
def study_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A search output folder holding only its overlay (all that `train` reads): one field changed."""
    from fusionrec.steps import OVERLAY_FILE, write_overlay

    out = tmp_path_factory.mktemp("search") / "search"
    write_overlay({"dim": 8}, out / OVERLAY_FILE, "a test overlay")
    return out


@pytest.fixture(scope="session")
def model_dir(ingested_dir: Path, features_dir: Path, split_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained on the tiny demo with TINY_TRAIN."""
    from fusionrec.steps import run_train

    out = tmp_path_factory.mktemp("model") / "model"
    run_train(ingested_dir, features_dir, split_dir, out, TINY_TRAIN)
    return out
