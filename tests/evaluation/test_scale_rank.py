"""benchmarks/scale.py --rank-users: the evaluate step's ranking, timed over the first N test users."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from benchmarks.scale import _rank_stage


def test_ranks_the_first_users_with_test_items(ingested_dir: Path, split_dir: Path, model_dir: Path) -> None:
    d = {"ingested": ingested_dir, "split": split_dir, "model": model_dir}
    tested = pd.read_parquet(split_dir / "test.parquet")["user_id"].nunique()

    out = _rank_stage(d, 10)

    m = out["metrics"]
    assert (m["rank_users"], m["test_users"]) == (10, tested)
    assert m["s_per_512"] > 0
    assert [p["part"] for p in out["parts"]] == ["load the holdout", "load the model",
                                                 "rank every item for the first 10 test users"]
    assert _rank_stage(d, 10**6)["metrics"]["rank_users"] == tested  # more than there are: all of them
