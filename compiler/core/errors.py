"""Errors users can act on, each mapped to a stable process exit code.

The CLI prints ``str(error)`` as one line (plus the hint) and exits with ``error.exit_code``;
anything that is not an ``InferCompileError`` is a bug and gets a traceback only with --debug.
"""

from __future__ import annotations

import signal
from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes; documented in the README, never renumbered."""

    OK = 0
    USER_ERROR = 1  # bad input file, bad option, missing data
    USAGE = 2  # command line could not be parsed (typer/click's own code)
    ACCURACY = 3  # a numeric check or accuracy budget failed
    UNAVAILABLE = 4  # the target's library or hardware is not present on this machine
    INTERNAL = 70  # a bug in infer-compile
    INTERRUPTED = 130  # Ctrl-C (SIGINT)
    TERMINATED = 143  # SIGTERM (CI cancellation, docker stop, Kubernetes)


def one_line(exc: BaseException, limit: int = 300) -> str:
    """A library's (often multi-line) exception message as one line of at most ``limit`` characters."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class InferCompileError(Exception):
    """Base class: a one-line message and an optional hint saying what to do."""

    exit_code: ExitCode = ExitCode.USER_ERROR

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message


class UserInputError(InferCompileError):
    """The model file, data or options given are wrong."""


class UnsupportedError(InferCompileError):
    """The model uses something a frontend, pass or target cannot handle."""


class TargetUnavailableError(InferCompileError):
    """The requested target's library or hardware is missing here."""

    exit_code = ExitCode.UNAVAILABLE


class AccuracyError(InferCompileError):
    """Outputs differ from the reference beyond the requested tolerance or budget."""

    exit_code = ExitCode.ACCURACY


class PassError(InferCompileError):
    """A pass failed; names the pass and the passes that ran before it."""

    exit_code = ExitCode.INTERNAL

    def __init__(self, pass_name: str, ran_before: list[str], cause: BaseException) -> None:
        before = ", ".join(ran_before) if ran_before else "none"
        super().__init__(
            f"pass '{pass_name}' failed: {cause} (passes run before it: {before})",
            hint=f"rerun with --skip-pass {pass_name} to build without it, and --debug for the traceback",
        )
        self.pass_name = pass_name
        self.ran_before = ran_before
        if isinstance(cause, InferCompileError):
            self.exit_code = cause.exit_code


class BuildWarning(UserWarning):
    """Something the user should know that does not stop the build (the CLI prints it as one line)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be so the same cleanup runs (staging folders, temp files)."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


def raise_on_sigterm() -> None:
    """Make SIGTERM raise Terminated in this process (command-line entry points and build workers only:
    a library must not take over its host's signals)."""
    signal.signal(signal.SIGTERM, _raise_terminated)
