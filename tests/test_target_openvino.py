"""The OpenVINO target: IR at fp32/fp16/int8 runs and matches onnxruntime fp32; INT8 runs INT8 kernels;
compiled blob; the clear error when openvino is not installed."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from typer.testing import CliRunner

from infer_compile.build import BuildOptions, compile_model
from infer_compile.calibration import CalibrationSettings
from infer_compile.cli import app
from infer_compile.errors import ExitCode, UnsupportedError
from infer_compile.ir import Model
from infer_compile.numerics import TOLERANCES, compare_outputs, random_inputs, run_onnx, within
from infer_compile.targets import get_target, load_artifact
from infer_compile.targets.openvino import inference_precisions
from tests.hidden_imports import run_cli_without

pytest.importorskip("openvino", reason="the OpenVINO target needs the [openvino] extra")


@pytest.fixture(scope="module")
def artifacts(tiny_cnn_onnx: Path, tiny_cnn_calib: CalibrationSettings,
              tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("ov-out")
    return {p: compile_model(tiny_cnn_onnx, BuildOptions(target="openvino", precision=p, output=out / f"{p}.xml",
                                                  calibration=tiny_cnn_calib if p == "int8" else None)).artifact
            for p in ("fp32", "fp16", "int8")}


def _manifest(artifact: Path) -> dict:
    return json.loads(artifact.with_name(artifact.name + ".manifest.json").read_text())


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_ir_matches_onnxruntime_fp32(precision: str, tiny_cnn_onnx: Path, artifacts: dict[str, Path]) -> None:
    reference = Model.from_proto(onnx.load_model(str(tiny_cnn_onnx)))
    feeds = random_inputs(reference.inputs, seed=11, dims={"batch": 4})
    expected = run_onnx(reference, feeds)
    got = load_artifact(artifacts[precision]).run(feeds)
    comparisons = compare_outputs(expected, got)
    assert within(expected, comparisons, TOLERANCES[precision]), comparisons
    assert artifacts[precision].with_suffix(".bin").is_file()
    # Loaded at the precision the manifest intends (f32 for fp32: no silent bf16).
    import openvino as ov

    caps = set(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    assert _manifest(artifacts[precision])["inference_precision"] == inference_precisions(precision, caps)[0]


def test_fp32_runs_at_f32_not_the_cpu_default(artifacts: dict[str, Path]) -> None:
    runner = load_artifact(artifacts["fp32"])
    assert str(runner.compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"


def test_fp16_stores_half_weights(artifacts: dict[str, Path]) -> None:
    fp32, fp16 = (artifacts[p].with_suffix(".bin").stat().st_size for p in ("fp32", "fp16"))
    assert fp16 < 0.6 * fp32


def test_int8_runs_int8_kernels(artifacts: dict[str, Path]) -> None:
    kernels = _manifest(artifacts["int8"])["kernels"]
    for layer in ("Convolution", "FullyConnected"):
        assert set(kernels[layer]) <= {"u8", "i8"}, kernels


def test_int8_without_qdq_graph_is_refused(tiny_cnn_onnx: Path, tiny_cnn_calib: CalibrationSettings,
                                           tmp_path: Path) -> None:
    options = BuildOptions(target="openvino", precision="int8", output=tmp_path / "m.xml",
                           calibration=tiny_cnn_calib, skip_passes=["quantize-int8"])
    with pytest.raises(UnsupportedError, match="needs a quantized"):
        compile_model(tiny_cnn_onnx, options)
    assert list(tmp_path.iterdir()) == []


def test_cli_exports_compiled_blob(tiny_cnn_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.xml"
    result = CliRunner().invoke(app, [str(tiny_cnn_onnx), "-t", "ov", "-o", str(out), "--ov-export-blob",
                                      "--no-tune"])
    assert result.exit_code == 0, result.output
    blob = _manifest(out)["compiled_blob"]
    assert blob["device"] == "CPU" and (tmp_path / blob["file"]).stat().st_size > 0
    # The blob holds the compiled weights: loading it must not need the IR's weights any more.
    weights = out.with_suffix(".bin")
    weights.write_bytes(bytes(weights.stat().st_size))
    reference = Model.from_proto(onnx.load_model(str(tiny_cnn_onnx)))
    feeds = random_inputs(reference.inputs, seed=3, dims={"batch": 1})
    expected = run_onnx(reference, feeds)
    assert within(expected, compare_outputs(expected, load_artifact(out).run(feeds)), TOLERANCES["fp32"])


def test_unavailable_without_openvino(tiny_cnn_onnx: Path, tmp_path: Path) -> None:
    proc = run_cli_without("openvino", [tiny_cnn_onnx, "-t", "openvino", "-o", tmp_path / "m.xml", "--no-cache"])
    assert proc.returncode == ExitCode.UNAVAILABLE, proc.stderr
    assert "openvino is not installed" in proc.stderr and "pip install 'infer-compile[openvino]'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_available_here_names_the_cpu() -> None:
    status = get_target("openvino").availability()
    assert status.available and "CPU" in status.detail


def test_inference_precisions_follow_cpu_capabilities() -> None:
    assert inference_precisions("fp32", {"FP32", "BF16", "FP16"}) == ["f32"]
    assert inference_precisions("fp16", {"FP32", "BF16"}) == ["bf16", "f32"]
    assert inference_precisions("fp16", {"FP32", "BF16", "FP16"}) == ["f16", "f32"]
    assert inference_precisions("fp16", {"FP32"}) == ["f32"]
    assert inference_precisions("int8", {"FP32", "INT8", "BF16", "FP16"}) == ["bf16", "f32"]
    assert all(inference_precisions(p, set()) == ["f32"] for p in ("fp32", "fp16", "int8"))
