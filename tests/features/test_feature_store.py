"""The features folder: save/load round trip, masks, clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fusionrec.features.store import (
    FeatureMatrix,
    FeatureStoreError,
    load_features,
    save_feature,
    slugify,
    write_manifest,
)


def _write(folder: Path, fms: list[FeatureMatrix]) -> None:
    entries = {}
    for fm in fms:
        entries[fm.name] = {"modality": fm.modality, "encoder": fm.encoder, "files": save_feature(folder, fm)}
    write_manifest(folder, {"features": entries})


def test_round_trip_zeroes_masked_rows(tmp_path: Path) -> None:
    values = np.arange(12, dtype=np.float32).reshape(4, 3)
    mask = np.array([True, False, True, True])
    _write(tmp_path, [FeatureMatrix("image:tv:resnet18", "image", "tv:resnet18", values, mask)])
    assert (tmp_path / "image__tv-resnet18.npy").exists()
    fm = load_features(tmp_path)["image:tv:resnet18"]
    assert fm.values.dtype == np.float32 and fm.dim == 3 and fm.coverage == 0.75
    assert np.all(fm.values[1] == 0) and np.array_equal(fm.values[2], values[2])
    assert fm.mask.tolist() == mask.tolist()


def test_missing_manifest_and_unknown_key_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(FeatureStoreError, match="run `fusionrec featurize`"):
        load_features(tmp_path)
    _write(tmp_path, [FeatureMatrix("text:tfidf", "text", "tfidf", np.ones((2, 2), np.float32), np.ones(2, bool))])
    with pytest.raises(FeatureStoreError, match="available: \\['text:tfidf'\\]"):
        load_features(tmp_path, ["text:minilm"])


def test_matrices_of_different_lengths_are_refused(tmp_path: Path) -> None:
    _write(tmp_path, [FeatureMatrix("text:a", "text", "a", np.ones((2, 2), np.float32), np.ones(2, bool)),
                      FeatureMatrix("text:b", "text", "b", np.ones((3, 2), np.float32), np.ones(3, bool))])
    with pytest.raises(FeatureStoreError, match="disagree"):
        load_features(tmp_path)


def test_slugify_is_file_safe() -> None:
    assert slugify("tv:resnet50") == "tv-resnet50"
    assert slugify("hf:/models/e5 small") == "hf--models-e5-small"


def test_importing_features_does_not_import_torch() -> None:
    code = ("import sys, fusionrec.features.registry, fusionrec.features.store, fusionrec.features.pipeline, "
            "fusionrec.cli.features; print(any(m.split('.')[0] in ('torch', 'transformers', 'sklearn') "
            "for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
