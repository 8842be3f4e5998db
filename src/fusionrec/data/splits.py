"""`fusionrec split`: train/valid/test splits of an ingested folder, or an external split.

Protocols (SplitConfig.protocol):
- `random-811`: per user (ascending id, one `numpy.random.default_rng(seed)`), the user's
  interactions in source order are permuted; the first round(0.8 n) go to train, the next
  round(0.1 n) to valid, the rest to test; users with fewer than 10 get n-2/1/1 and users
  with fewer than `min_user_interactions` go entirely to train. This is the rule of
  ml100k-mm's `splits/random-811`, which it reproduces exactly.
- `temporal-loo`: per user, the last interaction in time to test, the second last to valid.
- `global-time`: one cut in time: the latest `test_share` of interactions to test and the
  `valid_share` before them to valid.
- `cold-items`: `test_share` of the items are held out of train entirely; their interactions
  split at random between valid and test (`cold_items.json` lists them).

`temporal-loo` and `global-time` need timestamps: on interactions ingested without a
timestamp column they raise a SplitError naming the column and the way out.

Negative events (schema.NEGATIVE_EVENTS, e.g. a dislike merged from feedback) stay in train
under every protocol: the protocol places the positive interactions only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fusionrec import schema
from fusionrec.config import SplitConfig
from fusionrec.data.loading import Ingested, Split, SplitError, load_ingested, load_split
from fusionrec.data.timestamps import ACCEPTED
from fusionrec.io import StepResult, write_json

__all__ = ["assign_parts", "check_times", "run_split", "split_frames"]

TRAIN, VALID, TEST = 0, 1, 2
TIMED = ("temporal-loo", "global-time")  # protocols that need the timestamp column


def _user_groups(inter: pd.DataFrame, order_by: list[str]) -> list[np.ndarray]:
    """Row positions per user (ascending user_idx), each sorted by order_by then source order."""
    frame = pd.DataFrame({
        "u": inter[schema.USER_IDX].to_numpy(), "pos": np.arange(len(inter)),
        **{c: inter[c].to_numpy() for c in order_by},
    })
    frame = frame.sort_values(["u", *order_by, "pos"], kind="stable")
    bounds = np.flatnonzero(np.diff(frame["u"].to_numpy())) + 1
    return np.split(frame["pos"].to_numpy(), bounds) if len(frame) else []


def random_811(inter: pd.DataFrame, seed: int, min_n: int) -> np.ndarray:
    """Part label (0 train, 1 valid, 2 test) per row, per-user random 80/10/10."""
    labels = np.zeros(len(inter), dtype=np.int8)
    rng = np.random.default_rng(seed)
    for rows in _user_groups(inter, []):
        n = len(rows)
        if n < max(min_n, 3):
            continue
        perm = rows[rng.permutation(n)]
        n_train, n_valid = (round(0.8 * n), round(0.1 * n)) if n >= 10 else (n - 2, 1)
        labels[perm[n_train : n_train + n_valid]] = VALID
        labels[perm[n_train + n_valid :]] = TEST
    return labels


def temporal_loo(inter: pd.DataFrame, min_n: int) -> np.ndarray:
    """Per user: last interaction in time to test, the second last to valid."""
    labels = np.zeros(len(inter), dtype=np.int8)
    for rows in _user_groups(inter, [schema.TIMESTAMP]):
        if len(rows) >= max(min_n, 3):
            labels[rows[-1]] = TEST
            labels[rows[-2]] = VALID
    return labels


def global_time(inter: pd.DataFrame, valid_share: float, test_share: float) -> np.ndarray:
    """One cut in time: the latest test_share of rows to test, the valid_share before to valid."""
    order = np.lexsort((np.arange(len(inter)), inter[schema.TIMESTAMP].to_numpy()))
    n_test, n_valid = round(test_share * len(inter)), round(valid_share * len(inter))
    labels = np.zeros(len(inter), dtype=np.int8)
    labels[order[len(order) - n_test :]] = TEST
    labels[order[len(order) - n_test - n_valid : len(order) - n_test]] = VALID
    return labels


def cold_items(inter: pd.DataFrame, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(labels, held-out item_idx): held-out items' rows go half to valid, half to test."""
    rng = np.random.default_rng(seed)
    items = np.unique(inter[schema.ITEM_IDX].to_numpy())
    held = np.sort(items[rng.permutation(len(items))[: round(share * len(items))]])
    is_cold = np.isin(inter[schema.ITEM_IDX].to_numpy(), held)
    labels = np.zeros(len(inter), dtype=np.int8)
    labels[is_cold] = np.where(rng.random(int(is_cold.sum())) < 0.5, VALID, TEST)
    return labels, held.astype(np.int64)


def assign_parts(inter: pd.DataFrame, cfg: SplitConfig) -> tuple[np.ndarray, np.ndarray]:
    """(part label per interaction row, cold item_idx) for the configured protocol."""
    none = np.zeros(0, dtype=np.int64)
    if cfg.protocol == "random-811":
        return random_811(inter, cfg.seed, cfg.min_user_interactions), none
    if cfg.protocol == "temporal-loo":
        return temporal_loo(inter, cfg.min_user_interactions), none
    if cfg.protocol == "global-time":
        return global_time(inter, cfg.valid_share, cfg.test_share), none
    if cfg.protocol == "cold-items":
        return cold_items(inter, cfg.test_share, cfg.seed)
    raise ValueError(f"unknown split protocol {cfg.protocol!r}")


def check_times(ingested: Ingested, protocol: str) -> None:
    """Refuse a protocol that orders by time when the interactions have no timestamp.

    Raises:
        SplitError: naming the protocol, the missing column and what to do.
    """
    if protocol in TIMED and schema.TIMESTAMP not in ingested.interactions.columns:
        where = ingested.path / schema.INGESTED_INTERACTIONS if ingested.path else "the ingested interactions"
        raise SplitError(
            f"split protocol {protocol!r} orders interactions by time, but {where} has no {schema.TIMESTAMP!r} "
            f"column (the dataset's interactions file had none). Add a {schema.TIMESTAMP!r} column to it "
            f"({ACCEPTED}) and ingest again, or use split.protocol random-811 or cold-items"
        )


def split_frames(ingested: Ingested, cfg: SplitConfig) -> Split:
    """The in-memory split of an ingested dataset (rows keep their ingested order).

    Raises:
        SplitError: a temporal protocol on interactions without timestamps.
    """
    check_times(ingested, cfg.protocol)
    inter = ingested.interactions.reset_index(drop=True)
    # negative events (a dislike merged from feedback) are training signal, never a held-out target
    negative = schema.is_negative(inter)
    labels = np.zeros(len(inter), dtype=np.int8)
    positive = np.flatnonzero(~negative)
    labels[positive], cold = assign_parts(inter.iloc[positive].reset_index(drop=True), cfg)
    labels[negative & np.isin(inter[schema.ITEM_IDX].to_numpy(), cold)] = VALID  # cold items stay out of train
    parts = {name: inter[labels == k].reset_index(drop=True) for k, name in enumerate(schema.SPLIT_PARTS)}
    return Split(**parts, cold_items=cold, n_users=ingested.n_users, n_items=ingested.n_items)


def _summary(frame: pd.DataFrame) -> dict[str, int]:
    return {"rows": len(frame), "users": int(frame[schema.USER_IDX].nunique()),
            "items": int(frame[schema.ITEM_IDX].nunique())}


def split_report(split: Split, protocol: str, seed: int | None) -> dict[str, Any]:
    """Rows, users and items per part, plus what the evaluator should know (unseen users/items)."""
    train_users = set(split.train[schema.USER_IDX])
    train_items = set(split.train[schema.ITEM_IDX])
    report: dict[str, Any] = {"protocol": protocol, "seed": seed,
                              "parts": {p: _summary(split.part(p)) for p in schema.SPLIT_PARTS}}
    for part in ("valid", "test"):
        frame = split.part(part)
        report[f"{part}_users_not_in_train"] = int(len(set(frame[schema.USER_IDX]) - train_users))
        report[f"{part}_items_not_in_train"] = int(len(set(frame[schema.ITEM_IDX]) - train_items))
    report["cold_items"] = len(split.cold_items)
    return report


def run_split(ingested_dir: Path, out_dir: Path, cfg: SplitConfig, external: Path | None = None) -> StepResult:
    """Split an ingested folder into out_dir/{train,valid,test}.parquet + report.json.

    Args:
        external: a folder with train/valid/test (.csv or .parquet, original ids) to use instead
            of cfg.protocol, so results compare with other tools on identical data.
    """
    ingested = load_ingested(ingested_dir)
    if external is not None:
        split = load_split(external, ingested)
        report = split_report(split, "external", None) | {"external": str(external)}
    else:
        split = split_frames(ingested, cfg)
        report = split_report(split, cfg.protocol, cfg.seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = {}
    for part in schema.SPLIT_PARTS:
        outputs[part] = out_dir / f"{part}.parquet"
        split.part(part).to_parquet(outputs[part], index=False)
    cold_path = out_dir / schema.COLD_ITEMS
    if len(split.cold_items):
        ids = ingested.items[schema.ITEM_ID].to_numpy()[split.cold_items]
        write_json(cold_path, [str(i) for i in ids])
        outputs["cold_items"] = cold_path
    elif cold_path.exists():
        cold_path.unlink()  # a stale list from an earlier cold-items split would mislead
    write_json(out_dir / schema.REPORT, report)
    outputs["report"] = out_dir / schema.REPORT
    metrics = {f"{p}_rows": report["parts"][p]["rows"] for p in schema.SPLIT_PARTS}
    metrics["cold_items"] = report["cold_items"]
    return StepResult(metrics=metrics, outputs=outputs)
