"""CLI commands: data (registered on fusionrec.cli.app.app)."""

from __future__ import annotations

from fusionrec.cli.app import app  # noqa: F401
