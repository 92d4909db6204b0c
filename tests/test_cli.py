"""The compile CLI: success output, and one clear line + exit code for each user error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from infer_compile.cli import app
from infer_compile.errors import ExitCode
from infer_compile.targets import get_target
from tests.hidden_imports import run_cli_without

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def assert_user_error(result, code: ExitCode, *fragments: str) -> None:
    assert result.exit_code == code, result.output
    assert result.stderr.startswith("error:"), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr
    assert "hint:" in result.stderr


def test_compile_prints_the_build_table_and_writes_report(tiny_cnn_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "model.onnx"
    result = invoke(tiny_cnn_onnx, "-o", out, "--verify-passes", "--report", tmp_path / "build.json")
    assert result.exit_code == 0, result.output
    for text in ("identity-elimination", "dropout=1", "onnxruntime", "13 -> ", str(out)):
        assert text in result.stdout
    assert out.is_file() and (out.parent / "model.onnx.manifest.json").is_file()
    report = json.loads((tmp_path / "build.json").read_text())
    assert report["schema"].startswith("infer-compile.build/")
    assert report["target"]["name"] == "onnxruntime"
    assert report["nodes"]["after"] < report["nodes"]["before"]


def test_default_output_goes_beside_the_source(tiny_cnn_onnx: Path) -> None:
    result = invoke(tiny_cnn_onnx, "--target", "onnxruntime")
    assert result.exit_code == 0, result.output
    assert (tiny_cnn_onnx.parent / "tiny_cnn.onnxruntime.onnx").is_file()


def test_auto_target_says_which_and_why(tiny_cnn_onnx: Path, tmp_path: Path) -> None:
    result = invoke(tiny_cnn_onnx, "-o", tmp_path / "m.onnx")
    assert result.exit_code == 0, result.output
    assert "auto: best available here" in result.stdout
    if not get_target("trt").availability().available:  # TensorRT ranks first where it can build
        assert "passed over trt" in result.stdout


def test_missing_file(tmp_path: Path) -> None:
    assert_user_error(invoke(tmp_path / "nope.onnx"), ExitCode.USER_ERROR, "nope.onnx", "no such file")


def test_corrupt_model(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 10)
    result = invoke(bad, "-o", tmp_path / "out.onnx")
    assert_user_error(result, ExitCode.USER_ERROR, "bad.onnx")
    assert not (tmp_path / "out.onnx").exists()


def test_unknown_target(tiny_cnn_onnx: Path) -> None:
    assert_user_error(invoke(tiny_cnn_onnx, "--target", "tpu"), ExitCode.USER_ERROR, "unknown target 'tpu'")


def test_conflicting_precisions(tiny_cnn_onnx: Path) -> None:
    assert_user_error(invoke(tiny_cnn_onnx, "--fp16", "--int8"), ExitCode.USER_ERROR, "--fp16 and --int8")


@pytest.mark.parametrize("value", ["image", "image:1xax3", ":1x3", "image:0x3x32x32"])
def test_bad_input_shape(tiny_cnn_onnx: Path, value: str) -> None:
    assert_user_error(invoke(tiny_cnn_onnx, "--input-shape", value), ExitCode.USER_ERROR, "--input-shape")


def test_input_shape_for_unknown_input(tiny_cnn_onnx: Path) -> None:
    assert_user_error(invoke(tiny_cnn_onnx, "--input-shape", "pixels:1x3x32x32"), ExitCode.USER_ERROR,
                      "pixels", "image")


def test_unknown_skip_pass(tiny_cnn_onnx: Path) -> None:
    assert_user_error(invoke(tiny_cnn_onnx, "--skip-pass", "warp-drive"), ExitCode.USER_ERROR, "warp-drive")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = invoke(tmp_path / "nope.onnx", "--debug")
    assert result.exit_code == ExitCode.USER_ERROR
    assert "Traceback" in result.stderr


def test_usage_error_exit_code(tiny_cnn_onnx: Path) -> None:
    assert invoke(tiny_cnn_onnx, "--no-such-flag").exit_code == ExitCode.USAGE


def test_targets_command_lists_availability() -> None:
    result = invoke("targets")
    assert result.exit_code == 0
    assert "onnxruntime" in result.stdout and "yes" in result.stdout


def test_targets_command_shows_install_hints_verbatim() -> None:
    # Square brackets in `pip install 'infer-compile[openvino]'` are not console markup.
    proc = run_cli_without("openvino", ["targets"])
    assert proc.returncode == 0, proc.stderr
    assert "infer-compile[openvino]" in proc.stdout


def test_passes_command_lists_the_pipeline() -> None:
    result = invoke("passes")
    assert result.exit_code == 0
    for name in ("shape-inference", "constant-folding", "identity-elimination", "dead-node-elimination"):
        assert name in result.stdout


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0 and "infer-compile" in result.stdout


@pytest.mark.parametrize("flags", [["--trt-workspace", "512"], ["--keep-nchw"], ["--ov-export-blob"]])
def test_another_targets_options_are_refused_not_ignored(tiny_cnn_onnx: Path, tmp_path: Path, flags: list[str]) -> None:
    result = invoke(tiny_cnn_onnx, "-t", "onnxruntime", "-o", tmp_path / "m.onnx", *flags)
    assert_user_error(result, ExitCode.USER_ERROR, "target 'onnxruntime' does not take")
    assert list(tmp_path.iterdir()) == []


def test_help_shows_defaults_written_in_brackets() -> None:
    result = runner.invoke(app, ["compile", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "[default: minmax]" in result.stdout
