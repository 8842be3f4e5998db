"""Feedback merged into a dataset exactly once; the common holdout and the challenger's copy."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from monitoring_synth import fake_kfp_client

from fusionrec.monitoring import merge as merge_mod
from fusionrec.monitoring.merge import WATERMARK, cut_holdout, merge_feedback, read_watermark, training_copy


def _dataset(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    pd.DataFrame({"item_id": ["a", "b", "c", "d"], "title": list("ABCD")}).to_csv(data / "items.csv", index=False)
    pd.DataFrame({"user_id": ["u1", "u1", "u2"], "item_id": ["a", "b", "a"], "timestamp": [10, 20, 30],
                  "event": ["click", "like", "click"], "hour": [0, 0, 0]}).to_csv(data / "interactions.csv", index=False)
    (data / "images").mkdir()
    return data


def _feedback(start_id: int, rows: list[tuple[str, str, str, float]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "event", "ts"])
    frame.insert(0, "id", range(start_id, start_id + len(rows)))
    return frame


FIRST = [("u1", "c", "click", 7200.0), ("u3", "d", "like", 7300.0), ("u2", "b", "dislike", 7400.0),
         ("u2", "zz", "click", 7500.0)]


def test_merge_is_exactly_once(tmp_path: Path) -> None:
    data = _dataset(tmp_path)
    fb = _feedback(1, FIRST)
    first = merge_feedback(data, fb)
    assert (first.new_events, first.merged, first.positives, first.negatives, first.unknown_items) == (4, 3, 2, 1, 1)
    assert read_watermark(data) == 4
    inter = pd.read_csv(data / "interactions.csv", dtype=str)
    assert len(inter) == 6
    assert inter.loc[inter["item_id"] == "c", "hour"].item() == "2"  # context derived from the event time
    assert inter.loc[(inter["user_id"] == "u2") & (inter["item_id"] == "b"), "event"].item() == "dislike"
    again = merge_feedback(data, fb)  # the same store read twice
    assert again.new_events == 0 and again.merged == 0
    assert len(pd.read_csv(data / "interactions.csv")) == 6
    more = merge_feedback(data, pd.concat([fb, _feedback(5, [("u1", "d", "click", 7600.0)])]))
    assert (more.new_events, more.merged, more.interactions, more.last_id) == (1, 1, 7, 5)


def test_unanswered_impressions_merge_as_skips_once_and_never_over_a_positive(tmp_path: Path) -> None:
    data = _dataset(tmp_path)
    served = pd.DataFrame({"request_id": ["r1", "r1", "r1", "r2"], "user_id": ["u1", "u1", "u1", "u2"],
                           "item_id": ["c", "d", "a", "d"], "position": [0, 1, 2, 0], "score": [1.0] * 4,
                           "model_version": "v1", "ts": [7000.0, 7000.0, 7000.0, 7050.0]})
    fb = _feedback(1, [("u1", "c", "click", 7010.0)])
    fb["request_id"] = ["r1"]
    other = tmp_path / "other"
    other.mkdir()
    assert merge_feedback(_dataset(other), fb, served, skip_after=2).skips == 0  # each shown once: no evidence yet
    twice = pd.concat([served, served.iloc[[3]].assign(request_id="r4", ts=7060.0)], ignore_index=True)
    assert merge_feedback(other / "data", fb, twice, skip_after=2).skips == 1  # u2 was shown d twice
    first = merge_feedback(data, fb, served, skip_after=1)
    # r1/c was clicked; u1 already likes a (training data), so only u1-d and u2-d are skips
    assert (first.positives, first.skips, first.negatives) == (1, 2, 2)
    inter = pd.read_csv(data / "interactions.csv", dtype=str)
    skips = inter[inter["event"] == "skip"]
    assert set(zip(skips["user_id"], skips["item_id"], strict=True)) == {("u1", "d"), ("u2", "d")}
    assert inter.loc[(inter["user_id"] == "u1") & (inter["item_id"] == "a"), "event"].item() == "click"
    again = merge_feedback(data, fb, served, skip_after=1)  # the served watermark moved: nothing twice
    assert again.merged == 0 and again.skips == 0
    # a later click on a skipped pair wins: the pair keeps its latest event
    later = _feedback(2, [("u2", "d", "click", 7100.0)])
    later["request_id"] = [None]
    merge_feedback(data, pd.concat([fb, later]), served, skip_after=1)
    inter = pd.read_csv(data / "interactions.csv", dtype=str)
    assert inter.loc[(inter["user_id"] == "u2") & (inter["item_id"] == "d"), "event"].item() == "click"


def _merge_killed_before_the_watermark(data: Path, fb: pd.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    """A merge killed after it wrote the interactions and before it moved the watermark."""
    real = merge_mod.write_json

    def crash(path: Path, payload: object) -> Path:
        if Path(path).name == WATERMARK:
            raise KeyboardInterrupt("killed after the interactions were written")
        return real(path, payload)

    monkeypatch.setattr(merge_mod, "write_json", crash)
    with pytest.raises(KeyboardInterrupt):
        merge_feedback(data, fb)
    monkeypatch.setattr(merge_mod, "write_json", real)


def test_crash_between_writes_does_not_double_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _dataset(tmp_path)
    fb = _feedback(1, FIRST)
    _merge_killed_before_the_watermark(data, fb, monkeypatch)
    rerun = merge_feedback(data, fb)  # watermark never moved: the same events come again
    assert rerun.new_events == 4 and rerun.merged == 0 and rerun.duplicates == 3
    assert len(pd.read_csv(data / "interactions.csv")) == 6


def test_repeated_pair_keeps_latest_event(tmp_path: Path) -> None:
    data = _dataset(tmp_path)
    merge_feedback(data, _feedback(1, [("u1", "a", "click", 9000.0), ("u1", "a", "dislike", 9100.0)]))
    inter = pd.read_csv(data / "interactions.csv", dtype=str)
    pair = inter[(inter["user_id"] == "u1") & (inter["item_id"] == "a")]
    assert len(pair) == 1 and pair["event"].item() == "dislike"


def test_holdout_and_training_copy(tmp_path: Path) -> None:
    data = _dataset(tmp_path)
    rows = [(f"u{i % 5}", "abcd"[i % 4], "click", 10_000.0 + i) for i in range(40)]
    fb = _feedback(1, rows)
    fb["request_id"] = [None if i % 2 else f"r{i}" for i in range(40)]  # every other event is organic
    merge_feedback(data, fb)
    holdout, organic = cut_holdout(fb, share=0.5, min_rows=3)
    assert organic and len(holdout) > 0 and holdout["timestamp"].min() >= 10_000
    assert set(holdout["timestamp"] - 10_000) <= {i for i in range(40) if i % 2}
    copy = training_copy(data, holdout, tmp_path / "copy")
    inter = pd.read_csv(copy / "interactions.csv", dtype=str)
    pairs = set(zip(inter["user_id"], inter["item_id"], strict=True))
    assert not pairs & set(zip(holdout["user_id"], holdout["item_id"], strict=True))
    assert (copy / "items.csv").is_symlink() and (copy / "images").is_symlink()
    assert not (copy / WATERMARK).exists()
    assert json.loads((data / WATERMARK).read_text())["last_feedback_id"] == 40


def test_holdout_prefers_organic_events_and_needs_min_rows() -> None:
    rows = [(f"u{i % 7}", f"i{i}", "click", 1000.0 + i) for i in range(100)]
    fb = _feedback(1, rows)
    fb["request_id"] = [None if i % 10 == 0 else f"r{i}" for i in range(100)]  # 10% organic
    holdout, organic = cut_holdout(fb, share=0.5, min_rows=5)
    assert organic and len(holdout) == 5 and set(holdout["item_id"]) == {"i50", "i60", "i70", "i80", "i90"}
    # a few organic events are enough to choose the source: too few for min_rows gives no holdout
    # (never clicks on what the champion chose to show, which would favour the champion)
    holdout, organic = cut_holdout(fb, share=0.5, min_rows=6)
    assert organic and holdout.empty
    fb["request_id"] = [None if i == 0 else f"r{i}" for i in range(100)]  # 1% organic: served clicks
    holdout, organic = cut_holdout(fb, share=0.5, min_rows=6)
    assert not organic and len(holdout) == 50


def test_kfp_trigger_merges_then_submits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import functools

    import kfp
    from pipelines.submit import submit

    from fusionrec.config import MonitorConfig, Params
    from fusionrec.monitoring.retrain import retrain

    submitted: list[dict] = []

    monkeypatch.setattr(kfp, "Client", fake_kfp_client(submitted))
    package = tmp_path / "training.yaml"
    package.write_text("pipelineSpec: {}\n")
    data = _dataset(tmp_path)
    params = Params(monitor=MonitorConfig(pipeline_package=str(package)))
    submitter = functools.partial(submit, "http://kfp.example:8888", pipeline_file=package)
    record = retrain(data, _feedback(1, FIRST), None, tmp_path / "work", params, trigger="kfp",
                     data_uri="s3://bucket/data", submitter=submitter)
    assert record["kfp"] == {"kind": "run", "id": "run-123", "host": "http://kfp.example:8888",
                             "url": "http://kfp.example:8888/#/runs/details/run-123"}
    assert submitted[0]["arguments"]["data_uri"] == "s3://bucket/data"
    assert submitted[0]["arguments"]["split_cfg"]["protocol"] == params.monitor.retrain_split  # the challenger's split
    assert record["merge"]["merged"] == 3 and read_watermark(data) == 4
    assert (tmp_path / "work" / "runs.jsonl").read_text().count('"id": "run-123"') == 1


def _png(color: tuple[int, int, int]) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="PNG")
    return buf.getvalue()


def _runtime_items(tmp_path: Path) -> pd.DataFrame:
    """What the serving state holds: items added on replicas, with their content."""
    from fusionrec.monitoring.state import ServingState
    from fusionrec.monitoring.store import FeedbackStore

    with FeedbackStore(tmp_path / "state.db") as store:
        state = ServingState(store)
        state.add_item("n1", title="Red", text="Red. very red", fields={"title": "Red", "overview": "very red"},
                       image=_png((250, 0, 0)))
        state.add_item("n2", title="Lamp", text="a lamp that glows")
        state.add_item("odd/id ?", title="Odd", text="an id that is no file name", image=_png((0, 0, 250)))
        return state.items_frame()


def test_items_added_while_serving_enter_the_catalogue_with_their_feedback(tmp_path: Path) -> None:
    from fusionrec.config import IngestConfig
    from fusionrec.data.ingest import run_ingest
    from fusionrec.inference.checks import join_text_fields

    data = _dataset(tmp_path)
    fb = _feedback(1, [("u1", "n1", "click", 8000.0), ("u2", "n2", "like", 8100.0), ("u3", "odd/id ?", "click", 8200.0),
                       ("u1", "zz", "click", 8300.0)])
    result = merge_feedback(data, fb, runtime_items=_runtime_items(tmp_path))
    assert (result.items_added, result.item_images, result.merged) == (3, 2, 3)
    assert result.dropped == {"unknown_item": 1} and result.unknown_items == 1  # zz was never added anywhere
    items = pd.read_csv(data / "items.csv", dtype=str, keep_default_na=False).set_index("item_id")
    assert items.loc["n1", "overview"] == "very red" and items.loc["n2", "overview"] == "a lamp that glows"
    assert items.loc["n2", "title"] == "Lamp" and items.loc["a", "title"] == "A"  # older rows untouched
    assert (data / "images" / "n1.png").read_bytes() == _png((250, 0, 0))
    odd = items.loc["odd/id ?", "image"]
    assert odd.startswith("images/runtime-") and (data / odd).read_bytes() == _png((0, 0, 250))
    again = merge_feedback(data, fb, runtime_items=_runtime_items(tmp_path / "again"))
    assert again.items_added == 0 and again.new_events == 0 and len(pd.read_csv(data / "items.csv")) == 7
    # ingest reads them like any item: the text the service encoded, the image the service saw
    run_ingest(data, tmp_path / "ingested", IngestConfig(max_rejected_share=1.0))
    ingested = pd.read_parquet(tmp_path / "ingested" / "items.parquet").set_index("item_id")
    served_text = join_text_fields(None, {"title": "Red", "overview": "very red"}, IngestConfig(), 5000)
    assert ingested.loc["n1", "text"] == served_text and ingested.loc["n1", "has_image"]
    assert ingested.loc["odd/id ?", "has_image"] and ingested.loc["n2", "text"] == "Lamp. a lamp that glows"


def test_events_the_merge_cannot_use_are_counted_by_reason(tmp_path: Path) -> None:
    data = _dataset(tmp_path)
    fb = _feedback(1, [("u1", "a", "click", 10.0), ("u3", "c", "click", 9000.0), ("u3", "c", "dislike", 9100.0),
                       ("u4", "nope", "like", 9200.0)])
    result = merge_feedback(data, fb)
    assert result.dropped == {"duplicate": 1, "superseded": 1, "unknown_item": 1}
    assert result.merged == 2 and result.new_events == 4  # u3-c (both events; the later one kept) merged
    assert result.to_dict()["dropped"] == result.dropped


def test_merged_events_record_their_origin_and_ingest_keeps_it(tmp_path: Path) -> None:
    from fusionrec.config import IngestConfig
    from fusionrec.data.ingest import run_ingest

    data = _dataset(tmp_path)
    served = pd.DataFrame({"request_id": ["r1", "r1"], "user_id": ["u1", "u1"], "item_id": ["c", "d"],
                           "position": [0, 1], "score": [1.0, 0.5], "model_version": "v1", "ts": [7000.0, 7000.0],
                           "explored": [False, True]})
    fb = _feedback(1, [("u1", "c", "click", 7010.0), ("u1", "d", "click", 7020.0), ("u2", "b", "click", 7030.0)])
    fb["request_id"] = ["r1", "r1", None]
    merge_feedback(data, fb, served, skip_after=0)
    inter = pd.read_csv(data / "interactions.csv", dtype=str, keep_default_na=False)
    origin = dict(zip(zip(inter["user_id"], inter["item_id"], strict=True), inter["origin"], strict=True))
    # the model's pick, an item shown from beyond its top-k, one found without a recommendation; older rows none
    assert (origin["u1", "c"], origin["u1", "d"], origin["u2", "b"]) == ("served", "explored", "organic")
    assert origin["u1", "a"] == origin["u1", "b"] == ""
    run_ingest(data, tmp_path / "ingested", IngestConfig(context_columns=[]))
    ingested = pd.read_parquet(tmp_path / "ingested" / "interactions.parquet")
    kept = dict(zip(zip(ingested["user_id"], ingested["item_id"], strict=True), ingested["origin"], strict=True))
    assert (kept["u1", "d"], kept["u2", "b"], kept["u1", "a"]) == ("explored", "organic", "")


def test_a_dataset_without_timestamps_takes_feedback_in_event_order(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """No time is made up: the table stays without a timestamp column, and file order is time order."""
    data = _dataset(tmp_path)
    inter = pd.read_csv(data / "interactions.csv").drop(columns="timestamp")
    inter.to_csv(data / "interactions.csv", index=False)
    fb = _feedback(1, [("u3", "d", "like", 7300.0), ("u1", "c", "click", 7200.0),  # ids out of time order
                       ("u1", "a", "dislike", 7400.0), ("u1", "a", "click", 7500.0),  # changed its mind back
                       ("u2", "a", "dislike", 7600.0), ("u2", "zz", "click", 7700.0)])
    _merge_killed_before_the_watermark(data, fb, monkeypatch)
    merged = pd.read_csv(data / "interactions.csv", dtype=str)
    assert "timestamp" not in merged.columns
    assert list(zip(merged["user_id"], merged["item_id"], merged["event"], strict=True)) == [  # event-time order
        ("u1", "b", "like"), ("u1", "c", "click"), ("u3", "d", "like"), ("u1", "a", "click"), ("u2", "a", "dislike")]
    assert merged.loc[merged["item_id"] == "c", "hour"].item() == "2"  # context still from the event time
    rerun = merge_feedback(data, fb)  # the watermark never moved: the same events write the same table
    assert rerun.dropped == {"unknown_item": 1, "superseded": 1} and rerun.duplicates == 0
    assert pd.read_csv(data / "interactions.csv", dtype=str).equals(merged)
    later = merge_feedback(data, pd.concat([fb, _feedback(7, [("u1", "b", "dislike", 7800.0)])]))
    assert (later.merged, later.negatives, later.interactions) == (1, 1, 5)
    last = pd.read_csv(data / "interactions.csv", dtype=str).iloc[-1]
    assert (last["user_id"], last["item_id"], last["event"]) == ("u1", "b", "dislike")
