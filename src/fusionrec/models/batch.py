"""Batch recommendations in original ids (`fusionrec recommend`): how anyone checks
fusionrec's numbers with their own evaluator.

Known users are scored directly; users the model never saw are folded in from their
interactions in the exclude files (or get popularity). Candidate items that were in
the catalogue but never in training are scored through the content path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fusionrec import schema
from fusionrec.models.recommender import Recommender


class RecommendError(ValueError):
    """Bad input to `recommend`; the message names the file and the problem."""


def _read_ids(path: Path, column: str) -> pd.DataFrame:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such file")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if column not in frame.columns:
        raise RecommendError(f"{path}: needs a {column!r} column (has {', '.join(frame.columns)})")
    return frame


def _exclusions(rec: Recommender, files: Sequence[Path]) -> dict[str, np.ndarray]:
    """user_id -> item indices to exclude (ids unknown to the model are skipped: never ranked anyway)."""
    frames = [_read_ids(f, schema.USER_ID) for f in files]
    for f, frame in zip(files, frames, strict=True):
        if schema.ITEM_ID not in frame.columns:
            raise RecommendError(f"{f}: needs an {schema.ITEM_ID!r} column")
    if not frames:
        return {}
    pairs = pd.concat([f[[schema.USER_ID, schema.ITEM_ID]] for f in frames], ignore_index=True)
    pos = {i: n for n, i in enumerate(rec.item_ids)}
    pairs["idx"] = pairs[schema.ITEM_ID].map(pos)
    pairs = pairs.dropna(subset=["idx"])
    return {u: g["idx"].to_numpy(np.int64) for u, g in pairs.groupby(schema.USER_ID)}


def _candidates(rec: Recommender, path: Path | None) -> np.ndarray | None:
    if path is None:
        return None
    ids = _read_ids(path, schema.ITEM_ID)[schema.ITEM_ID].tolist()
    idx = [rec.item_index(i) for i in ids]
    unknown = [i for i, j in zip(ids, idx, strict=True) if j is None]
    if unknown:
        raise RecommendError(
            f"{path}: {len(unknown)} candidate item(s) unknown to the model, e.g. {unknown[:5]}; "
            "candidates must be in the ingested catalogue the model was trained with"
        )
    return np.unique(np.asarray(idx, dtype=np.int64))


def recommend_frame(rec: Recommender, user_ids: Sequence[str], k: int, exclude: dict[str, np.ndarray],
                    candidates: np.ndarray | None = None, batch_size: int = 512) -> pd.DataFrame:
    """Top-k rows (user_id, rank, item_id, score) for each user, best first, rank from 1."""
    from fusionrec.evaluation.metrics import top_k

    allowed = np.ones(rec.n_items, dtype=bool)
    if candidates is not None:
        allowed[:] = False
        allowed[candidates] = True
    rows: list[pd.DataFrame] = []
    empty = np.zeros(0, np.int64)
    for start in range(0, len(user_ids), batch_size):
        batch = [str(u) for u in user_ids[start : start + batch_size]]
        known = [rec.user_index(u) for u in batch]
        scores = np.empty((len(batch), rec.n_items), dtype=np.float64)
        kn = [i for i, j in enumerate(known) if j is not None]
        if kn:
            scores[kn] = rec.score_users(np.asarray([known[i] for i in kn], dtype=np.int64))
        unk = [i for i, j in enumerate(known) if j is None]
        if unk:
            scores[unk] = rec.score_histories([exclude.get(batch[i], empty) for i in unk])
        scores[:, ~allowed] = -np.inf
        for i, u in enumerate(batch):
            scores[i, exclude.get(u, empty)] = -np.inf
        top = top_k(scores, k)  # (b, k)
        top_scores = np.take_along_axis(scores, top, axis=1)
        for i, u in enumerate(batch):
            ok = np.isfinite(top_scores[i])
            items = top[i][ok]
            rows.append(pd.DataFrame({schema.USER_ID: u, "rank": np.arange(1, len(items) + 1),
                                      schema.ITEM_ID: [rec.item_ids[j] for j in items],
                                      "score": top_scores[i][ok].astype(np.float32)}))
    columns = [schema.USER_ID, "rank", schema.ITEM_ID, "score"]
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=columns)


def run_recommend(model_dir: Path, users_file: Path, out_csv: Path, k: int = 20,
                  exclude_files: Sequence[Path] = (), candidates_file: Path | None = None) -> int:
    """Read the model and the files, write user_id,rank,item_id,score; returns the row count."""
    if k < 1:
        raise RecommendError(f"k must be at least 1, got {k}")
    rec = Recommender.load(model_dir)
    users = _read_ids(users_file, schema.USER_ID)[schema.USER_ID].drop_duplicates().tolist()
    frame = recommend_frame(rec, users, k, _exclusions(rec, exclude_files), _candidates(rec, candidates_file))
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out_csv, index=False)
    return len(frame)
