"""`fusionrec ingest`: read a dataset folder, validate it, and write the ingested folder.

Nothing is dropped silently: every rejected row lands in rejected.parquet with its
source file, row number, reason and detail; counts go to report.json; and the step
fails when the dropped share of a file passes `ingest.max_rejected_share`.

Items need only an id (catalogue.py: content that is missing is masked, not rejected).
Interactions need user_id and item_id; `timestamp` is optional and read in any form of
data/timestamps.py (unix seconds or milliseconds by magnitude, ISO-8601 with or without a
zone, naive = UTC, datetime columns) into unix seconds. Without the column, the ingested
interactions have none, and only the splits that need no time (random-811, cold-items) work.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fusionrec import schema
from fusionrec.config import IngestConfig
from fusionrec.data.catalogue import finish_items, prepare_items
from fusionrec.data.tables import (
    ROW,
    IngestError,
    Rejects,
    as_float,
    as_id_strings,
    as_text,
    read_raw,
    require_columns,
    sorted_ids,
)
from fusionrec.data.timestamps import ACCEPTED, parse_timestamps
from fusionrec.io import StepResult, find_table, write_json

__all__ = ["IngestError", "ingest_frames", "prepare_interactions", "run_ingest"]


def _context_values(values: pd.Series) -> pd.Series:
    """A context column as numbers when every non-empty cell is one (e.g. hour), else as text."""
    if pd.api.types.is_numeric_dtype(values):
        return values
    text = as_text(values)
    numbers = as_float(text)
    if (numbers.notna() | (text == "")).all():
        whole = numbers.dropna()
        if not (whole == np.floor(whole)).all():
            return numbers
        return numbers.astype("int64" if numbers.notna().all() else "Int64")
    return text


def _reject_where(frame: pd.DataFrame, bad: pd.Series, source: str, reason: str, detail: str,
                  rejects: Rejects, column: str | None = None) -> pd.DataFrame:
    """Reject the rows where bad is True; detail may use {value} (the cell of column)."""
    if bad.any():
        values = frame.loc[bad, column] if column else [""] * int(bad.sum())
        rejects.add_frame(frame[bad], source, reason, [detail.format(value=v) for v in values])
    return frame[~bad]


def prepare_interactions(
    inter: pd.DataFrame, item_ids: set[str], source: str, cfg: IngestConfig, rejects: Rejects,
    stats: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Validated interactions in source order: parsed values, known items, duplicates resolved.

    The timestamp column is optional; when present, each cell is read by `parse_timestamps`
    (unix s/ms, ISO-8601, datetimes) into unix seconds, and `stats["timestamp_forms"]` counts
    the forms met.
    """
    inter = inter.copy()
    inter[schema.USER_ID] = as_id_strings(inter[schema.USER_ID])
    inter[schema.ITEM_ID] = as_id_strings(inter[schema.ITEM_ID])
    for col in (schema.USER_ID, schema.ITEM_ID):
        inter = _reject_where(inter, inter[col] == "", source, "unparseable_value", f"empty {col}", rejects)
    if schema.TIMESTAMP in inter:
        seconds, form = parse_timestamps(inter[schema.TIMESTAMP])
        inter = _reject_where(inter, seconds.isna(), source, "unparseable_value",
                              f"timestamp {{value!r}} is not a time: expected {ACCEPTED}", rejects, schema.TIMESTAMP)
        inter[schema.TIMESTAMP] = np.floor(seconds[seconds.notna()]).astype("int64")
        if stats is not None:
            stats["timestamp_forms"] = {f: int(n) for f, n in form[form != ""].value_counts().sort_index().items()}
    if schema.RATING in inter:
        raw = as_text(inter[schema.RATING])
        rating = as_float(inter[schema.RATING])
        bad = rating.isna() & (raw != "")
        inter = _reject_where(inter, bad, source, "unparseable_value", "rating {value!r} is not a number",
                              rejects, schema.RATING)
        inter[schema.RATING] = rating[~bad].astype("float64")
    else:
        inter[schema.RATING] = np.nan
    inter[schema.EVENT] = as_text(inter[schema.EVENT]) if schema.EVENT in inter else ""
    if schema.ORIGIN in inter:
        inter[schema.ORIGIN] = as_text(inter[schema.ORIGIN]).str.lower()
    unknown = ~inter[schema.ITEM_ID].isin(item_ids)
    inter = _reject_where(inter, unknown, source, "unknown_item",
                          "item_id {value!r} is not in the (valid) catalogue", rejects, schema.ITEM_ID)
    # "first"/"last" in time (in file order without timestamps); ties keep source order
    by_time = inter.sort_values([schema.TIMESTAMP, ROW] if schema.TIMESTAMP in inter else [ROW], kind="stable")
    dup = by_time.duplicated([schema.USER_ID, schema.ITEM_ID], keep=cfg.dedupe)
    kept = "earliest" if cfg.dedupe == "first" else "latest"
    by_time = _reject_where(by_time, dup, source, "duplicate_interaction",
                            f"user/item pair repeated; the {kept} is kept", rejects)
    return by_time.sort_values(ROW, kind="stable")


def _read_users(folder: Path, rejects: Rejects) -> pd.DataFrame | None:
    path = find_table(folder, schema.USERS_STEM)
    if path is None:
        return None
    users = read_raw(path)
    require_columns(users, [schema.USER_ID], path, "user")
    users[schema.USER_ID] = as_id_strings(users[schema.USER_ID])
    users = _reject_where(users, users[schema.USER_ID] == "", path.name, "unparseable_value",
                          "empty user_id", rejects)
    dup = users.duplicated(schema.USER_ID, keep="first")
    return _reject_where(users, dup, path.name, "unparseable_value",
                         "user_id {value!r} repeated; the first row is kept", rejects, schema.USER_ID)


def _check_share(name: str, total: int, dropped: int, limit: float) -> dict[str, Any]:
    share = dropped / total if total else 0.0
    return {"rows": total, "dropped": dropped, "share": round(share, 6), "ok": share <= limit}


def ingest_frames(
    items_raw: pd.DataFrame, inter_raw: pd.DataFrame, folder: Path, cfg: IngestConfig, rejects: Rejects,
    names: tuple[str, str] = ("items.csv", "interactions.csv"), stats: dict[str, Any] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The in-memory core of ingest: (interactions, items, users) frames as written to disk.

    stats, when given, receives what the report tells beyond the frames (timestamp forms).
    """
    items_name, inter_name = names
    items = prepare_items(items_raw, folder, items_name, cfg, rejects)
    inter = prepare_interactions(inter_raw, set(items[schema.ITEM_ID]), inter_name, cfg, rejects, stats)
    item_order = sorted_ids(items[schema.ITEM_ID])
    user_order = sorted_ids(inter[schema.USER_ID])
    items = finish_items(items, item_order)
    item_idx = pd.Series(np.arange(len(item_order), dtype=np.int32), index=item_order)
    user_idx = pd.Series(np.arange(len(user_order), dtype=np.int32), index=user_order)
    out = pd.DataFrame({
        schema.USER_ID: inter[schema.USER_ID].to_numpy(),
        schema.ITEM_ID: inter[schema.ITEM_ID].to_numpy(),
        schema.USER_IDX: user_idx.loc[inter[schema.USER_ID]].to_numpy(),
        schema.ITEM_IDX: item_idx.loc[inter[schema.ITEM_ID]].to_numpy(),
        schema.RATING: inter[schema.RATING].to_numpy(),
        schema.EVENT: inter[schema.EVENT].to_numpy(),
    })
    if schema.TIMESTAMP in inter:  # without one the column is absent: no time is made up
        out.insert(4, schema.TIMESTAMP, inter[schema.TIMESTAMP].to_numpy())
    if schema.ORIGIN in inter:  # merged feedback: training can weigh what the model did not choose
        out[schema.ORIGIN] = inter[schema.ORIGIN].to_numpy()
    for col in cfg.context_columns:
        if col in inter.columns:
            out[col] = _context_values(inter[col]).to_numpy()
    users = pd.DataFrame({schema.USER_IDX: user_idx.to_numpy(), schema.USER_ID: user_order})
    return out, items, users


def _timestamp_report(inter: pd.DataFrame, stats: dict[str, Any]) -> dict[str, Any]:
    """Whether the interactions have times, the forms they came in, and what that allows."""
    if schema.TIMESTAMP not in inter.columns:
        return {"present": False, "forms": {},
                "note": f"no {schema.TIMESTAMP!r} column: random-811 and cold-items splits only; add one "
                        f"({ACCEPTED}) for temporal-loo and global-time"}
    return {"present": True, "forms": stats.get("timestamp_forms", {})}


def _report(folder: Path, inter: pd.DataFrame, items: pd.DataFrame, users: pd.DataFrame, rejects: Rejects,
            shares: dict[str, dict[str, Any]], cfg: IngestConfig, wall: float, n_in: int) -> dict[str, Any]:
    n_items = max(len(items), 1)
    bare = ~items[schema.HAS_TEXT] & ~items[schema.HAS_IMAGE]
    return {
        "source": str(folder),
        "interactions": len(inter), "users": len(users), "items": len(items),
        "items_with_interactions": int(inter[schema.ITEM_IDX].nunique()),
        "rejected": rejects.counts(), "rejected_total": len(rejects.rows), "files": shares,
        "coverage": {
            "text": round(float(items[schema.HAS_TEXT].sum()) / n_items, 6),
            "image": round(float(items[schema.HAS_IMAGE].sum()) / n_items, 6),
            "both": round(float((items[schema.HAS_TEXT] & items[schema.HAS_IMAGE]).sum()) / n_items, 6),
            "neither": round(float(bare.sum()) / n_items, 6),
        },
        # kept, text and image masked: their content can only come from featurize vectors: sources
        "items_without_text_or_image": int(bare.sum()),
        "items_without_text_or_image_examples": items.loc[bare, schema.ITEM_ID].head(10).tolist(),
        "text_columns": [c for c in cfg.text_columns if c in items.columns],
        "text_columns_missing": [c for c in cfg.text_columns if c not in items.columns],
        "context_columns": [c for c in cfg.context_columns if c in inter.columns],
        "context_columns_missing": [c for c in cfg.context_columns if c not in inter.columns],
        "images_checked": int(items[schema.HAS_IMAGE].sum()), "images_decoded": cfg.check_images,
        "wall_s": round(wall, 3), "rows_per_s": round(n_in / wall, 1) if wall > 0 else None,
    }


def _runtime_vectors(data_dir: Path, items: pd.DataFrame) -> pd.DataFrame | None:
    """The vectors given with items added while serving (the dataset's runtime_vectors.parquet, written
    by retraining's merge), for the items ingest kept; None when the dataset has none."""
    path = data_dir / schema.RUNTIME_VECTORS
    if not path.is_file():
        return None
    frame = pd.read_parquet(path)
    return frame[frame[schema.ITEM_ID].astype(str).isin(set(items[schema.ITEM_ID].astype(str)))]


def run_ingest(data_dir: Path, out_dir: Path, cfg: IngestConfig) -> StepResult:
    """Ingest the dataset folder data_dir into out_dir (see docs/CONTRACTS.md for the layout).

    Raises:
        IngestError: a missing file or required column, or a file whose dropped share of rows
            passes `cfg.max_rejected_share` (rejected.parquet and report.json are written first).
    """
    start = time.perf_counter()
    data_dir = Path(data_dir)
    paths = {stem: find_table(data_dir, stem) for stem in (schema.ITEMS_STEM, schema.INTERACTIONS_STEM)}
    for stem, path in paths.items():
        if path is None:
            raise IngestError(f"{data_dir}: no {stem}.csv or {stem}.parquet (see the dataset contract in DESIGN.md)")
    items_path, inter_path = paths[schema.ITEMS_STEM], paths[schema.INTERACTIONS_STEM]
    assert items_path is not None and inter_path is not None
    items_raw, inter_raw = read_raw(items_path), read_raw(inter_path)
    require_columns(items_raw, schema.REQUIRED_ITEM_COLUMNS, items_path, "item")
    require_columns(inter_raw, schema.REQUIRED_INTERACTION_COLUMNS, inter_path, "interaction")
    rejects = Rejects()
    stats: dict[str, Any] = {}
    inter, items, users = ingest_frames(items_raw, inter_raw, data_dir, cfg, rejects,
                                        (items_path.name, inter_path.name), stats)
    users_raw = _read_users(data_dir, rejects)
    idle_users = 0  # users.csv rows of users without interactions: counted, not indexed
    if users_raw is not None:
        extra = users_raw.drop(columns=[ROW])
        idle_users = int((~extra[schema.USER_ID].isin(users[schema.USER_ID])).sum())
        users = users.merge(extra, on=schema.USER_ID, how="left", validate="one_to_one")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rejected = rejects.frame()
    rejected.to_parquet(out_dir / schema.REJECTED, index=False)
    shares = {
        items_path.name: _check_share(items_path.name, len(items_raw), len(items_raw) - len(items), cfg.max_rejected_share),
        inter_path.name: _check_share(inter_path.name, len(inter_raw), len(inter_raw) - len(inter), cfg.max_rejected_share),
    }
    wall = time.perf_counter() - start
    report = _report(data_dir, inter, items, users, rejects, shares, cfg, wall, len(inter_raw) + len(items_raw))
    report["users_file_without_interactions"] = idle_users
    report["timestamp"] = _timestamp_report(inter, stats)
    given = _runtime_vectors(Path(data_dir), items)
    if given is not None:
        report["runtime_vectors"] = len(given)
    write_json(out_dir / schema.REPORT, report)
    for name, share in shares.items():
        if not share["ok"]:
            raise IngestError(
                f"{data_dir / name}: {share['dropped']} of {share['rows']} rows rejected "
                f"({share['share']:.1%} > ingest.max_rejected_share {cfg.max_rejected_share:.1%}); "
                f"reasons {rejects.counts()}; see {out_dir / schema.REJECTED}"
            )
    if len(inter) == 0:
        raise IngestError(f"{inter_path}: no valid interaction left; see {out_dir / schema.REJECTED}")
    inter.to_parquet(out_dir / schema.INGESTED_INTERACTIONS, index=False)
    items.to_parquet(out_dir / schema.INGESTED_ITEMS, index=False)
    users.to_parquet(out_dir / schema.INGESTED_USERS, index=False)
    (out_dir / schema.RUNTIME_VECTORS).unlink(missing_ok=True)  # from an earlier run on other data
    if given is not None:
        given.to_parquet(out_dir / schema.RUNTIME_VECTORS, index=False)
    metrics = {
        "interactions": len(inter), "users": len(users), "items": len(items), "rejected": len(rejects.rows),
        "text_coverage": report["coverage"]["text"], "image_coverage": report["coverage"]["image"],
        "items_without_text_or_image": report["items_without_text_or_image"],
        "wall_s": report["wall_s"],
    }
    outputs = {name: out_dir / f for name, f in (
        ("interactions", schema.INGESTED_INTERACTIONS), ("items", schema.INGESTED_ITEMS),
        ("users", schema.INGESTED_USERS), ("rejected", schema.REJECTED), ("report", schema.REPORT))}
    return StepResult(metrics=metrics, outputs=outputs)
