"""The compiled pipeline, run as a cluster runs it.

Every task starts from an interpreter that has only the fusionrec wheel and the locked
dependencies, in an empty folder of its own with its own HOME and TMPDIR, with the image's
env and the Secrets the compiled pipeline declares (test values), and nothing else to read
but its input artifacts (pipelines.local.run_local). The search fans out to two workers that
share one Optuna study in a real PostgreSQL, reached only through the Secret. The promoted model
is rolled out as on a cluster: the package task reads the serving state's database from the same
Secret and the object store's keys from another, publishes the model under the run's models_root
(a bucket of a local S3 API) and moves the champion pointer every serving replica follows.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
import yaml
from tests.components.component_tasks import TINY_EVALUATE, TINY_FEATURIZE, TINY_SEARCH, TINY_TRAIN, as_params
from tests.object_store import local_s3, reach_from_this_process
from tests.wheel_env import REPO, WheelEnv, image_env

from fusionrec.config import (
    IngestConfig,
    PackageConfig,
    PipelineConfig,
    SplitConfig,
    TrainConfig,
    load_config_file,
)
from fusionrec.io import read_json
from fusionrec.monitoring.state import ServingState
from fusionrec.monitoring.store import FeedbackStore

STUDY_SECRET = "fusionrec-db"  # holds the study's URL and the serving state's (feedback-url), as on a cluster
pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:You may be attemping to run a task:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:Task .* have no effect in the current local runner:UserWarning"),
]


def tiny_arguments() -> dict:
    """Run arguments that keep every step cheap (tf-idf + colour, 1 trial per worker, 2 epochs)."""
    return {
        "ingest_cfg": as_params(IngestConfig()), "split_cfg": as_params(SplitConfig()),
        "featurize_cfg": as_params(TINY_FEATURIZE), "search_cfg": as_params(TINY_SEARCH),
        "train_cfg": as_params(TINY_TRAIN), "evaluate_cfg": as_params(TINY_EVALUATE),
        "package_cfg": as_params(PackageConfig(model_name="fusionrec-e2e")), "trials_per_worker": 1,
    }


def only(root: Path, pattern: str) -> Path:
    found = sorted(root.glob(pattern))
    assert len(found) == 1, f"expected one {pattern} under {root}, found {found}"
    return found[0]


def task(run: SimpleNamespace, name: str) -> list[Path]:
    return [t for t in run.tasks if t.name.split("-", 1)[1] == name]


@pytest.fixture(scope="module")
def cluster_run(demo_dir: Path, wheel_env: WheelEnv, postgres, tmp_path_factory: pytest.TempPathFactory):
    """One run of the pipeline compiled for a shared study, every task isolated as a pod, the
    models root a bucket of a local S3 API."""
    from pipelines.compile import compile_pipeline
    from pipelines.local import run_local

    tmp = tmp_path_factory.mktemp("cluster")
    params = tmp / "params.yaml"
    params.write_text(yaml.safe_dump({"pipeline": {"study_secret": STUDY_SECRET, "search_workers": 2}}))
    compiled = compile_pipeline(tmp / "training.yaml", params)
    url, state_url = postgres.new_database("study"), postgres.new_database("state")
    with FeedbackStore(state_url) as store:  # a champion serves already: the promotion must move the pointer
        ServingState(store).set_champion("v0", str(tmp / "models" / "v0"), "manual")
    with local_s3() as s3:
        secrets = {STUDY_SECRET: {"study-url": url, "feedback-url": state_url},
                   PipelineConfig().object_store_secret: s3.env}
        result = run_local(demo_dir, tmp / "kfp", pipeline_file=compiled, python=str(wheel_env.python),
                           env=image_env(), secrets=secrets, models_root=f"{s3.bucket}/models", **tiny_arguments())
        yield SimpleNamespace(root=Path(result["pipeline_root"]), tasks=[Path(t) for t in result["tasks"]], url=url,
                              compiled=compiled, state_url=state_url, models_root=f"{s3.bucket}/models", s3=s3)


def test_search_workers_share_one_postgresql_study(cluster_run: SimpleNamespace) -> None:
    assert len(task(cluster_run, "search")) == 3, "two workers and the summary"
    summary = read_json(only(cluster_run.root, "*/search-2/study/study/summary.json"))
    assert summary["n_trials"] == 2, "two workers x one trial each should add two trials to one study"
    assert summary["storage"].startswith("postgresql"), summary["storage"]
    engine = sa.create_engine(cluster_run.url)
    try:
        with engine.connect() as conn:
            states = conn.exec_driver_sql("SELECT state FROM trials").scalars().all()
    finally:
        engine.dispose()
    assert sorted(map(str, states)) == ["COMPLETE", "COMPLETE"], states
    for folder in cluster_run.tasks:
        assert not list(folder.rglob("*.db")), f"{folder.name} kept a local study file"
    best = load_config_file(only(cluster_run.root, "*/search-2/study/study/best.yaml"), TrainConfig)
    assert best.text_encoder == "tfidf"
    assert only(cluster_run.root, "*/search-2/study/best_overlay.yaml").is_file()  # what the train task lays over


def test_each_task_had_its_own_folders_and_the_image_env(cluster_run: SimpleNamespace) -> None:
    names = [t.name.split("-", 1)[1] for t in cluster_run.tasks]
    assert {"ingest", "split", "featurize", "search", "train", "evaluate", "package"} <= set(names)
    (package,) = task(cluster_run, "package")
    # BentoML's store is under the pod's HOME: nothing of this machine's ~/bentoml is seen or written
    assert (package / "home" / "bentoml" / "models" / "fusionrec-e2e").is_dir()


def test_the_promoted_model_is_evaluated_and_packaged(cluster_run: SimpleNamespace) -> None:
    metrics = read_json(only(cluster_run.root, "*/evaluate/evaluation/metrics.json"))
    assert 0.0 <= metrics["model"]["test"]["ndcg@20"] <= 1.0
    assert read_json(only(cluster_run.root, "*/evaluate/evaluation/promotion.json"))["promote"] is True
    assert list(only(cluster_run.root, "*/package/packaged").glob("*.bentomodel")), "the promoted model was not packaged"


def test_the_promoted_model_reaches_serving_through_the_champion_pointer(cluster_run: SimpleNamespace,
                                                                          tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """What a serving replica does on its next poll: read the pointer, fetch the folder it names
    from the bucket with the object store's keys in its env, load it."""
    from fusionrec.models.recommender import Recommender
    from fusionrec.monitoring.rollout import fetch_model, folder_version

    model = only(cluster_run.root, "*/train/model")
    with FeedbackStore(cluster_run.state_url) as store:
        history = ServingState(store).champions()
    assert [c.model_version for c in history[:-1]] == ["v0"], "the promotion adds one row to the pointer's log"
    champion = history[-1]
    assert champion.model_version == folder_version(model) and champion.source.startswith("kfp run ")
    assert champion.uri.rsplit("/", 1)[0] == cluster_run.models_root, "published under the run's models_root"
    reach_from_this_process(cluster_run.s3, monkeypatch)
    published = fetch_model(champion.uri, tmp_path / "cache")
    assert (published / "model.safetensors").read_bytes() == (model / "model.safetensors").read_bytes()
    assert Recommender.load(published).n_items == Recommender.load(model).n_items
    record = read_json(only(cluster_run.root, "*/package/packaged/package.json"))
    assert record["champion"] == champion.to_dict()


def test_without_the_secret_the_search_pod_does_not_start(cluster_run: SimpleNamespace) -> None:
    from pipelines.local import TaskStartError, resolve_secrets, secret_env

    wanted = secret_env(cluster_run.compiled)
    assert set(wanted) == {"search", "package"}, "the search reads the study, the promoting task the serving state"
    assert resolve_secrets(wanted["search"], {STUDY_SECRET: {"study-url": "postgresql://x"}}, "search") == {
        "FUSIONREC_STUDY_DB": "postgresql://x"}
    with pytest.raises(TaskStartError, match=STUDY_SECRET):
        resolve_secrets(wanted["search"], {}, "search")
    # the serving state's and the object store's Secrets are optional: without them the package task
    # starts and only packages
    assert resolve_secrets(wanted["package"], {}, "package") == {}
    assert resolve_secrets(wanted["package"], {STUDY_SECRET: {"feedback-url": "postgresql://y"}}, "package") == {
        "FUSIONREC_FEEDBACK_URL": "postgresql://y"}


def test_package_cli_from_the_wheel_in_an_empty_folder(cluster_run: SimpleNamespace, wheel_env: WheelEnv,
                                                       tmp_path: Path) -> None:
    model = only(cluster_run.root, "*/train/model")
    promotion = only(cluster_run.root, "*/evaluate/evaluation/promotion.json")
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir(), home.mkdir()
    env = {"PATH": f"{wheel_env.bin}:/usr/bin:/bin", "HOME": str(home), **image_env(),
           **{k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ}}
    done = subprocess.run(["fusionrec", "package", str(model), str(tmp_path / "out"), "--promotion", str(promotion)],
                          cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert read_json(tmp_path / "out" / "package.json")["tag"].startswith("fusionrec:")
    assert (home / "bentoml" / "models" / "fusionrec").is_dir()
    assert not list(work.iterdir()), "the command wrote into its working folder"
    assert str(REPO) not in done.stdout + done.stderr
