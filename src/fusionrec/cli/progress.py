"""What a long command shows while it works, and the one line it ends with.

The library reports progress through its log records (one per epoch, trial, fitted baseline...);
`progress` turns them into a live bar (rich, on stderr) with the latest record beside it, so the
library knows nothing of terminals. stdout gets only the command's one-line `summary`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

Advance = Callable[[logging.LogRecord], bool]
LOGGERS = ("fusionrec", "optuna")  # the library's records, and optuna's per-trial lines during a search


def starts_with(*templates: str) -> Advance:
    """An `advance` predicate: the record's message template starts with one of these."""
    return lambda record: isinstance(record.msg, str) and record.msg.startswith(templates)


class _Feed(logging.Handler):
    """Prints each record above the bar and advances the bar on the records that mark a unit of work."""

    def __init__(self, bar: Any, task: Any, advance: Advance | None, after: str | None) -> None:
        super().__init__(logging.INFO)
        self.bar, self.task, self.advance, self.after = bar, task, advance, after

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage().split(" and parameters: ")[0]  # optuna's trial lines end with every param
            self.bar.console.print(f"  {text}", style="dim" if record.levelno < logging.WARNING else "yellow",
                                   markup=False, highlight=False)
            if self.advance is not None and self.advance(record):
                self.bar.advance(self.task)
                done = self.bar.tasks[0]
                if self.after and done.total is not None and done.completed >= done.total:
                    self.bar.update(self.task, description=self.after)
        except Exception:  # noqa: BLE001 (a display problem never stops the step)
            self.handleError(record)


@contextmanager
def progress(what: str, total: int | None = None, advance: Advance | None = None,
             after: str | None = None) -> Iterator[None]:
    """Show a spinner (or an n/total bar), the elapsed time and the library's log lines while the body runs.

    Args:
        what: the bar's label, e.g. "train: epochs".
        total: units of work (None: a spinner only).
        advance: which log records count as one unit done.
        after: the label once `total` units are done (the step's last phase).
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    columns: list[Any] = [SpinnerColumn(), TextColumn("{task.description}")]
    if total:
        columns += [BarColumn(), MofNCompleteColumn()]
    columns.append(TimeElapsedColumn())
    saved = {name: (logging.getLogger(name).level, logging.getLogger(name).propagate) for name in LOGGERS}
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(what, total=total or None)
        feed = _Feed(bar, task, advance, after)
        for name in LOGGERS:
            log = logging.getLogger(name)
            log.addHandler(feed)
            log.setLevel(logging.INFO)
            log.propagate = False  # no second copy through a root handler
        from fusionrec.automl.study import optuna_stderr

        optuna_default = optuna_stderr(False)
        try:
            yield
        finally:
            for name, (level, propagate) in saved.items():
                log = logging.getLogger(name)
                log.removeHandler(feed)
                log.setLevel(level)
                log.propagate = propagate
            optuna_stderr(optuna_default)


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if math.isfinite(v) else "nan"
    return str(v)


def summary(verb: str, metrics: Mapping[str, Any], started: float, out: Path | str | None = None,
            keys: tuple[str, ...] | None = None, note: str = "") -> None:
    """The command's last line on stdout: `verb: k=v, ... (N s) -> out`."""
    names = [k for k in (keys or tuple(metrics)) if k in metrics]
    parts = ", ".join(f"{k}={_value(metrics[k])}" for k in names)
    where = f" -> {out}" if out is not None else ""
    tail = f"; {note}" if note else ""
    typer.echo(f"{verb}: {parts}{tail} ({time.perf_counter() - started:.0f} s){where}")


def fail(what: str, exc: BaseException | str, code: int = 1) -> typer.Exit:
    """One red line on stderr (`what failed: reason`); return the Exit to raise."""
    message = " ".join(str(exc).split()) if not isinstance(exc, str) else exc
    typer.secho(f"{what} failed: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)
