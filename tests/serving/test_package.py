"""The package step: the model folder lands in the BentoML model store with its metadata, no
pickle, loadable as is; the bentofile builds a bento offline. Each runs in a subprocess with
its own BENTOML_HOME (BentoML fixes its home when first imported). The promotion gate is
checked against an in-memory store: a rejected model never reaches it unless forced."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.serving.package_samples import FakeStore, rejected_promotion

from fusionrec.config import PackageConfig
from fusionrec.evaluation.gate import Decision
from fusionrec.packaging import PackageError, PromotionRejected, model_metadata

REPO = Path(__file__).resolve().parents[2]
CLI = "from fusionrec.cli import main; main()"


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def packaged(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("package")
    out = subprocess.run([sys.executable, "-c", CLI, "package", str(model_dir), str(tmp / "out"),
                          "--params", str(tmp / "absent.yaml")],
                         env=_env(tmp / "bentoml"), capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    return {"home": tmp / "bentoml", "package": json.loads((tmp / "out" / "package.json").read_text())}


def test_metadata_comes_from_the_model(model_dir: Path) -> None:
    meta = model_metadata(model_dir)
    assert meta["version"] and meta["data_fingerprint"] and meta["encoders"] and meta["test_metrics"]


def test_not_a_model_folder_is_refused(tmp_path: Path) -> None:
    from fusionrec.packaging import run_package

    store = FakeStore()
    with pytest.raises(PackageError, match="missing model.safetensors"):
        run_package(tmp_path, tmp_path / "out", PackageConfig(), store)
    assert store.puts == []


def test_the_model_goes_to_the_store_it_is_given(model_dir: Path, tmp_path: Path) -> None:
    from fusionrec.packaging import run_package

    store = FakeStore()
    result = run_package(model_dir, tmp_path / "out", PackageConfig(model_name="m"), store)
    record = json.loads(result.outputs["package"].read_text())
    assert record["tag"] == "m:v1" and record["store"] == "memory" and record["promotion"] is None
    (_, name, labels, meta), = store.puts
    assert name == "m" and labels["framework"] == "fusionrec" and meta["data_fingerprint"]


def test_a_rejected_model_is_refused_with_the_gates_numbers(model_dir: Path, tmp_path: Path) -> None:
    from fusionrec.packaging import run_package

    store = FakeStore()
    promotion = rejected_promotion(tmp_path / "evaluation")
    with pytest.raises(PromotionRejected) as err:
        run_package(model_dir, tmp_path / "out", PackageConfig(), store, promotion=promotion)
    for number in ("ndcg@20", "0.1234", "0.1961", "0.005", "-0.0727", "--force"):
        assert number in str(err.value)
    assert store.puts == [] and not (tmp_path / "out").exists()


def test_force_packages_a_rejected_model_and_says_so(model_dir: Path, tmp_path: Path) -> None:
    from fusionrec.packaging import run_package

    store = FakeStore()
    evaluation = rejected_promotion(tmp_path / "evaluation").parent  # the evaluate folder works too
    result = run_package(model_dir, tmp_path / "out", PackageConfig(), store, promotion=evaluation, force=True)
    record = json.loads(result.outputs["package"].read_text())
    assert record["tag"] == "fusionrec:v1" and record["store"] == "memory"
    assert record["promotion"]["promote"] is False and record["promotion"]["forced"] is True
    assert len(store.puts) == 1


def test_a_promoted_model_is_packaged(model_dir: Path, tmp_path: Path) -> None:
    from fusionrec.packaging import run_package

    store = FakeStore()
    promotion = tmp_path / "promotion.json"
    promotion.write_text(json.dumps(Decision(True, "no champion yet", "ndcg@20", 0.2, None, 0.005).to_dict()))
    result = run_package(model_dir, tmp_path / "out", PackageConfig(model_name="m"), store, promotion=promotion)
    record = json.loads(result.outputs["package"].read_text())
    assert record["tag"] == "m:v1" and record["promotion"]["promote"] is True
    assert record["promotion"]["forced"] is False and len(store.puts) == 1


@pytest.mark.parametrize("content", [None, "not json", json.dumps({"reason": "no verdict"})])
def test_a_missing_or_foreign_promotion_file_is_an_error(model_dir: Path, tmp_path: Path, content: str | None) -> None:
    from fusionrec.packaging import run_package

    promotion = tmp_path / "promotion.json"
    if content is not None:
        promotion.write_text(content)
    store = FakeStore()
    with pytest.raises(PackageError, match="promotion"):
        run_package(model_dir, tmp_path / "out", PackageConfig(), store, promotion=promotion, force=True)
    assert store.puts == []


def test_stored_model_has_metadata_and_no_pickle(packaged: dict, model_dir: Path) -> None:
    tag = packaged["package"]["tag"]
    assert tag.startswith("fusionrec:")
    stored = next((packaged["home"] / "models" / "fusionrec").glob(tag.split(":")[1]))
    assert not [p for p in stored.rglob("*") if p.suffix in (".pkl", ".pickle")]
    from fusionrec.models.recommender import Recommender

    assert Recommender.load(stored).n_items == Recommender.load(model_dir).n_items
    info = (stored / "model.yaml").read_text()
    for key in ("data_fingerprint", "test_metrics", "encoders", "trained_at"):
        assert key in info


@pytest.mark.integration
def test_bentofile_builds_offline_from_the_wheel(packaged: dict, tmp_path: Path) -> None:
    """The bento carries the fusionrec wheel (as the pipeline image does), not the source folders."""
    import shutil

    from tests.wheel_env import build_wheel

    context = tmp_path / "context"  # what `make wheel` leaves: the files the bentofile names, and dist/
    (context / "serving").mkdir(parents=True)
    shutil.copy(REPO / "serving" / "bentofile.yaml", context / "serving")
    for name in ("params.yaml", "requirements-serving.lock"):  # the files the bentofile names
        shutil.copy(REPO / name, context)
    wheel = build_wheel(context / "dist")
    bentoml = Path(sys.executable).parent / "bentoml"
    out = subprocess.run([str(bentoml), "build", "-f", "serving/bentofile.yaml", "."], cwd=context,
                         env=_env(packaged["home"]), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    (bento,) = (packaged["home"] / "bentos" / "fusionrec-serving").glob("*/bento.yaml")
    assert packaged["package"]["tag"] in bento.read_text()
    assert (bento.parent / "env" / "python" / "wheels" / wheel.name).is_file()
    assert not list((bento.parent / "src").rglob("*.py")), "source files in the bento: the wheel holds the code"


def test_with_a_rollout_the_packaged_model_becomes_the_champion(model_dir: Path, tmp_path: Path) -> None:
    """The pipeline's promoted branch: stored, published under the models root, the pointer moved."""
    from fusionrec.monitoring.rollout import Rollout, folder_version
    from fusionrec.monitoring.state import ServingState
    from fusionrec.monitoring.store import FeedbackStore
    from fusionrec.packaging import run_package

    url = f"sqlite:///{tmp_path / 'state.db'}"
    result = run_package(model_dir, tmp_path / "out", PackageConfig(), FakeStore(),
                         rollout=Rollout(str(tmp_path / "models"), url), source="kfp run r-1")
    with FeedbackStore(url) as store:
        champion = ServingState(store).champion()
    assert champion is not None and champion.model_version == folder_version(model_dir)
    assert champion.source == "kfp run r-1" and Path(champion.uri).parent == (tmp_path / "models").resolve()
    assert (Path(champion.uri) / "model.safetensors").read_bytes() == (model_dir / "model.safetensors").read_bytes()
    assert json.loads(result.outputs["package"].read_text())["champion"] == champion.to_dict()
    assert result.metrics["rolled_out"] == 1


def test_a_rejected_model_moves_no_pointer(model_dir: Path, tmp_path: Path) -> None:
    from fusionrec.monitoring.rollout import Rollout
    from fusionrec.packaging import run_package

    store = FakeStore()
    with pytest.raises(PromotionRejected):
        run_package(model_dir, tmp_path / "out", PackageConfig(), store,
                    promotion=rejected_promotion(tmp_path / "evaluation"),
                    rollout=Rollout(str(tmp_path / "models"), f"sqlite:///{tmp_path / 'state.db'}"))
    assert store.puts == [] and not (tmp_path / "models").exists() and not (tmp_path / "state.db").exists()


def test_without_a_rollout_only_the_store_gets_the_model(model_dir: Path, tmp_path: Path) -> None:
    from fusionrec.packaging import run_package

    result = run_package(model_dir, tmp_path / "out", PackageConfig(), FakeStore())
    assert json.loads(result.outputs["package"].read_text())["champion"] is None
    assert result.metrics["rolled_out"] == 0


def test_a_pipeline_task_rolls_out_only_with_the_state_database() -> None:
    """The package task's env decides: no URL (a run on one machine) packages only; a URL without a
    models root would point every replica at a folder inside the task, so it is refused."""
    from fusionrec.monitoring.rollout import Rollout, RolloutError, rollout_from_env

    assert rollout_from_env("/models", {}) is None
    assert rollout_from_env("/models", {"FUSIONREC_FEEDBACK_URL": "  "}) is None
    url = "postgresql+psycopg://fusionrec:secret@db:5432/fusionrec"
    rollout = rollout_from_env("/models", {"FUSIONREC_FEEDBACK_URL": url})
    assert rollout == Rollout("/models", url) and "secret" not in repr(rollout)
    with pytest.raises(RolloutError, match="monitor.models_root") as err:
        rollout_from_env("", {"FUSIONREC_FEEDBACK_URL": url})
    assert "secret" not in str(err.value)


def test_package_roll_out_moves_the_champion_pointer(model_dir: Path, tmp_path: Path) -> None:
    """`fusionrec package --roll-out URL --models-root DIR`: how a first champion is installed by hand."""
    from fusionrec.monitoring.state import ServingState
    from fusionrec.monitoring.store import FeedbackStore

    url = f"sqlite:///{tmp_path / 'state.db'}"
    out = subprocess.run([sys.executable, "-c", CLI, "package", str(model_dir), str(tmp_path / "out"),
                          "--params", str(tmp_path / "absent.yaml"), "--roll-out", url,
                          "--models-root", str(tmp_path / "models")],
                         env=_env(tmp_path / "bentoml"), capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    with FeedbackStore(url) as store:
        champion = ServingState(store).champion()
    assert champion is not None and Path(champion.uri).parent == tmp_path / "models"
    assert (Path(champion.uri) / "model.safetensors").is_file()
    assert f"champion: {champion.model_version}" in out.stdout
    refused = subprocess.run([sys.executable, "-c", CLI, "package", str(model_dir), str(tmp_path / "out2"),
                              "--params", str(tmp_path / "absent.yaml"), "--roll-out", url],
                             env=_env(tmp_path / "bentoml"), capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert refused.returncode == 2 and "--models-root" in refused.stderr
