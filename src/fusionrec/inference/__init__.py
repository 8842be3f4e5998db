"""The serving core: top-k, fold-in of new users, popularity fallback, new items, feedback.

`serving/service.py` is a thin BentoML adapter over `InferenceEngine`; every rule lives here.
"""

from __future__ import annotations

from fusionrec.inference.checks import EVENTS, ServeError, top_k
from fusionrec.inference.engine import InferenceEngine
from fusionrec.inference.snapshot import Snapshot
from fusionrec.inference.startup import build_engine

__all__ = ["EVENTS", "InferenceEngine", "ServeError", "Snapshot", "build_engine", "top_k"]
