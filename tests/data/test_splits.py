"""Split invariants for every protocol, external splits, and random-811 against ml100k-mm's file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fusionrec import schema
from fusionrec.config import IngestConfig, SplitConfig
from fusionrec.data.ingest import run_ingest
from fusionrec.data.loading import SplitError, load_ingested, load_split
from fusionrec.data.splits import run_split, split_frames

PROTOCOLS = ("random-811", "temporal-loo", "global-time", "cold-items")
PAIR = [schema.USER_ID, schema.ITEM_ID]


def _pairs(frame: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(frame[schema.USER_ID], frame[schema.ITEM_ID], strict=True))


@pytest.fixture(scope="module")
def ingested(ingested_dir: Path):  # noqa: ANN201
    return load_ingested(ingested_dir)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_parts_partition_the_interactions(ingested, protocol: str) -> None:  # noqa: ANN001
    split = split_frames(ingested, SplitConfig(protocol=protocol))  # type: ignore[arg-type]
    parts = [split.part(p) for p in schema.SPLIT_PARTS]
    assert sum(len(p) for p in parts) == len(ingested.interactions)
    pairs = [_pairs(p) for p in parts]
    assert not (pairs[0] & pairs[1]) and not (pairs[0] & pairs[2]) and not (pairs[1] & pairs[2])
    assert set().union(*pairs) == _pairs(ingested.interactions)
    assert all(len(p) > 0 for p in parts)
    assert list(split.train.columns) == list(ingested.interactions.columns)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_deterministic_and_seed_sensitive(ingested, protocol: str) -> None:  # noqa: ANN001
    cfg = SplitConfig(protocol=protocol)  # type: ignore[arg-type]
    a, b = split_frames(ingested, cfg), split_frames(ingested, cfg)
    for part in schema.SPLIT_PARTS:
        pd.testing.assert_frame_equal(a.part(part), b.part(part))
    if protocol in ("random-811", "cold-items"):
        c = split_frames(ingested, cfg.with_overrides(seed=cfg.seed + 1))  # type: ignore[attr-defined]
        assert _pairs(c.test) != _pairs(a.test)


def test_random_811_shares_per_user(ingested) -> None:  # noqa: ANN001
    split = split_frames(ingested, SplitConfig(protocol="random-811"))
    sizes = {p: split.part(p).groupby(schema.USER_IDX).size() for p in schema.SPLIT_PARTS}
    total = ingested.interactions.groupby(schema.USER_IDX).size()
    big = total[total >= 10].index
    expected_train = (total[big] * 0.8).map(round)
    assert (sizes["train"].reindex(big) == expected_train).all()


def test_temporal_loo_tests_the_last_interaction(ingested) -> None:  # noqa: ANN001
    split = split_frames(ingested, SplitConfig(protocol="temporal-loo"))
    assert split.test.groupby(schema.USER_IDX).size().max() == 1
    last_train = split.train.groupby(schema.USER_IDX)[schema.TIMESTAMP].max()
    test_ts = split.test.set_index(schema.USER_IDX)[schema.TIMESTAMP]
    valid_ts = split.valid.set_index(schema.USER_IDX)[schema.TIMESTAMP]
    assert (test_ts >= valid_ts.reindex(test_ts.index)).all()
    assert (valid_ts >= last_train.reindex(valid_ts.index)).all()


def test_global_time_is_one_cut(ingested) -> None:  # noqa: ANN001
    split = split_frames(ingested, SplitConfig(protocol="global-time"))
    assert split.train[schema.TIMESTAMP].max() <= split.valid[schema.TIMESTAMP].min()
    assert split.valid[schema.TIMESTAMP].max() <= split.test[schema.TIMESTAMP].min()
    assert len(split.test) == round(0.1 * len(ingested.interactions))


def test_cold_items_never_in_train(ingested_dir: Path, ingested, tmp_path: Path) -> None:  # noqa: ANN001
    result = run_split(ingested_dir, tmp_path / "cold", SplitConfig(protocol="cold-items", test_share=0.2))
    split = load_split(tmp_path / "cold", ingested)
    assert len(split.cold_items) == result.metrics["cold_items"] > 0
    assert not set(split.train[schema.ITEM_IDX]) & set(split.cold_items)
    held = set(split.valid[schema.ITEM_IDX]) | set(split.test[schema.ITEM_IDX])
    assert held == set(split.cold_items)
    ids = json.loads((tmp_path / "cold" / schema.COLD_ITEMS).read_text())
    assert set(ingested.item_index().loc[ids]) == set(split.cold_items)


def test_run_split_writes_parts_and_report(split_dir: Path, ingested) -> None:  # noqa: ANN001
    report = json.loads((split_dir / schema.REPORT).read_text())
    split = load_split(split_dir, ingested)
    for part in schema.SPLIT_PARTS:
        assert report["parts"][part]["rows"] == len(split.part(part))
    mat = split.matrix("train")
    assert mat.shape == (ingested.n_users, ingested.n_items) and mat.dtype == np.float32
    assert mat.nnz == len(_pairs(split.train)) and set(mat.data) == {1.0}


def test_external_split_in_original_ids(split_dir: Path, ingested_dir: Path, ingested, tmp_path: Path) -> None:  # noqa: ANN001
    ext = tmp_path / "ext"
    ext.mkdir()
    for part in schema.SPLIT_PARTS:  # another tool's files: original ids only, CSV
        pd.read_parquet(split_dir / f"{part}.parquet")[[*PAIR, schema.TIMESTAMP]].to_csv(ext / f"{part}.csv", index=False)
    run_split(ingested_dir, tmp_path / "adopted", SplitConfig(), external=ext)
    ours, theirs = load_split(split_dir, ingested), load_split(tmp_path / "adopted", ingested)
    for part in schema.SPLIT_PARTS:
        pd.testing.assert_frame_equal(ours.part(part), theirs.part(part))
    assert json.loads((tmp_path / "adopted" / schema.REPORT).read_text())["protocol"] == "external"


def test_external_split_with_unknown_id_names_file_and_row(split_dir: Path, ingested, tmp_path: Path) -> None:  # noqa: ANN001
    ext = tmp_path / "ext"
    ext.mkdir()
    for part in schema.SPLIT_PARTS:
        pd.read_parquet(split_dir / f"{part}.parquet")[PAIR].to_csv(ext / f"{part}.csv", index=False)
    test = pd.read_csv(ext / "test.csv", dtype=str)
    test.loc[3, schema.ITEM_ID] = "no-such-item"
    test.to_csv(ext / "test.csv", index=False)
    with pytest.raises(SplitError, match=r"test\.csv.*row 3: 'no-such-item'"):
        load_split(ext, ingested)


@pytest.mark.realdata
def test_random_811_reproduces_ml100k_split(ml100k_dir: Path, tmp_path: Path) -> None:
    run_ingest(ml100k_dir, tmp_path / "ing", IngestConfig(check_images=False))
    run_split(tmp_path / "ing", tmp_path / "split", SplitConfig(protocol="random-811", seed=2026))
    reference = ml100k_dir / "splits" / "random-811"
    for part in schema.SPLIT_PARTS:
        ours = pd.read_parquet(tmp_path / "split" / f"{part}.parquet")
        theirs = pd.read_csv(reference / f"{part}.csv", dtype=str)
        assert len(ours) == len(theirs), part
        # the same rows in the same (source) order, values included
        assert (ours[schema.USER_ID].to_numpy() == theirs[schema.USER_ID].to_numpy()).all(), part
        assert (ours[schema.ITEM_ID].to_numpy() == theirs[schema.ITEM_ID].to_numpy()).all(), part
        assert (ours[schema.TIMESTAMP].to_numpy() == theirs[schema.TIMESTAMP].astype("int64").to_numpy()).all()
        assert (ours[schema.RATING].to_numpy() == theirs[schema.RATING].astype(float).to_numpy()).all()


def test_external_pair_unknown_to_ingest_keeps_the_file_values(ingested, tmp_path: Path) -> None:  # noqa: ANN001
    inter = ingested.interactions
    user = inter[schema.USER_ID].iloc[0]
    seen = set(inter.loc[inter[schema.USER_ID] == user, schema.ITEM_ID])
    new_item = next(i for i in ingested.items[schema.ITEM_ID] if i not in seen)
    ext = tmp_path / "ext"
    ext.mkdir()
    rows = inter[[*PAIR, schema.TIMESTAMP]].head(3)
    rows.to_csv(ext / "train.csv", index=False)
    rows.to_csv(ext / "valid.csv", index=False)
    pd.DataFrame({schema.USER_ID: [user], schema.ITEM_ID: [new_item], schema.TIMESTAMP: [123]}).to_csv(
        ext / "test.csv", index=False)
    split = load_split(ext, ingested)
    assert split.test[schema.TIMESTAMP].tolist() == [123] and split.test[schema.EVENT].tolist() == [""]
    assert split.test[schema.ITEM_IDX].tolist() == [int(ingested.item_index()[new_item])]
    assert split.matrix("test").nnz == 1


def test_negative_events_never_become_positives(split_dir: Path, ingested_dir: Path) -> None:
    split = load_split(split_dir, ingested_dir)
    row = split.train.iloc[0]
    before = split.matrix("train")[int(row[schema.USER_IDX]), int(row[schema.ITEM_IDX])]
    disliked = split.train.copy()
    disliked.loc[disliked.index[0], schema.EVENT] = "dislike"
    negative = type(split)(disliked, split.valid, split.test, split.cold_items, split.n_users, split.n_items)
    assert before == 1.0
    assert negative.matrix("train")[int(row[schema.USER_IDX]), int(row[schema.ITEM_IDX])] == 0.0
