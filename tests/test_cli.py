"""The compile CLI: success output, and one clear line + exit code for each user error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from infer_compile.app.cli import app
from infer_compile.core.errors import ExitCode
from infer_compile.targets import get_target
from tests.artifact_helpers import assert_user_error, invoke
from tests.hidden_imports import run_cli_without

runner = CliRunner()


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


def test_the_compile_subcommand_spelt_out(tiny_cnn_onnx: Path, tmp_path: Path) -> None:
    result = invoke("compile", tiny_cnn_onnx, "-o", tmp_path / "m.onnx", "--no-cache")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m.onnx").exists()


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
    assert_user_error(invoke(tmp_path / "nope.onnx"), "nope.onnx", "no such file")


def test_corrupt_model(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 10)
    result = invoke(bad, "-o", tmp_path / "out.onnx")
    assert_user_error(result, "bad.onnx")
    assert not (tmp_path / "out.onnx").exists()


def test_unknown_target(tiny_cnn_onnx: Path) -> None:
    assert_user_error(invoke(tiny_cnn_onnx, "--target", "tpu"), "unknown target 'tpu'")


@pytest.mark.parametrize("flags", [("--fp16", "--int8"), ("--bf16", "--fp16")])
def test_conflicting_precisions(tiny_cnn_onnx: Path, flags: tuple[str, str]) -> None:
    assert_user_error(invoke(tiny_cnn_onnx, *flags), "--fp16, --bf16 and --int8 exclude each other")


@pytest.mark.parametrize("value", ["image", "image:1xax3", ":1x3", "image:0x3x32x32"])
def test_bad_input_shape(tiny_cnn_onnx: Path, value: str) -> None:
    assert_user_error(invoke(tiny_cnn_onnx, "--input-shape", value), "--input-shape")


def test_input_shape_for_unknown_input(tiny_cnn_onnx: Path) -> None:
    assert_user_error(invoke(tiny_cnn_onnx, "--input-shape", "pixels:1x3x32x32"),
                      "pixels", "image")


@pytest.mark.parametrize("value", ["image:4x3x32x32", "4x3x32x32"])  # without a name: the inputs in order
def test_input_shape_fixes_the_dims_of_an_onnx_model(tiny_cnn_onnx: Path, tmp_path: Path, value: str) -> None:
    out = tmp_path / "m.onnx"
    result = invoke(tiny_cnn_onnx, "--input-shape", value, "-o", out, "--no-cache")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "m.onnx.manifest.json").read_text())
    assert manifest["inputs"][0]["shape"] == [4, 3, 32, 32]
    assert manifest["outputs"][0]["shape"] == [4, 10]  # shapes downstream follow (inferred again)


def _matmul_with_dynamic_features(path: Path) -> Path:
    """x[batch, n] @ w[16, 4]: n is named (dynamic) in the input, but the weight fixes it at 16."""
    import numpy as np
    import onnx
    from onnx import helper

    from tests.builders import make_model, tensor

    model = make_model([helper.make_node("MatMul", ["x", "w"], ["y"])], [tensor("x", ["batch", "n"])],
                       [tensor("y", ["batch", 4])], {"w": np.ones((16, 4), np.float32)})
    onnx.save_model(model, str(path))
    return path


@pytest.mark.parametrize(("value", "fragments"), [
    ("image:1x3x64x64", ["--input-shape image: axis 2 is 64, but the model fixes it at 32"]),
    ("image:1x3x32", ["--input-shape image: rank 3 given, the model expects rank 4"]),
    ("x:2x8", ["--input-shape x:2x8: the model cannot take these shapes"]),
], ids=["fixed-dim", "rank", "graph-cannot-take-it"])
def test_input_shape_the_model_cannot_take(tiny_cnn_onnx: Path, tmp_path: Path, value: str,
                                           fragments: list[str]) -> None:
    model = _matmul_with_dynamic_features(tmp_path / "mm.onnx") if value.startswith("x:") else tiny_cnn_onnx
    result = invoke(model, "--input-shape", value, "-o", tmp_path / "out.onnx", "--no-cache")
    assert_user_error(result, *fragments)
    assert not (tmp_path / "out.onnx").exists()


def test_shape_range_for_a_dim_no_input_has(tiny_cnn_onnx: Path, tmp_path: Path) -> None:
    result = invoke(tiny_cnn_onnx, "--shape-range", "bacth=1:8:32", "-o", tmp_path / "m.onnx", "--no-cache")
    assert_user_error(result, "shape range for 'bacth': no model input has a dynamic dimension",
                      "image: float32[batchx3x32x32]")


def test_negative_declared_dimension(tmp_path: Path) -> None:
    import onnx

    from tests.builders import tiny_cnn

    model = tiny_cnn()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = -5
    onnx.save_model(model, str(tmp_path / "neg.onnx"))
    result = invoke(tmp_path / "neg.onnx", "-o", tmp_path / "m.onnx", "--no-cache")
    assert_user_error(result, "declares dimension -5 at axis 0", "--input-shape image:")
    pinned = invoke(tmp_path / "neg.onnx", "--input-shape", "image:2x3x32x32", "-o", tmp_path / "m.onnx", "--no-cache")
    assert pinned.exit_code == 0, pinned.output  # what the hint says to do works


def test_unknown_skip_pass(tiny_cnn_onnx: Path) -> None:
    assert_user_error(invoke(tiny_cnn_onnx, "--skip-pass", "warp-drive"), "warp-drive")


def test_explain_lists_matches_and_near_misses(tmp_path: Path) -> None:
    import onnx

    from tests.builders import residual_batchnorms

    onnx.save(residual_batchnorms(), tmp_path / "bn.onnx")
    result = invoke(tmp_path / "bn.onnx", "-o", tmp_path / "m.onnx", "--explain", "batchnorm-folding", "--no-tune",
                    "--report", tmp_path / "build.json")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    start = lines.index("explain batchnorm-folding: matched batchnorm=1")
    assert lines[start + 1] == "  batchnorm missed 1: the Conv output has 2 consumers (e.g. bn2)"
    passes = {p["name"]: p for p in json.loads((tmp_path / "build.json").read_text())["passes"]}
    assert passes["batchnorm-folding"]["misses"] == {
        "batchnorm": {"the Conv output has 2 consumers": {"count": 1, "examples": ["bn2"]}}}


def test_unknown_explain_pass_names_the_closest(tiny_cnn_onnx: Path) -> None:
    result = invoke(tiny_cnn_onnx, "--explain", "batchnorm-foldng")
    assert_user_error(result, "unknown pass 'batchnorm-foldng' for --explain; "
                      "did you mean 'batchnorm-folding'?")
    assert len(result.stderr.splitlines()) == 2  # the error line and its hint


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
    assert_user_error(result, "is a setting of target", "not of 'onnxruntime'")
    assert list(tmp_path.iterdir()) == []


def test_help_shows_defaults_written_in_brackets() -> None:
    result = runner.invoke(app, ["compile", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "[default: minmax]" in result.stdout


@pytest.mark.parametrize("args", [["--help"], ["compile", "--help"], ["targets", "--help"], ["build", "--help"],
                                  ["--version"]])
def test_help_starts_without_numerical_libraries(args: list[str]) -> None:
    """`--help` and the commands' help import none of the heavy libraries (numpy, onnx, graphsurgeon,
    onnxruntime, torch, tensorflow, openvino): the compile command's flags come from option declarations that
    import none of them."""
    import subprocess
    import sys

    heavy = ("numpy", "onnx", "onnx_graphsurgeon", "onnxruntime", "torch", "tensorflow", "openvino")
    script = ("import sys\nfrom infer_compile.app.cli import main\nsys.argv = ['infer-compile', *sys.argv[1:]]\n"
              "try:\n    main()\nexcept SystemExit:\n    pass\n"
              f"print('LOADED', sorted(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=60)
    assert "LOADED []" in done.stderr, done.stderr
    assert done.stdout.strip()


def test_compile_help_lists_every_declared_flag_and_root_help_lists_compile() -> None:
    root = invoke("--help")
    assert root.exit_code == 0 and "compile" in root.stdout and "Compile MODEL into an artifact" in root.stdout
    compile_help = invoke("compile", "--help")
    assert compile_help.exit_code == 0 and "--calib-preprocess" in compile_help.stdout
    assert "--tune-time" in compile_help.stdout
