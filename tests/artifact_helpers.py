"""Small real artifacts and CLI helpers for the artifact command tests (run, bench, verify, inspect, build)."""

from __future__ import annotations

from pathlib import Path

import onnx
from typer.testing import CliRunner

from infer_compile.app.build import BuildOptions, BuildResult, compile_model
from infer_compile.app.cli import app
from infer_compile.core.errors import ExitCode
from tests.builders import tiny_cnn

_runner = CliRunner()


def write_tiny_cnn(path: Path, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(tiny_cnn(**kwargs), str(path))
    return path


def build_artifact(source: Path, output: Path, **options) -> BuildResult:
    """A real onnxruntime build (no autotuning, no cache unless asked) of ``source``."""
    options.setdefault("target", "onnxruntime")
    return compile_model(source, BuildOptions(output=output, **options))


def invoke(*args: object):
    return _runner.invoke(app, [str(a) for a in args])


def assert_user_error(result, *fragments: str, code: ExitCode = ExitCode.USER_ERROR) -> None:
    """One clear error line (with a hint), the documented exit code, no traceback."""
    assert result.exit_code == code, result.output
    lines = [line for line in result.stderr.splitlines() if not line.startswith("warning:")]
    assert lines and lines[0].startswith("error:"), result.stderr  # the error first, after any warnings
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    assert "hint:" in result.stderr
