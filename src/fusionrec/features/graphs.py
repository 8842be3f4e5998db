"""A disk cache of built ONNX graphs, shared by the text (ort.py) and image (ort_image.py) runtimes.

A graph is built once per key (a hash of the weights and the recipe that shapes the graph)
and kept in `<root>/<key>/model.onnx` with a `graph.json` that records the key. An encoder
state folder (a model's `encoders/<name>/`) may carry a copy, which is then used as is, so
serving never rebuilds what featurize built. Builds write to a temporary folder that is
renamed into place: a crash or a concurrent build never leaves half a graph where a reader looks.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

GRAPH_FILE = "model.onnx"
INFO_FILE = "graph.json"


def default_graph_root(cache_dir: str) -> Path:
    """Where built graphs are kept: `<featurize.cache_dir>/graphs`, else the user's cache folder."""
    if cache_dir:
        return Path(cache_dir) / "graphs"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    root = Path(base) / "fusionrec" / "graphs"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home (a pod): build next to the other temporary files
        root = Path(tempfile.gettempdir()) / "fusionrec-graphs"
    return root


def graph_info(folder: Path) -> dict[str, Any]:
    """The graph.json of a folder that holds a graph, else {}."""
    path = folder / INFO_FILE
    if not (path.is_file() and (folder / GRAPH_FILE).is_file()):
        return {}
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def cached(key: str, root: Path, state_dir: Path | None, build: Callable[[Path], dict[str, Any]]) -> Path:
    """The graph for `key`: from the state folder, the cache, or built now.

    Args:
        key: what the graph is built from (weights and recipe), hashed.
        root: the graph cache (one sub-folder per key).
        state_dir: an encoder state folder that may hold the graph.
        build: writes `<folder>/model.onnx` into the folder it is given and returns what
            graph.json should record besides the key and the graph's sha256.
    """
    if state_dir is not None and graph_info(state_dir).get("key") == key:
        return state_dir / GRAPH_FILE
    target = root / key
    if graph_info(target).get("key") != key:
        build_atomically(target, key, build)
    return target / GRAPH_FILE


def build_atomically(target: Path, key: str, build: Callable[[Path], dict[str, Any]]) -> None:
    """Run `build` in a temporary sibling of `target`, record graph.json, and rename it to `target`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        extra = build(work)
        info = {"key": key, **extra, "sha256": hashlib.sha256((work / GRAPH_FILE).read_bytes()).hexdigest()}
        (work / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def copy_graph(graph: Path, state_dir: Path) -> None:
    """Put a built graph (and its graph.json) into an encoder state folder."""
    state_dir.mkdir(parents=True, exist_ok=True)
    for name in (GRAPH_FILE, INFO_FILE):
        if (graph.parent / name).resolve() != (state_dir / name).resolve():
            shutil.copyfile(graph.parent / name, state_dir / name)


__all__ = ["GRAPH_FILE", "INFO_FILE", "build_atomically", "cached", "copy_graph", "default_graph_root", "graph_info"]
