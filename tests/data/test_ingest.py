"""Ingest: every bad-input kind lands in rejected.parquet with its reason; good rows survive."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.data.image_samples import huge_png, jpeg_bytes, png_bytes, truncated_jpeg, write

from fusionrec import schema
from fusionrec.config import IngestConfig
from fusionrec.data.ingest import IngestError, run_ingest

ITEMS = """item_id,title,overview,image
1,Red shoe,A red leather shoe,images/1.jpg
2,Blue hat,No picture for this one,
3,Broken,Truncated jpeg,images/3.jpg
4,Bomb,Huge declared canvas,images/4.png
5,Escape,Image outside the folder,../outside.png
6,,,images/missing.png
1,Red shoe again,Duplicate id,images/1.jpg
,No id,Empty id,
7,,,images/7.png
"""
# expected (row -> reasons) in items.csv
ITEM_REJECTS = {
    2: ["unreadable_image"], 3: ["oversized_image"], 4: ["image_outside_dataset"],
    5: ["missing_image", "empty_item"], 6: ["duplicate_item"], 7: ["unparseable_value"], 8: ["empty_text"],
}
INTERACTIONS = """user_id,item_id,timestamp,rating,hour
a,1,100,5,3
a,2,101,4,4
b,3,102,,5
b,4,103,3,6
c,5,104,2,7
c,7,105,1,8
a,1,99,5,9
b,1,yesterday,5,10
b,2,106,five,11
c,99,107,4,12
c,6,108,4,13
,2,109,4,14
"""
INTER_REJECTS = {
    6: ["duplicate_interaction"], 7: ["unparseable_value"], 8: ["unparseable_value"],
    9: ["unknown_item"], 11: ["unparseable_value"],
}


@pytest.fixture()
def bad_dataset(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "items.csv").parent.mkdir(parents=True)
    (root / "items.csv").write_text(ITEMS)
    (root / "interactions.csv").write_text(INTERACTIONS)
    write(root / "images" / "1.jpg", jpeg_bytes())
    write(root / "images" / "3.jpg", truncated_jpeg())
    write(root / "images" / "4.png", huge_png())
    write(root / "images" / "7.png", png_bytes())
    write(tmp_path / "outside.png", png_bytes())
    return root


def _cfg(**kw: object) -> IngestConfig:
    return IngestConfig(text_columns=["title", "overview"], max_rejected_share=0.6, **kw)  # type: ignore[arg-type]


def test_every_bad_kind_is_rejected_with_its_reason(bad_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_ingest(bad_dataset, out, _cfg())
    rejected = pd.read_parquet(out / schema.REJECTED)
    got: dict[tuple[str, int], list[str]] = {}
    for rec in rejected.to_dict("records"):
        got.setdefault((rec[schema.REJ_SOURCE], rec[schema.REJ_ROW]), []).append(rec[schema.REJ_REASON])
    expected = {("items.csv", r): v for r, v in ITEM_REJECTS.items()}
    expected |= {("interactions.csv", r): v for r, v in INTER_REJECTS.items()}
    assert {k: sorted(v) for k, v in got.items()} == {k: sorted(v) for k, v in expected.items()}
    assert rejected[schema.REJ_DETAIL].str.len().min() > 0

    items = pd.read_parquet(out / schema.INGESTED_ITEMS)
    assert list(items[schema.ITEM_ID]) == ["1", "2", "3", "4", "5", "6", "7"]  # 6 has no content: kept, masked
    assert list(items[schema.ITEM_IDX]) == list(range(7))
    assert dict(zip(items[schema.ITEM_ID], items[schema.HAS_IMAGE], strict=True)) == {
        "1": True, "2": False, "3": False, "4": False, "5": False, "6": False, "7": True}
    assert not items.set_index(schema.ITEM_ID).loc["6", schema.HAS_TEXT]
    assert not items.set_index(schema.ITEM_ID).loc["7", schema.HAS_TEXT]  # image only: text masked
    assert items.loc[0, schema.TEXT] == "Red shoe. A red leather shoe"
    assert Path(items.loc[0, schema.IMAGE_PATH]).is_absolute()

    inter = pd.read_parquet(out / schema.INGESTED_INTERACTIONS)
    assert len(inter) == 7  # c,6 is kept with its item
    kept = inter[(inter[schema.USER_ID] == "a") & (inter[schema.ITEM_ID] == "1")]
    assert list(kept[schema.TIMESTAMP]) == [100]  # dedupe "last" keeps the latest in time
    assert inter[schema.RATING].isna().sum() == 1  # an empty rating is missing, not rejected
    assert inter["hour"].dtype == np.int64
    assert inter[schema.USER_IDX].dtype == np.int32 and inter[schema.TIMESTAMP].dtype == np.int64

    report = json.loads((out / schema.REPORT).read_text())
    assert report["rejected"]["unknown_item"] == 1
    assert report["items_without_text_or_image"] == 1 and report["items_without_text_or_image_examples"] == ["6"]
    assert report["rejected_total"] == len(rejected) == result.metrics["rejected"]
    for name, n_rows, n_kept in (("items.csv", 9, 7), ("interactions.csv", 12, 7)):
        assert report["files"][name]["rows"] == n_rows  # nothing dropped silently:
        assert report["files"][name]["dropped"] == n_rows - n_kept  # rows = kept + dropped


def test_dedupe_first_keeps_the_earliest(bad_dataset: Path, tmp_path: Path) -> None:
    run_ingest(bad_dataset, tmp_path / "out", _cfg(dedupe="first"))
    inter = pd.read_parquet(tmp_path / "out" / schema.INGESTED_INTERACTIONS)
    kept = inter[(inter[schema.USER_ID] == "a") & (inter[schema.ITEM_ID] == "1")]
    assert list(kept[schema.TIMESTAMP]) == [99]


def test_missing_column_fails_naming_file_and_column(bad_dataset: Path, tmp_path: Path) -> None:
    frame = pd.read_csv(bad_dataset / "interactions.csv", dtype=str).drop(columns=[schema.ITEM_ID])
    frame.to_csv(bad_dataset / "interactions.csv", index=False)
    with pytest.raises(IngestError, match=r"interactions\.csv.*'item_id'.*found: user_id, timestamp"):
        run_ingest(bad_dataset, tmp_path / "out", _cfg())


def test_rejected_share_over_limit_fails_after_writing_rejects(bad_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(IngestError, match=r"items\.csv.*max_rejected_share"):
        run_ingest(bad_dataset, out, _cfg().with_overrides(max_rejected_share=0.1))  # type: ignore[arg-type]
    assert (out / schema.REJECTED).is_file() and (out / schema.REPORT).is_file()
    assert not (out / schema.INGESTED_INTERACTIONS).exists()


def test_parquet_input_with_integer_ids(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    pd.DataFrame({"item_id": [10, 20], "title": ["x", "y"]}).to_parquet(root / "items.parquet")
    pd.DataFrame({"user_id": [1.0, 2.0], "item_id": [20, 10], "timestamp": [5, 6]}).to_parquet(
        root / "interactions.parquet")
    run_ingest(root, tmp_path / "out", IngestConfig())
    inter = pd.read_parquet(tmp_path / "out" / schema.INGESTED_INTERACTIONS)
    assert list(inter[schema.USER_ID]) == ["1", "2"] and list(inter[schema.ITEM_ID]) == ["20", "10"]
    assert list(inter[schema.ITEM_IDX]) == [1, 0]
    report = json.loads((tmp_path / "out" / schema.REPORT).read_text())
    assert report["text_columns_missing"] == ["genres", "overview"]
    assert report["context_columns_missing"] == ["hour"]


def test_demo_ingests_cleanly(ingested_dir: Path, tiny_demo_cfg) -> None:  # noqa: ANN001
    report = json.loads((ingested_dir / schema.REPORT).read_text())
    assert report["rejected_total"] == 0
    assert report["items"] == tiny_demo_cfg.items and report["context_columns"] == ["hour"]
    items = pd.read_parquet(ingested_dir / schema.INGESTED_ITEMS)
    assert items[schema.HAS_TEXT].all() and items[schema.HAS_IMAGE].mean() > 0.9


@pytest.mark.realdata
def test_ml100k_ingests_without_conversion(ml100k_dir: Path, tmp_path: Path) -> None:
    result = run_ingest(ml100k_dir, tmp_path / "out", IngestConfig())
    assert result.metrics["interactions"] == 100_000 and result.metrics["users"] == 943
    assert result.metrics["items"] == 1682 and result.metrics["rejected"] == 0
    items = pd.read_parquet(tmp_path / "out" / schema.INGESTED_ITEMS)
    assert int(items[schema.HAS_IMAGE].sum()) == 1663
    assert (items[schema.ITEM_ID].astype(int) == items[schema.ITEM_IDX] + 1).all()  # row r is item r+1


def test_users_file_adds_context_and_rejects_bad_rows(bad_dataset: Path, tmp_path: Path) -> None:
    (bad_dataset / "users.csv").write_text("user_id,age\na,30\nb,41\na,99\n,5\nzz,20\n")
    run_ingest(bad_dataset, tmp_path / "out", _cfg())
    users = pd.read_parquet(tmp_path / "out" / schema.INGESTED_USERS)
    assert list(users[schema.USER_ID]) == ["a", "b", "c"]  # users with interactions, in id order
    assert list(users[schema.USER_IDX]) == [0, 1, 2]
    assert list(users["age"].fillna("")) == ["30", "41", ""]  # the first row of a repeated user wins
    rejected = pd.read_parquet(tmp_path / "out" / schema.REJECTED)
    assert sorted(rejected.loc[rejected[schema.REJ_SOURCE] == "users.csv", schema.REJ_ROW]) == [2, 3]
    report = json.loads((tmp_path / "out" / schema.REPORT).read_text())
    assert report["users_file_without_interactions"] == 1  # "zz": counted, not silently lost
