"""`--int8` / `--fp16` on the command line: a real INT8 build with its report, and one clear line per bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from infer_compile.app.cli import app
from infer_compile.core.errors import ExitCode
from tests.artifact_helpers import assert_user_error

runner = CliRunner()


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("calib-data")
    rng = np.random.default_rng(0)
    for i in range(20):
        np.save(folder / f"{i:03d}.npy", rng.standard_normal((1, 3, 32, 32)).astype(np.float32))
    return folder


def compile_(model: Path, out: Path, *args: str):
    return runner.invoke(app, [str(model), "--target", "onnxruntime", "-o", str(out), "--no-cache", "--no-tune",
                               *map(str, args)])


def test_int8_build_reports_precision_calibration_and_accuracy(tiny_cnn_onnx: Path, calib_dir: Path,
                                                               tmp_path: Path) -> None:
    out, report = tmp_path / "m.onnx", tmp_path / "build.json"
    result = compile_(tiny_cnn_onnx, out, "--int8", "--calib", calib_dir, "--calib-method", "percentile",
                      "--report", report)
    assert result.exit_code == 0, result.output
    assert "INT8 / 0 FP16 /" in result.stdout and "percentile calibration on 20 samples (4 held out)" in result.stdout
    record = json.loads(report.read_text())["manifest"]["quantization"]
    assert record["method"] == "percentile" and record["samples"] == 20 and record["nodes"]["int8"] >= 3
    assert record["accuracy"]["cosine"] >= 0.99
    assert json.loads(out.with_name("m.onnx.manifest.json").read_text())["quantization"] == record
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(out)).graph.node)


def test_unreachable_budget_exits_3_with_the_best_figure(tiny_cnn_onnx: Path, calib_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    result = compile_(tiny_cnn_onnx, out, "--int8", "--calib", calib_dir, "--accuracy-budget", "max-abs<=0")
    assert_user_error(result, "accuracy budget max-abs<=0 not met with up to", code=ExitCode.ACCURACY)
    assert "fp32: best cosine" in result.output
    assert not out.exists()


def test_synthetic_calibration_warns(tiny_cnn_onnx: Path, tmp_path: Path) -> None:
    result = compile_(tiny_cnn_onnx, tmp_path / "m.onnx", "--int8", "--calib", "synthetic", "--calib-samples", "4")
    assert result.exit_code == 0, result.output
    assert "SYNTHETIC" in result.stderr


@pytest.fixture
def wrong_shape_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "wrong"
    folder.mkdir()
    np.save(folder / "0.npy", np.zeros((1, 3, 16, 16), np.float32))
    return folder


@pytest.mark.parametrize(("args", "fragments"), [
    (["--int8"], ["--int8 needs calibration data", "--calib synthetic"]),
    (["--int8", "--calib", "no/such/dir"], ["--calib no/such/dir: no such folder"]),
    (["--int8", "--calib", "WRONG"], ["0.npy (sample 0): input 'image' has shape [1, 3, 16, 16]", "batchx3x32x32"]),
    (["--int8", "--calib", "synthetic", "--calib-method", "kl"], ["--calib-method: 'kl' is not one of minmax,"]),
    (["--int8", "--calib-method", "mse"], ["--calib-method needs --calib"]),
    (["--int8", "--calib", "synthetic", "--accuracy-budget", "cosine>>1"], ["accuracy budget 'cosine>>1'"]),
    (["--exclude-nodes", "conv1"], ["--exclude-nodes only applies to --int8 builds"]),
    (["--int8", "--calib", "synthetic", "--exclude-nodes", "convX"], ["no node named convX"]),
    (["--int8", "--calib", "synthetic", "--calib-preprocess", "crop"], ["--calib-preprocess 'crop' is not valid"]),
    (["--int8", "--calib", "synthetic", "--calib-samples", "0"], ["--calib-samples 0 must be at least 1"]),
    (["--int8", "--calib-samples", "0"], ["--calib-samples needs --calib"]),
])
def test_bad_calibration_input(tiny_cnn_onnx: Path, wrong_shape_dir: Path, tmp_path: Path, args: list[str],
                               fragments: list[str]) -> None:
    args = [str(wrong_shape_dir) if a == "WRONG" else a for a in args]
    out = tmp_path / "m.onnx"
    assert_user_error(compile_(tiny_cnn_onnx, out, *args), *fragments)
    assert not out.exists()


def test_nan_calibration_sample_is_refused_before_building(tiny_cnn_onnx: Path, calib_dir: Path,
                                                           tmp_path: Path) -> None:
    folder = tmp_path / "calib"
    folder.mkdir()
    for source in sorted(calib_dir.iterdir()):
        (folder / source.name).write_bytes(source.read_bytes())
    poisoned = np.load(folder / "007.npy")
    poisoned[0, 0, 0, 0] = np.nan
    np.save(folder / "007.npy", poisoned)
    out = tmp_path / "m.onnx"
    result = compile_(tiny_cnn_onnx, out, "--int8", "--calib", folder)
    assert_user_error(result, "007.npy (sample 7): input 'image' has 1 NaN/Inf value(s)")
    assert not out.exists()


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Sixteen real decoded images (gradients with noise, 48x40 PNG) for an image-folder calibration."""
    image = pytest.importorskip("PIL.Image")
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(16):
        pixels = np.clip(np.linspace(0, 255, 48 * 40 * 3).reshape(40, 48, 3) + rng.normal(0, 20, (40, 48, 3)), 0, 255)
        image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i:02d}.png")
    return folder


_PREPROCESS = ["resize=36", "crop=32", "mean=0.485,0.456,0.406", "std=0.229/0.224/0.225"]


@pytest.mark.parametrize("spelling", [
    ["--calib-preprocess", *_PREPROCESS],  # unquoted, as the README shows it
    ["--calib-preprocess", " ".join(_PREPROCESS)],  # one quoted spec
    [arg for item in _PREPROCESS for arg in ("--calib-preprocess", item)],  # repeated flags
])
def test_calib_preprocess_spellings_and_the_record_of_what_was_used(tiny_cnn_onnx: Path, image_dir: Path,
                                                                    tmp_path: Path, spelling: list[str]) -> None:
    out = tmp_path / "m.onnx"
    result = compile_(tiny_cnn_onnx, out, "--int8", "--calib", image_dir, *spelling, "--report", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    used = {"resize": [36, 36], "crop": [32, 32], "scale": 1 / 255, "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225], "channels": "rgb", "layout": "nchw", "dtype": "float32"}  # defaults too
    manifest = json.loads(out.with_name("m.onnx.manifest.json").read_text())
    assert manifest["quantization"]["preprocess"] == used
    assert json.loads((tmp_path / "r.json").read_text())["calibration"]["preprocess"] == used


def test_calib_preprocess_words_after_it_are_not_taken_for_other_arguments(tiny_cnn_onnx: Path, image_dir: Path,
                                                                           tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    result = compile_(tiny_cnn_onnx, out, "--int8", "--calib", image_dir, "--calib-preprocess", "crop=32",
                      "extra=1")
    assert result.exit_code == ExitCode.USAGE and "extra=1" in result.output
