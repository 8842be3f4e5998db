"""The Typer app every command module registers on (one command per verb)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import typer

from fusionrec.config import ConfigError, Section, load_section

S = TypeVar("S", bound=Section)

app = typer.Typer(
    name="fusionrec",
    help="Multi-modal recommendation, from a catalogue to a monitored service.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

ParamsOption = typer.Option(Path("params.yaml"), "--params", help="params.yaml to read (defaults where absent)")


def step_config(params: Path, name: str, cls: type[S], **overrides: Any) -> S:
    """One params.yaml section with command-line overrides (None = keep); a bad value exits 2 with the reason."""
    from pydantic import ValidationError

    try:
        cfg = load_section(params, name).with_overrides(**overrides)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        typer.secho(f"bad {name} option: {problems}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from None
    except ConfigError as exc:
        typer.secho(f"bad configuration: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from None
    assert isinstance(cfg, cls)
    return cfg
