"""`fusionrec` console script: one command per verb, each a thin call into fusionrec.steps."""

from __future__ import annotations

from fusionrec.cli import (  # noqa: F401  (importing registers the commands)
    data,
    evaluate,
    features,
    monitor,
    pipeline,
    search,
    serve,
    train,
)
from fusionrec.cli.app import app


def main() -> None:
    app()
