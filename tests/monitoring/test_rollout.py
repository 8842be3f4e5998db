"""Model rollout: a promoted model is published whole under the models root (a folder or an fsspec
URI), fetched by a replica into its cache, and named by the champion pointer only once it is there."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.serving.serving_fixtures import versioned_copy

from fusionrec.monitoring.rollout import (
    RolloutError,
    fetch_model,
    folder_version,
    is_remote,
    promote,
    prune_cache,
    prune_published,
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
    v2 = versioned_copy(model_dir, tmp_path / "v2", "v2")
    with FeedbackStore(tmp_path / "fb.db") as store:
        state = ServingState(store)
        champ = promote(v2, state, str(tmp_path / "models"), source="runs/x")
        assert state.champion() == champ and champ.model_version == folder_version(v2)
        assert champ.model_version.startswith("v2+") and champ.source == "runs/x"
        assert _files(Path(champ.uri)) == _files(v2) and Path(champ.uri).parent == (tmp_path / "models").resolve()


def test_a_promotion_deletes_the_folders_of_champions_beyond_keep(model_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "models"
    models = [versioned_copy(model_dir, tmp_path / f"v{i}", f"v{i}") for i in range(5)]
    with FeedbackStore(tmp_path / "fb.db") as store:
        state = ServingState(store)
        first = promote(models[0], state, "", source="by hand", keep=2)  # outside the models root
        assert Path(first.uri) == models[0].resolve()
        unpromoted = publish_model(models[4], str(root))  # published, never named by a promotion
        uris = [promote(m, state, str(root), keep=2).uri for m in models[1:4]]
        assert sorted(p.name for p in root.iterdir()) == sorted(Path(u).name for u in [*uris[1:], unpromoted])
        assert (models[0] / "config.json").is_file()  # outside the root: never deleted
        again = promote(models[2], state, str(root), keep=2)  # a rollback re-promotes a kept folder
        assert again.uri == uris[1] and Path(uris[2]).is_dir()
        promote(models[1], state, str(root), keep=2)  # a deleted champion comes back by a new publish
        assert {Path(c.uri).name for c in state.champions()[-2:]} <= {p.name for p in root.iterdir()}
        assert not Path(uris[2]).exists() and Path(unpromoted).is_dir()
        assert not [p for p in root.iterdir() if p.name.startswith(".")]  # nothing half-deleted left
        everything = promote(models[3], state, str(root), keep=0)  # 0: keep every folder
        assert Path(everything.uri).is_dir() and Path(uris[1]).is_dir()


def test_pruning_an_object_store_root(model_dir: Path, tmp_path: Path) -> None:
    fsspec = pytest.importorskip("fsspec")
    root = "memory://fusionrec-prune/models"
    with FeedbackStore(tmp_path / "fb.db") as store:
        state = ServingState(store)
        uris = [promote(versioned_copy(model_dir, tmp_path / f"v{i}", f"v{i}"), state, root, keep=1).uri for i in range(3)]
    fs = fsspec.filesystem("memory")
    assert [fs.exists(u.removeprefix("memory://")) for u in uris] == [False, False, True]
    with pytest.raises(ValueError, match="at least 1"):
        prune_published(root, [], 0)


def test_a_replica_cache_keeps_only_the_models_in_use(model_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("fsspec")
    cache = tmp_path / "cache"
    fetched = [fetch_model(publish_model(versioned_copy(model_dir, tmp_path / f"v{i}", f"v{i}"), "memory://fusionrec-cache/m"),
                           cache) for i in range(3)]
    (cache / ".in-flight.fetch").mkdir()  # a fetch under way is a hidden folder: left alone
    assert prune_cache(cache, [fetched[2], fetched[1]]) == [fetched[0]]
    assert sorted(p.name for p in cache.iterdir()) == sorted([fetched[1].name, fetched[2].name, ".in-flight.fetch"])
