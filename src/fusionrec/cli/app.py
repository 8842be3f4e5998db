"""The Typer app every command module registers on (one command per verb)."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(
    name="fusionrec",
    help="Multi-modal recommendation, from a catalogue to a monitored service.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

ParamsOption = typer.Option(Path("params.yaml"), "--params", help="params.yaml to read (defaults where absent)")
