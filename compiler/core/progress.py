"""Progress of long steps (calibration samples, a target's conversion stages) and the output of third-party
libraries, reported to whoever listens: the CLI shows a live display, a library caller sees nothing.

Components call ``stage("tflite: onnx2tf conversion")`` and iterate ``counted(samples, "calibration", total)``;
the CLI installs a ``Reporter`` with ``reporting(...)``. Nothing here imports more than the standard library.
"""

from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def third_party_output(log: Path | None) -> Iterator[None]:
    """While the block runs, what native libraries and converters write to file descriptors 1 and 2
    (TensorFlow/absl C++ logs, converters' prints) is kept out of the terminal and then appended to ``log`` (when
    there was any); Python's ``sys.stderr`` keeps the terminal, so our own progress and warnings still show.
    ``log`` None: no capture (``--verbose``). A file at ``log`` that we did not write is left alone."""
    if log is None:
        yield
        return
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    python_stderr = sys.stderr
    # Python's stderr on descriptor 2 (a console script) keeps the terminal through a copy of it; another one
    # (a test runner's, a notebook's) is not redirected anyway.
    terminal = os.fdopen(os.dup(saved_err), "w", buffering=1) if _on_descriptor(python_stderr, 2) else python_stderr
    with tempfile.TemporaryFile() as sink:
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            sys.stderr = terminal
            yield
        finally:
            with contextlib.suppress(ValueError, OSError):
                sys.stdout.flush()
            sys.stderr = python_stderr
            os.dup2(saved_out, 1)
            os.dup2(saved_err, 2)
            for fd in (saved_out, saved_err):
                os.close(fd)
            if terminal is not python_stderr:
                terminal.close()
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
