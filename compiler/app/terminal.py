"""What every command shares: the consoles, one-line errors and exit codes, warnings, and small option parsers."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import typer
from rich.console import Console
from rich.markup import escape

from infer_compile.core import progress
from infer_compile.core.errors import BuildWarning, ExitCode, InferCompileError, Terminated


class _UserStderr:
    """The stderr our own messages go to: sys.stderr, or while a build captures what third-party libraries print
    (core.progress.third_party_output), the terminal kept aside from it."""

    def __getattr__(self, name: str) -> Any:
        return getattr(progress.terminal(), name)


# Logs and pipes are not terminals: give them room instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 120)
err_console = Console(file=cast(IO[str], _UserStderr()))  # a stream by delegation



@dataclass
class Outcome:
    """What a command has written so far, so an interruption can say what is true."""

    written: list[Path] = field(default_factory=list)  # complete artifacts


@contextmanager
def user_errors(debug: bool) -> Iterator[Outcome]:
    """Turn errors into one line + exit code; show tracebacks only when debugging."""
    outcome = Outcome()
    try:
        yield outcome
    except InferCompileError as exc:
        if debug:
            err_console.print_exception()
        err_console.print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False, soft_wrap=True)
        if exc.hint:
            err_console.print(f"  hint: {escape(exc.hint)}", highlight=False, soft_wrap=True)
        raise typer.Exit(int(exc.exit_code)) from None
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (Terminated); cleanup ran on the way here
        # Complete artifacts: those this command saw finish, and those the interrupted code says it committed.
        written = list(dict.fromkeys([*outcome.written, *getattr(exc, "written", [])]))
        what = (f"complete before it: {', '.join(map(str, written))}; nothing else was written" if written
                else "no artifact was written")
        label, code = (("terminated", ExitCode.TERMINATED) if isinstance(exc, Terminated)
                       else ("interrupted", ExitCode.INTERRUPTED))
        err_console.print(f"[bold red]{label}:[/] {escape(what)}", highlight=False, soft_wrap=True)
        raise typer.Exit(int(code)) from None
    except (typer.Exit, typer.Abort, typer.TyperException):
        raise
    except Exception as exc:
        if debug:
            err_console.print_exception()
        err_console.print(f"[bold red]internal error:[/] {type(exc).__name__}: {escape(str(exc))}",
                          highlight=False, soft_wrap=True)
        if not debug:
            err_console.print("  hint: rerun with --debug for the traceback and report it")
        raise typer.Exit(int(ExitCode.INTERNAL)) from None


@contextmanager
def build_warnings() -> Iterator[None]:
    """Show BuildWarnings (poor calibration data, a discarded cache entry) as one plain line each, every time."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", BuildWarning)
        original = warnings.showwarning

        def route(message, category, *args, **kwargs) -> None:
            if issubclass(category, BuildWarning):
                err_console.print(f"[bold yellow]warning:[/] {escape(str(message))}", soft_wrap=True,
                                  highlight=False)
            else:
                original(message, category, *args, **kwargs)

        warnings.showwarning = route
        yield


def size_text(path: Path) -> str:
    size: float = sum(p.stat().st_size for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file())
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError


def shown_path(path: Path | str) -> str:
    """``path`` relative to the working folder when it is inside it (short lines in CI logs), else as given."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def counted_columns() -> tuple[Any, ...]:
    """rich progress columns that show a bar, done/total and the time left for tasks with a total, nothing for
    the others (a step named by a spinner line)."""
    from rich.progress import BarColumn, MofNCompleteColumn, ProgressColumn, Task, TimeRemainingColumn
    from rich.text import Text

    class WhenCounted(ProgressColumn):
        def __init__(self, column: ProgressColumn) -> None:
            super().__init__()
            self.column = column

        def render(self, task: Task) -> Any:
            return self.column.render(task) if task.total is not None else Text("")

    return tuple(WhenCounted(column) for column in (BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()))
