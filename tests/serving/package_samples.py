"""What the package tests share: an in-memory model store and a promotion.json that says no."""

from __future__ import annotations

import json
from pathlib import Path

from fusionrec.evaluation.gate import Decision


class FakeStore:
    """A ModelStore that keeps what it was given in memory."""

    location = "memory"

    def __init__(self) -> None:
        self.puts: list[tuple[Path, str, dict[str, str], dict]] = []

    def put(self, model_dir: Path, name: str, labels: dict[str, str], metadata: dict) -> str:
        self.puts.append((model_dir, name, labels, metadata))
        return f"{name}:v{len(self.puts)}"


def rejected_promotion(folder: Path) -> Path:
    """promotion.json as `fusionrec evaluate` writes it for a challenger worse than the champion."""
    decision = Decision(False, "challenger is worse than the champion beyond the tolerance 0.005: ndcg@20 -0.0727",
                        "ndcg@20", 0.1234, 0.1961, 0.005, {"ndcg@20": -0.0727})
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "promotion.json"
    path.write_text(json.dumps(decision.to_dict()))
    return path
