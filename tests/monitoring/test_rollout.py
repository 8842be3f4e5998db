"""Model rollout: a promoted model is published whole under the models root (a folder or an fsspec
URI), fetched by a replica into its cache, and named by the champion pointer only once it is there."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fusionrec.monitoring.rollout import (
    RolloutError,
    fetch_model,
    folder_version,
    is_remote,
    promote,
    publish_model,
)
from fusionrec.monitoring.state import ServingState
from fusionrec.monitoring.store import FeedbackStore


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_publish_to_a_shared_folder_is_whole_and_once(model_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "models"
    uri = publish_model(model_dir, str(root))
    assert Path(uri).parent == root.resolve() and _files(Path(uri)) == _files(model_dir)
    assert publish_model(model_dir, str(root)) == uri  # the same model: the same folder, not a second copy
    assert [p.name for p in root.iterdir()] == [Path(uri).name]  # no temporary folder left behind
    assert fetch_model(uri, tmp_path / "cache") == Path(uri)  # a local path is read where it is


def test_without_a_models_root_the_model_stays_where_it_is(model_dir: Path) -> None:
    assert publish_model(model_dir, "") == str(model_dir.resolve())


def test_publish_and_fetch_through_an_fsspec_uri(model_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("fsspec")
    uri = publish_model(model_dir, "memory://fusionrec-test/models")
    assert is_remote(uri) and uri.startswith("memory://fusionrec-test/models/")
    local = fetch_model(uri, tmp_path / "cache")
    assert local.parent == tmp_path / "cache" and _files(local) == _files(model_dir)
    assert fetch_model(uri, tmp_path / "cache") == local  # cached: fetched once


def test_a_missing_model_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(RolloutError, match="models volume"):
        fetch_model(str(tmp_path / "gone"), tmp_path / "cache")
    with pytest.raises(RolloutError, match="not a model folder"):
        publish_model(tmp_path, str(tmp_path / "models"))


def test_promote_publishes_then_moves_the_pointer(model_dir: Path, tmp_path: Path) -> None:
    v2 = Path(shutil.copytree(model_dir, tmp_path / "v2"))
    config = json.loads((v2 / "config.json").read_text())
    config["meta"]["version"] = "v2"
    (v2 / "config.json").write_text(json.dumps(config))
    with FeedbackStore(tmp_path / "fb.db") as store:
        state = ServingState(store)
        champ = promote(v2, state, str(tmp_path / "models"), source="runs/x")
        assert state.champion() == champ and champ.model_version == folder_version(v2)
        assert champ.model_version.startswith("v2+") and champ.source == "runs/x"
        assert _files(Path(champ.uri)) == _files(v2) and Path(champ.uri).parent == (tmp_path / "models").resolve()
