"""vectors:<path>: aligned by item id; wrong dimension, NaN, unknown ids handled as documented."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fusionrec.config import FeaturizeConfig
from fusionrec.features.vectors import VectorsError, align_vectors

CATALOGUE = ["a", "b", "c", "d"]
CFG = FeaturizeConfig(normalize=False)


def _parquet(path: Path, ids: list, vectors: list) -> Path:
    pd.DataFrame({"item_id": ids, "emb": vectors}).to_parquet(path)
    return path


def test_rows_align_by_id_not_position(tmp_path: Path) -> None:
    path = _parquet(tmp_path / "audio.parquet", ["c", "a", "d", "b"],
                    [[3.0, 3.0], [1.0, 1.0], [4.0, 4.0], [2.0, 2.0]])
    fm, report = align_vectors(f"vectors:{path}", CATALOGUE, CFG)
    assert fm.name == "vectors:audio" and fm.values[:, 0].tolist() == [1, 2, 3, 4] and fm.mask.all()
    assert report["unknown_ids"] == 0


def test_integer_ids_match_string_catalogue_ids(tmp_path: Path) -> None:
    path = _parquet(tmp_path / "v.parquet", [1, 2], [[1.0], [2.0]])
    fm, _ = align_vectors(f"vectors:clip={path}", ["1", "2", "3"], CFG)
    assert fm.name == "vectors:clip" and fm.mask.tolist() == [True, True, False]


def test_wrong_dimension_is_an_error_naming_the_item(tmp_path: Path) -> None:
    path = _parquet(tmp_path / "v.parquet", ["a", "b", "c"], [[1.0, 2.0], [1.0, 2.0, 3.0], [1.0, 2.0]])
    with pytest.raises(VectorsError, match="item 'b' has dimension 3, expected 2"):
        align_vectors(f"vectors:{path}", CATALOGUE, CFG)


def test_nan_row_is_masked_and_reported(tmp_path: Path) -> None:
    path = _parquet(tmp_path / "v.parquet", CATALOGUE, [[1.0, 0.0], [np.nan, 1.0], [0.0, np.inf], [1.0, 1.0]])
    fm, report = align_vectors(f"vectors:{path}", CATALOGUE, CFG)
    assert fm.mask.tolist() == [True, False, False, True] and np.all(fm.values[1:3] == 0)
    assert report["nonfinite_items"] == 2 and report["nonfinite_examples"] == ["b", "c"]


def test_unknown_ids_are_dropped_and_counted_missing_items_masked(tmp_path: Path) -> None:
    path = _parquet(tmp_path / "v.parquet", ["a", "b", "c", "zz"], [[1.0], [2.0], [3.0], [9.0]])
    fm, report = align_vectors(f"vectors:{path}", CATALOGUE, CFG)
    assert fm.mask.tolist() == [True, True, True, False] and fm.values[:3, 0].tolist() == [1, 2, 3]
    assert report["unknown_ids"] == 1 and report["unknown_id_examples"] == ["zz"]


def test_low_coverage_is_an_error_showing_both_id_styles(tmp_path: Path) -> None:
    path = _parquet(tmp_path / "v.parquet", ["item_a", "item_b"], [[1.0], [2.0]])
    with pytest.raises(VectorsError, match="cover 0.0% .*item_a.*catalogue ids e.g. \\['a'"):
        align_vectors(f"vectors:{path}", CATALOGUE, CFG)


def test_npy_with_id_file(tmp_path: Path) -> None:
    np.save(tmp_path / "video.npy", np.array([[2.0, 0.0], [0.0, 3.0]], np.float32))
    (tmp_path / "video.ids.json").write_text(json.dumps(["d", "a"]))
    fm, _ = align_vectors(f"vectors:{tmp_path / 'video.npy'}", CATALOGUE[:3] + ["d"], FeaturizeConfig(vectors_min_coverage=0.1))
    assert fm.mask.tolist() == [True, False, False, True]
    assert np.allclose(fm.values[0], [0, 1]) and np.allclose(fm.values[3], [1, 0])  # L2-normalised


def test_npy_id_count_mismatch_and_missing_id_file(tmp_path: Path) -> None:
    np.save(tmp_path / "v.npy", np.ones((3, 2), np.float32))
    with pytest.raises(VectorsError, match="no id file"):
        align_vectors(f"vectors:{tmp_path / 'v.npy'}", CATALOGUE, CFG)
    (tmp_path / "v.ids.txt").write_text("a\nb\n")
    with pytest.raises(VectorsError, match="3 rows but 2 ids.*misaligned"):
        align_vectors(f"vectors:{tmp_path / 'v.npy'}", CATALOGUE, CFG)


def test_duplicate_ids_and_ambiguous_columns(tmp_path: Path) -> None:
    path = _parquet(tmp_path / "v.parquet", ["a", "a"], [[1.0], [2.0]])
    with pytest.raises(VectorsError, match="duplicate item ids"):
        align_vectors(f"vectors:{path}", CATALOGUE, CFG)
    two = tmp_path / "two.parquet"
    pd.DataFrame({"item_id": ["a"], "x": [[1.0]], "y": [[2.0]]}).to_parquet(two)
    with pytest.raises(VectorsError, match="#<column>"):
        align_vectors(f"vectors:{two}", CATALOGUE, CFG)
    fm, _ = align_vectors(f"vectors:{two}#y", ["a"], CFG)
    assert fm.values[0, 0] == 2.0
