"""Monitoring with exploration: explored impressions and the feedback that answered them are left out
of the click-through and score checks, on frames and on windows read from SQLite and PostgreSQL."""

from __future__ import annotations

import pandas as pd

from fusionrec.monitoring.monitor import chosen_only
from fusionrec.monitoring.store import FeedbackStore
from fusionrec.monitoring.windows import served_between


def _frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    served = pd.DataFrame({"request_id": ["r1", "r1", "r1", "r2", "r2", "r2"],
                           "item_id": ["a", "b", "x", "a", "c", "y"], "position": [0, 1, 2, 0, 1, 2],
                           "score": [0.9, 0.8, 0.3, 0.9, 0.7, 0.2], "ts": [1.0] * 3 + [2.0] * 3,
                           "explored": [False, False, True, False, False, True]})
    events = pd.DataFrame({"request_id": ["r1", "r1", "r2", None], "item_id": ["a", "x", "y", "z"],
                           "event": ["click", "click", "click", "view"], "ts": [1.5, 1.5, 2.5, 2.6]})
    return events, served


def test_explored_impressions_and_their_answers_are_left_out() -> None:
    events, served = _frames()
    ev, sv = chosen_only(events, served)
    assert sv["item_id"].tolist() == ["a", "b", "a", "c"]
    assert ev["item_id"].tolist() == ["a", "z"]  # the organic view stays; clicks on x and y go


def test_frames_without_the_column_or_without_exploration_are_unchanged() -> None:
    events, served = _frames()
    old = served.drop(columns="explored")  # a reference pinned before the column existed
    assert chosen_only(events, old)[1] is old
    none = served.assign(explored=False)
    ev, sv = chosen_only(events, none)
    assert ev is events and sv is none


def test_windows_read_the_marks_from_the_store(db_url: str) -> None:
    with FeedbackStore(db_url) as store:
        store.record_served("r1", "u", ["a", "b", "x"], [0.9, 0.8, 0.3], "v1", ts=1.0, explored=[False, False, True])
        window = served_between(store.engine, 0.0, 2.0)
    assert window["explored"].tolist() == [False, False, True]
    assert window["request_id"].tolist() == ["r1"] * 3
