"""Progress of long steps (calibration samples, a target's conversion stages) and the output of third-party
libraries, reported to whoever listens: the CLI shows a live display, a library caller sees nothing.

Components call ``stage("tflite: onnx2tf conversion")`` and iterate ``counted(samples, "calibration", total)``;
the CLI installs a ``Reporter`` with ``reporting(...)``. Nothing here imports more than the standard library.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Protocol, TextIO, TypeVar

T = TypeVar("T")


class Reporter(Protocol):
    def stage(self, text: str) -> None:
        """The build is now doing ``text`` (replaces the previous stage)."""

    def advance(self, label: str, done: int, total: int | None) -> None:
        """``done`` of ``total`` units of ``label`` are finished (0 first, then after every unit)."""


_reporter: ContextVar[Reporter | None] = ContextVar("infer_compile_progress", default=None)


@contextlib.contextmanager
def reporting(reporter: Reporter) -> Iterator[None]:
    """Send the progress of the work in this block to ``reporter``."""
    token = _reporter.set(reporter)
    try:
        yield
    finally:
        _reporter.reset(token)


def stage(text: str) -> None:
    """Name the step that starts now (a target's conversion stage, the final check)."""
    if (reporter := _reporter.get()) is not None:
        reporter.stage(text)


def counted(items: Iterable[T], label: str, total: int | None, size: Callable[[T], int] = lambda item: 1,
            ) -> Iterator[T]:
    """``items``, reporting how many units (``size`` of each item, e.g. the samples in a batch) are done."""
    reporter = _reporter.get()
    if reporter is None:
        yield from items
        return
    done = 0
    reporter.advance(label, done, total)
    for item in items:
        yield item
        done += size(item)
        reporter.advance(label, done, total)


LOG_HEADER = "# infer-compile: what third-party libraries printed during the build (--verbose shows it live)\n"


_terminal: ContextVar[TextIO | None] = ContextVar("infer_compile_terminal", default=None)


def terminal() -> TextIO:
    """Where our own messages for the user go: the terminal's stderr (while ``third_party_output`` captures,
    the copy of it kept aside), else ``sys.stderr``. The CLI's error console writes here."""
    return _terminal.get() or sys.stderr


class _Diverted(io.TextIOBase):
    """``sys.stderr`` while third-party output is captured: Python-level writes (``logging`` handlers, including
    the lastResort one, ``warnings``, prints to stderr) go to descriptor 2, which is the capture; afterwards to
    whatever ``sys.stderr`` is then. Libraries make their logging handlers on import (torch, transformers, absl,
    TensorFlow), which happens inside a build: a handler made then keeps this object and keeps working."""

    def __init__(self, before: TextIO) -> None:
        super().__init__()
        self.before = before
        self.capturing = True

    def _after(self) -> TextIO:
        return self.before if sys.stderr is self else sys.stderr

    def write(self, text: str) -> int:
        if not self.capturing:
            return self._after().write(text)
        os.write(2, text.encode(errors="replace"))
        return len(text)

    def flush(self) -> None:
        if not self.capturing:
            self._after().flush()

    def isatty(self) -> bool:
        return False if self.capturing else self._after().isatty()

    def fileno(self) -> int:
        return 2 if self.capturing else self._after().fileno()


@contextlib.contextmanager
def third_party_output(log: Path | None) -> Iterator[None]:
    """While the block runs, what third-party code prints is kept out of the terminal and then appended to
    ``log`` (when there was any): native libraries' and converters' writes to file descriptors 1 and 2
    (TensorFlow/absl C++ logs, onnx2tf's prints) and Python-level stderr (``logging`` records of TensorFlow,
    torch.onnx, transformers, nncf; ``warnings``). Our own messages reach the terminal through ``terminal()``.
    ``log`` None: no capture (``--verbose``). A file at ``log`` that we did not write is left alone."""
    if log is None:
        yield
        return
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    python_stderr = sys.stderr
    # Python's stderr on descriptor 2 (a console script; rich's live display proxies it) keeps the terminal
    # through a copy of the descriptor; another one (a test runner's, a notebook's) is not redirected anyway.
    own = os.fdopen(os.dup(saved_err), "w", buffering=1) if _on_descriptor(python_stderr, 2) else None
    diverted = _Diverted(python_stderr)
    with tempfile.TemporaryFile() as sink:
        token = _terminal.set(own or python_stderr)
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            sys.stderr = diverted
            yield
        finally:
            with contextlib.suppress(ValueError, OSError):
                sys.stdout.flush()
            diverted.capturing = False
            sys.stderr = python_stderr
            _terminal.reset(token)
            os.dup2(saved_out, 1)
            os.dup2(saved_err, 2)
            for fd in (saved_out, saved_err):
                os.close(fd)
            if own is not None:
                own.close()
            sink.seek(0)
            append_log(log, sink.read())


def _on_descriptor(stream: TextIO, fd: int) -> bool:
    try:
        return stream.fileno() == fd
    except (AttributeError, ValueError, OSError):  # io.UnsupportedOperation is an OSError
        return False


def append_log(log: Path, captured: bytes) -> None:
    """``captured`` appended to the build's ``log`` (created with LOG_HEADER; one we did not write is left alone)."""
    if not captured.strip():
        return
    with contextlib.suppress(OSError):  # a log that cannot be written never fails a build
        if log.exists() and not log.read_text(errors="replace").startswith(LOG_HEADER):
            return
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as fh:
            if fh.tell() == 0:
                fh.write(LOG_HEADER.encode())
            fh.write(captured)
