"""Merge the feedback store into a dataset's interactions, exactly once, and cut a common holdout.

Exactly once: the dataset folder keeps a watermark (`feedback_watermark.json`: the last
feedback id merged). A merge reads only events after it, writes the interactions file
atomically and only then moves the watermark. Should a crash fall between the two writes,
the next merge sees the same events again and the (user, item, timestamp, event) key drops
them, so nothing is counted twice. A dataset without timestamps stays without them (ingest
makes no time up, and it refuses empty time cells): there file order is time order, so the
new rows are appended in event-time order, a pair's new event moves it to the end, and a
merge run twice writes the same table. Positive events become interactions with their event
name; negative ones (schema.NEGATIVE_EVENTS) are kept with theirs. A (user, item) pair keeps
its latest event, as ingest's `dedupe: last` would. Each merged event records its origin
(`schema.ORIGIN`: served, explored or organic), so training can weigh what the model did not
choose itself (train.origin_weights).

Items added while serving (the shared state's runtime items) are written into the catalogue
first (new_items.py), so their feedback merges like any other. An event the merge cannot use
is never dropped silently: `MergeResult.dropped` counts each one under its reason.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fusionrec.config import IngestConfig
from fusionrec.io import find_table, read_json, read_table, write_json
from fusionrec.monitoring.new_items import add_runtime_items
from fusionrec.schema import (
    EVENT,
    INTERACTIONS_STEM,
    ITEM_ID,
    ITEMS_STEM,
    ORIGIN,
    ORIGINS,
    RATING,
    TIMESTAMP,
    USER_ID,
    is_negative,
)

WATERMARK = "feedback_watermark.json"
HOLDOUT_FILE = "holdout.parquet"


class MergeError(ValueError):
    """The dataset folder cannot take the feedback; the message names the folder and file."""


@dataclass
class MergeResult:
    """What one merge did."""

    new_events: int  # feedback events after the watermark
    merged: int  # rows added or updated in the interactions
    positives: int
    negatives: int  # skips included
    skips: int  # impressions without a reaction merged as "skip"
    unknown_items: int  # events on items absent from the catalogue (not merged: ingest would reject them)
    duplicates: int  # rows already present (same user, item, timestamp, event; a dataset without timestamps: 0)
    interactions: int  # rows in the interactions file after the merge
    first_id: int | None
    last_id: int | None  # the new watermark
    fingerprint: str  # hash of the interactions after the merge
    items_added: int = 0  # items added while serving, written into the catalogue by this merge
    item_images: int = 0  # of which with an image
    item_vectors: int = 0  # of which with precomputed vectors (runtime_vectors.parquet)
    dropped: dict[str, int] = field(default_factory=dict)  # new events not merged, by reason (see merge_feedback)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _watermarks(data_dir: Path) -> tuple[int, float]:
    """(last feedback id merged, newest served ts turned into skips); (0, 0.0) when none."""
    path = Path(data_dir) / WATERMARK
    state = read_json(path) if path.is_file() else {}
    return int(state.get("last_feedback_id", 0)), float(state.get("last_served_ts", 0.0))


def read_watermark(data_dir: Path) -> int:
    """The last feedback id merged into this dataset (0 when none)."""
    return _watermarks(data_dir)[0]


def _write_table(frame: pd.DataFrame, path: Path) -> None:
    """Write CSV or Parquet (by suffix) atomically: a temp file in the same folder, then rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    if path.suffix == ".parquet":
        frame.to_parquet(tmp, index=False)
    else:
        frame.to_csv(tmp, index=False)
    os.replace(tmp, path)


def feedback_rows(feedback: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Feedback events as interaction rows with the dataset's columns.

    `timestamp` is the event time in whole seconds; `hour` (the demo's context column), when
    the dataset has it, is derived from it; other extra columns are left empty.
    """
    ts = pd.to_numeric(feedback["ts"]).astype(np.int64)
    rows = pd.DataFrame({
        USER_ID: feedback[USER_ID].astype(str).values,
        ITEM_ID: feedback[ITEM_ID].astype(str).values,
        TIMESTAMP: ts.values,
        EVENT: feedback[EVENT].astype(str).str.lower().values,
    })
    if ORIGIN in feedback.columns:
        rows[ORIGIN] = feedback[ORIGIN].astype(str).values
    for col in columns:
        if col == "hour":
            rows[col] = (ts.values // 3600) % 24
        elif col == RATING:
            rows[col] = np.nan
        elif col not in rows.columns:
            rows[col] = pd.NA
    return rows[columns]


def feedback_origins(events: pd.DataFrame, served: pd.DataFrame | None) -> np.ndarray:
    """Per event, how the item reached the user (schema.ORIGINS): "organic" without a request id,
    "explored" when it answered an impression served from beyond the model's top-k, else "served"."""
    served_pick, explored_pick, organic_find = ORIGINS
    if "request_id" not in events.columns:
        return np.full(len(events), organic_find, dtype=object)
    organic = events["request_id"].isna().to_numpy()
    explored = np.zeros(len(events), dtype=bool)
    if served is not None and len(served) and "explored" in served.columns:
        flagged = served[served["explored"].astype(bool)]
        shown = set(zip(flagged["request_id"].astype(str), flagged[ITEM_ID].astype(str), strict=True))
        explored = np.array([(r, i) in shown for r, i in zip(events["request_id"].astype(str),
                                                            events[ITEM_ID].astype(str), strict=True)], dtype=bool)
    return np.where(organic, organic_find, np.where(explored, explored_pick, served_pick)).astype(object)


def fingerprint(frame: pd.DataFrame) -> str:
    """Short content hash of an interactions frame (order-independent); without timestamps, of the events."""
    third = TIMESTAMP if TIMESTAMP in frame.columns else EVENT
    key = frame[[USER_ID, ITEM_ID, third]].astype(str).agg("|".join, axis=1).sort_values()
    return hashlib.sha256("\n".join(key).encode()).hexdigest()[:16]


def skip_events(served: pd.DataFrame, feedback: pd.DataFrame, after_ts: float, min_shown: int = 1) -> pd.DataFrame:
    """Items shown to a user at least `min_shown` times without any reaction, as "skip" rows
    (no id, ts = the last showing): only pairs shown again after `after_ts` (the last merge).

    A user who is shown an item again and again and never takes it says something about it, as
    a dislike does, only more quietly: a model trained on it does not offer that item to that
    user again (negatives never become positives; they enter the model's `seen`). One showing is
    weak evidence and would add a row per impression; repeated ones are what counts.
    """
    cols = ["id", "request_id", USER_ID, ITEM_ID, EVENT, "ts"]
    if served is None or served.empty:
        return pd.DataFrame(columns=cols)
    answered = set(zip(feedback["request_id"].astype(str), feedback[ITEM_ID].astype(str), strict=True)) \
        if "request_id" in feedback.columns else set()
    keep = np.array([(r, i) not in answered for r, i in zip(served["request_id"].astype(str),
                                                            served[ITEM_ID].astype(str), strict=True)], dtype=bool)
    quiet = served.loc[keep].assign(ts=pd.to_numeric(served.loc[keep, "ts"]))
    pairs = quiet.groupby([USER_ID, ITEM_ID], as_index=False).agg(shown=("ts", "size"), ts=("ts", "max"),
                                                                   request_id=("request_id", "last"))
    pairs = pairs[(pairs["shown"] >= min_shown) & (pairs["ts"] > after_ts)]
    return pairs.assign(**{EVENT: "skip", "id": np.nan})[cols].reset_index(drop=True)


def merge_feedback(data_dir: Path, feedback: pd.DataFrame, served: pd.DataFrame | None = None,
                   skip_after: int = 2, runtime_items: pd.DataFrame | None = None,
                   text_columns: list[str] | None = None) -> MergeResult:
    """Merge the feedback events after the dataset's watermark into its interactions file.

    Args:
        data_dir: a dataset folder (the contract: interactions.csv|parquet, items.csv|parquet).
        feedback: the store's feedback rows (id, user_id, item_id, event, ts, ...), any superset.
        served: the store's served rows: they tell explored impressions from chosen ones (each
            merged event's `origin`, see `feedback_origins`), and items shown `skip_after` times or
            more to a user with no reaction merge as "skip" (see `skip_events`), but never over a
            pair the user has a positive event on. None: no skips, no "explored" origin.
        skip_after: 0 merges no skips.
        runtime_items: items added while serving (`ServingState.items_frame()`); those the
            catalogue lacks are written into it first, so their feedback is merged too.
        text_columns: ingest's text columns (where a runtime item's text goes); IngestConfig's by default.

    Returns:
        MergeResult; running it again with the same feedback merges nothing. `dropped` counts the
        new events that were not merged: `unknown_item` (neither in the catalogue nor added while
        serving), `duplicate` (merged before), `superseded` (a later event on the same user and
        item in this merge wins).
    """
    data_dir = Path(data_dir)
    inter_path, items_path = find_table(data_dir, INTERACTIONS_STEM), find_table(data_dir, ITEMS_STEM)
    if inter_path is None or items_path is None:
        raise MergeError(f"{data_dir}: not a dataset folder (needs interactions and items tables)")
    text_columns = IngestConfig().text_columns if text_columns is None else text_columns
    added = add_runtime_items(data_dir, runtime_items, text_columns) if runtime_items is not None else None
    mark, served_mark = _watermarks(data_dir)
    new = feedback[pd.to_numeric(feedback["id"]) > mark].sort_values("id")
    inter = read_table(inter_path, dtype={USER_ID: str, ITEM_ID: str})
    if EVENT not in inter.columns:
        inter[EVENT] = "interaction"
    if ORIGIN not in inter.columns:  # rows from before serving have none
        inter[ORIGIN] = ""
    catalogue = set(read_table(items_path, dtype={ITEM_ID: str})[ITEM_ID].astype(str))
    known = new[ITEM_ID].astype(str).isin(catalogue)
    events = new[known].assign(**{ORIGIN: feedback_origins(new[known], served)})
    timed = TIMESTAMP in inter.columns
    columns = list(inter.columns) if timed else [*inter.columns, TIMESTAMP]  # the event time orders new rows
    rows = feedback_rows(events, columns)
    n_events = len(rows)  # rows[:n_events] are feedback events, the rest skips
    skips = skip_events(served, feedback, served_mark, skip_after) if served is not None and skip_after > 0 else None
    if skips is not None and len(skips):
        skips = skips[skips[ITEM_ID].astype(str).isin(catalogue)]
        liked = pd.concat([inter[~is_negative(inter)], rows[~is_negative(rows)]])
        liked_pairs = set(zip(liked[USER_ID].astype(str), liked[ITEM_ID].astype(str), strict=True))
        quiet = [p not in liked_pairs for p in zip(skips[USER_ID].astype(str), skips[ITEM_ID].astype(str), strict=True)]
        skips = skips[np.array(quiet, dtype=bool)]
        rows = pd.concat([rows, feedback_rows(skips, columns)], ignore_index=True)
    is_event = np.arange(len(rows)) < n_events
    if timed:
        key = [USER_ID, ITEM_ID, TIMESTAMP, EVENT]
        existing = set(map(tuple, inter[key].astype(str).values))
        dup = np.array([tuple(r) in existing for r in rows[key].astype(str).values], dtype=bool)
        superseded_early = 0
    else:  # file order is time order: the new rows go last, in event time; a repeat moves its pair there
        order = np.argsort(rows[TIMESTAMP].to_numpy(), kind="stable")
        rows, is_event = rows.iloc[order].reset_index(drop=True).drop(columns=TIMESTAMP), is_event[order]
        dup = rows.duplicated([USER_ID, ITEM_ID], keep="last").to_numpy()  # a later event of this merge wins
        superseded_early = int((is_event & dup).sum())
    events_dup = int((is_event & dup).sum()) - superseded_early
    rows, is_event = rows[~dup], is_event[~dup]
    # a (user, item) pair keeps its latest event
    merged = pd.concat([inter, rows], ignore_index=True)
    if timed:
        merged = merged.sort_values(TIMESTAMP, kind="stable")
    merged = merged.drop_duplicates([USER_ID, ITEM_ID], keep="last")
    kept = np.isin(np.arange(len(inter), len(inter) + len(rows)), merged.index.to_numpy())
    dropped = {"unknown_item": int((~known).sum()), "duplicate": events_dup,
               "superseded": int((is_event & ~kept).sum()) + superseded_early}
    negative = is_negative(rows)
    last_id = int(new["id"].max()) if len(new) else (mark or None)
    if len(rows):
        _write_table(merged.sort_index(), inter_path)
    served_to = float(pd.to_numeric(served["ts"]).max()) if served is not None and len(served) else served_mark
    write_json(data_dir / WATERMARK, {"last_feedback_id": last_id or 0, "last_served_ts": max(served_to, served_mark),
                                      "updated_at": time.time()})
    return MergeResult(
        new_events=len(new), merged=len(rows), positives=int((~negative).sum()), negatives=int(negative.sum()),
        skips=int((rows[EVENT] == "skip").sum()),
        unknown_items=int((~known).sum()), duplicates=int(dup.sum()) if timed else 0, interactions=len(merged),
        first_id=int(new["id"].min()) if len(new) else None, last_id=last_id, fingerprint=fingerprint(merged),
        items_added=added.added if added else 0, item_images=added.images if added else 0,
        item_vectors=added.vectors if added else 0,
        dropped={reason: n for reason, n in dropped.items() if n},
    )


ORGANIC_SHARE = 0.05  # organic events at least this share of the positives: the holdout uses only them


def cut_holdout(feedback: pd.DataFrame, share: float, min_rows: int = 20) -> tuple[pd.DataFrame, bool]:
    """The common holdout: the newest `share` of the positive feedback events given.

    Organic events (no request_id: what users found on their own) are used whenever they are a
    real part of the traffic (ORGANIC_SHARE of the positives): they are not selected by the
    serving model, so a full ranking on them does not favour the champion, while clicks on what
    the champion chose to show would. Only a service without organic traffic gates on all
    positives (ranked among what was shown, see retrain.holdout_metrics). Both models are scored
    on the holdout; the challenger never trains on it.

    Args:
        feedback: the feedback rows merged in this run (id, user_id, item_id, event, ts, request_id).
        min_rows: a smaller holdout cannot tell two models apart: below it the result is empty.

    Returns:
        (rows user_id, item_id, timestamp, event; True when organic). Empty below min_rows.
    """
    pos = feedback[~is_negative(feedback)]
    organic = pos[pos["request_id"].isna()] if "request_id" in pos.columns else pos.iloc[0:0]
    is_organic = len(organic) > 0 and len(organic) >= ORGANIC_SHARE * len(pos)
    base = (organic if is_organic else pos).sort_values("ts", kind="stable")
    n = int(round(len(base) * share))
    rows = base.iloc[len(base) - n :] if n >= min_rows else base.iloc[0:0]
    holdout = pd.DataFrame({USER_ID: rows[USER_ID].astype(str).values, ITEM_ID: rows[ITEM_ID].astype(str).values,
                            TIMESTAMP: pd.to_numeric(rows["ts"]).astype(np.int64).values,
                            EVENT: rows[EVENT].astype(str).values})
    return holdout.drop_duplicates([USER_ID, ITEM_ID], keep="last"), is_organic


def training_copy(data_dir: Path, holdout: pd.DataFrame, out_dir: Path) -> Path:
    """A dataset folder for the challenger: the interactions without the holdout rows, the rest linked.

    Items, users and images are symlinked (never copied); the interactions keep the dataset's format.
    Every older interaction stays: recency is the trainer's weighting (monitor.retrain_half_life),
    and a dropped one would be missing from the model's `seen`, so it would be offered again.
    """
    data_dir, out_dir = Path(data_dir).resolve(), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for entry in data_dir.iterdir():
        if entry.name.startswith(INTERACTIONS_STEM + ".") or entry.name in (WATERMARK, HOLDOUT_FILE):
            continue
        link = out_dir / entry.name
        if not link.exists():
            link.symlink_to(entry)
    inter_path = find_table(data_dir, INTERACTIONS_STEM)
    assert inter_path is not None
    inter = read_table(inter_path, dtype={USER_ID: str, ITEM_ID: str})
    drop = set(zip(holdout[USER_ID].astype(str), holdout[ITEM_ID].astype(str), strict=True))
    keep = [pair not in drop for pair in zip(inter[USER_ID].astype(str), inter[ITEM_ID].astype(str), strict=True)]
    inter = inter[keep]
    target = out_dir / f"{INTERACTIONS_STEM}{inter_path.suffix}"
    _write_table(inter, target)
    return out_dir
