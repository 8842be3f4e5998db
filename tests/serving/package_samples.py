"""What the package tests share: an in-memory model store."""

from __future__ import annotations

from pathlib import Path


class FakeStore:
    """A ModelStore that keeps what it was given in memory."""

    location = "memory"

    def __init__(self) -> None:
        self.puts: list[tuple[Path, str, dict[str, str], dict]] = []

    def put(self, model_dir: Path, name: str, labels: dict[str, str], metadata: dict) -> str:
        self.puts.append((model_dir, name, labels, metadata))
        return f"{name}:v{len(self.puts)}"

