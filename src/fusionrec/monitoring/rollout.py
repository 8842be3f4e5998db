"""Model rollout: put a promoted model where every replica can read it, then move the champion pointer.

The models root (monitor.models_root) is a folder every pod mounts (a shared volume, read-only in
the serving pods) or an fsspec URI (s3://, gs://, ...; needs fsspec and its filesystem package).
A model is published under a name made of its version and a hash of its weights, completely,
before the pointer names it: a replica never sees half a model. On a local folder the copy is
written next to its final name and renamed into place. A replica fetches a remote model into
its own cache folder once, by the same atomic rename.

A retraining run promotes with the state it already holds (`promote`); the training pipeline's
`package` task promotes with a `Rollout` built from its env (`rollout_from_env`): the database
URL from a Kubernetes Secret, the models root from the run's `models_root` parameter.

Every promotion publishes one more folder, so a promotion also deletes, under the models root,
the folders of champions that the last `keep` promotions no longer name (monitor.keep_models).
Only folders a promotion once named are candidates: a folder being published right now, or one
a failed promotion left behind, is never touched. A replica deletes the object-store models it
fetched into its cache once it serves a newer one (`prune_cache`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fusionrec.io import read_json
from fusionrec.schema import MODEL_CONFIG, MODEL_WEIGHTS

if TYPE_CHECKING:
    from fusionrec.monitoring.state import Champion, ServingState

logger = logging.getLogger(__name__)

FEEDBACK_URL_ENV = "FUSIONREC_FEEDBACK_URL"  # the feedback store's database, which holds the champion pointer


class RolloutError(RuntimeError):
    """A model that cannot be published or fetched; the message names the URI and what to do."""


def model_version(meta: dict[str, Any] | None, folder_name: str) -> str:
    """The version a served model reports: meta.version (else the folder's name), plus +trained_at
    when known, since a version alone may repeat across retrains."""
    meta = meta or {}
    version = str(meta.get("version") or folder_name)
    return f"{version}+{meta['trained_at']}" if meta.get("trained_at") else version


def folder_version(model_dir: Path) -> str:
    """`model_version` of a model folder, from its config.json."""
    path = Path(model_dir) / MODEL_CONFIG
    if not path.is_file():
        raise RolloutError(f"{model_dir}: not a model folder (no {MODEL_CONFIG}); run `fusionrec train` first")
    return model_version(read_json(path).get("meta"), Path(model_dir).name)


def is_remote(uri: str) -> bool:
    """True for an fsspec URI with a scheme other than file:// (a bare path is local)."""
    scheme = uri.split("://", 1)[0] if "://" in uri else ""
    return bool(scheme) and scheme != "file"


def _local(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


def _filesystem(uri: str) -> tuple[Any, str]:
    try:
        import fsspec
    except ImportError:
        raise RolloutError(f"{uri}: an object-store URI needs the `fsspec` package (and the one for its "
                           "scheme, e.g. s3fs); install it or use a shared folder as monitor.models_root") from None
    try:
        fs, path = fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as exc:
        raise RolloutError(f"{uri}: no filesystem for this URI ({exc})") from None
    return fs, path


def published_name(model_dir: Path) -> str:
    """<version>-<first 10 hex of the weights' sha256>, with characters safe in any path or key."""
    digest = hashlib.sha256()
    with open(Path(model_dir) / MODEL_WEIGHTS, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", folder_version(model_dir)).strip("._") or "model"
    return f"{safe[:120]}-{digest.hexdigest()[:10]}"


def publish_model(model_dir: Path, models_root: str) -> str:
    """Copy a model folder under the models root (once); returns the URI replicas load it from.

    Args:
        model_dir: a model folder written by `fusionrec train`.
        models_root: a folder every replica mounts, or an fsspec URI; "" = the folder stays where
            it is and its absolute path is the URI (one machine).
    """
    model_dir = Path(model_dir)
    if not (model_dir / MODEL_WEIGHTS).is_file():
        raise RolloutError(f"{model_dir}: not a model folder (no {MODEL_WEIGHTS}); run `fusionrec train` first")
    if not models_root:
        return str(model_dir.resolve())
    name = published_name(model_dir)
    if is_remote(models_root):
        fs, root = _filesystem(models_root)
        target = f"{root.rstrip('/')}/{name}"
        if not fs.exists(f"{target}/{MODEL_WEIGHTS}"):
            fs.put(str(model_dir), target, recursive=True)
        return f"{models_root.rstrip('/')}/{name}"
    root_dir = _local(models_root)
    folder = root_dir / name
    if not folder.is_dir():
        try:
            root_dir.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=root_dir, prefix=f".{name}."))
            shutil.copytree(model_dir, tmp, dirs_exist_ok=True)
            os.replace(tmp, folder)
        except OSError as exc:
            raise RolloutError(f"cannot publish {model_dir} to {models_root}: {exc} (monitor.models_root must be "
                               "writable here and mounted by every serving replica)") from None
    return str(folder.resolve())


def fetch_model(uri: str, cache_dir: Path) -> Path:
    """A local model folder for a champion URI: the path itself, or a copy in cache_dir (kept)."""
    if not is_remote(uri):
        path = _local(uri)
        if not (path / MODEL_WEIGHTS).is_file():
            raise RolloutError(f"champion {uri}: no model folder there (is the models volume mounted?)")
        return path
    fs, remote = _filesystem(uri)
    target = Path(cache_dir) / re.sub(r"[^A-Za-z0-9._-]+", "_", remote.rstrip("/").rsplit("/", 1)[-1])
    if (target / MODEL_WEIGHTS).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        fs.get(remote.rstrip("/") + "/", str(tmp), recursive=True)
        if not (tmp / MODEL_WEIGHTS).is_file():
            raise RolloutError(f"champion {uri}: fetched, but it holds no {MODEL_WEIGHTS}")
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def promote(model_dir: Path, state: ServingState, models_root: str = "", source: str = "",
            keep: int = 0) -> Champion:
    """Publish a model under the models root and make it the champion of every replica.

    Args:
        keep: then delete the models root's folders of champions older than the last `keep`
            promotions (0 = keep every folder); a failure to delete is logged, never raised.
    Returns:
        The new pointer (id, model_version, uri, promoted_at, source).
    """
    uri = publish_model(model_dir, models_root)
    champion = state.set_champion(folder_version(Path(model_dir)), uri, source)
    if keep > 0 and models_root:
        try:
            deleted = prune_published(models_root, state.champions(), keep)
        except Exception as exc:  # noqa: BLE001 (the promotion stands; the next one tries again)
            logger.warning("old champions under %s not deleted: %s", models_root, exc)
        else:
            if deleted:
                logger.info("deleted %d old champion folder(s) under %s: %s", len(deleted), models_root, deleted)
    return champion


def _under(uri: str, models_root: str) -> bool:
    """True when `uri` is a folder directly under the models root (where `publish_model` writes)."""
    if is_remote(uri) or is_remote(models_root):
        return uri.rstrip("/").rsplit("/", 1)[0] == models_root.rstrip("/")
    return _local(uri).resolve().parent == _local(models_root).resolve()


def prune_published(models_root: str, champions: Sequence[Champion], keep: int) -> list[str]:
    """Delete the folders of champions that the last `keep` promotions no longer name.

    Args:
        models_root: the folder or fsspec URI models are published under; nothing outside it
            is deleted (a first champion installed from elsewhere stays).
        champions: the promotion log, oldest first (`ServingState.champions`).
        keep: how many of the newest promotions keep their folders (a rollback re-promotes
            one of them); at least 1.
    Returns:
        The URIs deleted.
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1 (the champion itself), got {keep}")
    kept = {c.uri for c in champions[-keep:]}
    stale = list(dict.fromkeys(c.uri for c in champions[:-keep] if c.uri not in kept and _under(c.uri, models_root)))
    deleted = []
    for uri in stale:
        if is_remote(uri):
            fs, key = _filesystem(uri)
            if not fs.exists(key):
                continue
            if fs.exists(f"{key}/{MODEL_WEIGHTS}"):  # first: a half-deleted folder is then no model to
                fs.rm(f"{key}/{MODEL_WEIGHTS}")  # publish_model, which puts the whole folder again
            fs.rm(key, recursive=True)
        else:
            folder = _local(uri)
            if not folder.is_dir():
                continue
            _remove_folder(folder)
        deleted.append(uri)
    return deleted


def _remove_folder(path: Path) -> None:
    """Rename a folder to a hidden name, then delete it: a crash halfway leaves no half model under
    a published name (publish_model would otherwise take it for a complete copy)."""
    doomed = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.deleting."))
    os.replace(path, doomed / path.name)
    shutil.rmtree(doomed, ignore_errors=True)


def prune_cache(cache_dir: Path, keep: Iterable[Path]) -> list[Path]:
    """Delete the models a replica fetched into `cache_dir`, except those in `keep` (in use).

    Hidden folders (a fetch in progress) are left alone. Returns the folders deleted.
    """
    cache_dir = Path(cache_dir)
    if not cache_dir.is_dir():
        return []
    kept = {Path(p).resolve() for p in keep}
    deleted = []
    for folder in sorted(cache_dir.iterdir()):
        if folder.is_dir() and not folder.name.startswith(".") and folder.resolve() not in kept:
            _remove_folder(folder)
            deleted.append(folder)
    return deleted


@dataclass(frozen=True)
class Rollout:
    """Where a promotion goes when no state is open yet (a pipeline task): the models root every
    replica reads and the database whose champion pointer they follow."""

    models_root: str
    state_url: str = field(repr=False)  # a database URL holds its password
    keep: int = 0  # promote's `keep`: folders of the newest promotions left under models_root (0 = all)

    def promote(self, model_dir: Path, source: str = "") -> Champion:
        """`promote` the model on the state of `state_url`, opened for this call."""
        from fusionrec.monitoring.state import ServingState
        from fusionrec.monitoring.store import FeedbackStore

        with FeedbackStore(self.state_url) as store:
            return promote(model_dir, ServingState(store), self.models_root, source, keep=self.keep)


def rollout_from_env(models_root: str, env: Mapping[str, str] | None = None, keep: int = 0) -> Rollout | None:
    """The rollout of a model promoted inside a pipeline task, or None to package it only.

    The database URL is $FUSIONREC_FEEDBACK_URL (on Kubeflow it comes from the Secret named by
    pipeline.state_secret). Without it there is no pointer to move: a run on one machine, or a
    pipeline compiled with pipeline.state_secret empty, packages the model and stops there.

    Args:
        models_root: where the task publishes (the run's `models_root` parameter).
        env: the variables to read (default: this process's environment).
        keep: folders of the newest promotions left under models_root (monitor.keep_models).
    Raises:
        RolloutError: the URL is set but models_root is empty: the pointer would name a folder
            inside this task, which no serving replica can read.
    """
    url = ((os.environ if env is None else env).get(FEEDBACK_URL_ENV) or "").strip()
    if not url:
        return None
    if not models_root:
        raise RolloutError(f"${FEEDBACK_URL_ENV} is set, so this task would move the champion pointer, but "
                           "models_root is empty and the model would stay inside this task where no serving "
                           "replica reads it: set monitor.models_root to an object-store URI, or keep "
                           "pipeline.models_pvc (the models volume, mounted at /models) and recompile")
    return Rollout(models_root, url, keep)


__all__ = ["FEEDBACK_URL_ENV", "Rollout", "RolloutError", "fetch_model", "folder_version", "is_remote",
           "model_version", "promote", "prune_cache", "prune_published", "publish_model", "published_name",
           "rollout_from_env"]
