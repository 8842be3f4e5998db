"""The neighbour-label check separates a meaningful embedding from a random one."""

from __future__ import annotations

import numpy as np

from fusionrec.features.quality import label_matrix, neighbour_label_share


def test_label_matrix_splits_and_handles_missing() -> None:
    m = label_matrix(["A|B", "B", None, ""])
    assert m.shape == (4, 2) and m[0].all() and m[1].tolist() == [False, True] and not m[2:].any()


def test_clustered_embedding_beats_random() -> None:
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(4), 30)
    centres = rng.normal(size=(4, 16)) * 5
    good = centres[groups] + rng.normal(size=(120, 16))
    labels = label_matrix([f"g{g}" for g in groups])
    mask = np.ones(120, bool)
    ok = neighbour_label_share(good, mask, labels, k=10)
    bad = neighbour_label_share(rng.normal(size=(120, 16)), mask, labels, k=10)
    assert ok["share"] > 0.95
    assert abs(bad["share"] - bad["random"]) < 0.1 and abs(bad["random"] - 0.25) < 0.05


def test_masked_items_are_left_out() -> None:
    labels = label_matrix(["a"] * 5)
    result = neighbour_label_share(np.eye(5), np.array([True, True, False, True, True]), labels, k=2)
    assert result["items"] == 4
