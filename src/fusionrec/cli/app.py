"""The Typer app every command module registers on (one command per verb)."""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar, get_args

import typer
from typer.core import TyperGroup

from fusionrec.config import ConfigError, Section, load_section

S = TypeVar("S", bound=Section)
DEBUG_ENV = "FUSIONREC_DEBUG"  # set to 1 to see the traceback of an unexpected error


class Friendly(TyperGroup):
    """The command group: an error no command handled becomes one red line, never a traceback.

    Commands turn the errors they expect (bad data, bad config) into their own message and exit
    code; this catches the rest, names the exception and says how to see the traceback.
    """

    def invoke(self, ctx: Any) -> Any:  # a Context of the click that Typer vendors
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):  # exits, Ctrl-C, usage errors: Typer's own
            raise
        except Exception as exc:
            if os.environ.get(DEBUG_ENV):
                raise
            command = ctx.invoked_subcommand or ctx.info_name or "fusionrec"
            message = " ".join(str(exc).split()) or "no message"
            typer.secho(f"{command} failed: {type(exc).__name__}: {message} (set {DEBUG_ENV}=1 for the traceback)",
                        err=True, fg=typer.colors.RED)
            raise typer.Exit(1) from None


app = typer.Typer(
    name="fusionrec",
    cls=Friendly,
    help="Multi-modal recommendation, from a catalogue to a monitored service.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def choices(name: str, annotation: Any) -> type[Enum]:
    """A str Enum of a config field's Literal values, so `--help` lists them and click checks them."""
    values = [v for v in get_args(annotation) if v != ""]
    return Enum(name, {v: v for v in values}, type=str)  # type: ignore[return-value]

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
