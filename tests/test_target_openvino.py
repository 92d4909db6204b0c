"""The OpenVINO target: IR at fp32/fp16/int8 runs and matches onnxruntime fp32; INT8 runs INT8 kernels;
compiled blob; the clear error when openvino is not installed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from infer_compile.app.build import BuildOptions, compile_model
from infer_compile.app.cli import app
from infer_compile.app.verification import for_runner
from infer_compile.calibration import CalibrationSettings
from infer_compile.core.errors import BuildWarning, ExitCode, UnsupportedError, UserInputError
from infer_compile.core.ir import Model
from infer_compile.core.numerics import TOLERANCES, compare_outputs, random_inputs, run_onnx, within
from infer_compile.targets import get_target, load_artifact
from infer_compile.targets.openvino import CAPABILITIES_ENV, cpu_capabilities, inference_precisions
from tests.hidden_imports import run_cli_without

pytest.importorskip("openvino", reason="the OpenVINO target needs the [openvino] extra")


@pytest.fixture(scope="module")
def artifacts(tiny_cnn_onnx: Path, tiny_cnn_calib: CalibrationSettings,
              tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("ov-out")
    return {p: compile_model(tiny_cnn_onnx, BuildOptions(target="openvino", precision=p, output=out / f"{p}.xml",
                                                  calibration=tiny_cnn_calib if p == "int8" else None)).artifact
            for p in ("fp32", "bf16", "fp16", "int8")}


def _manifest(artifact: Path) -> dict:
    return json.loads(artifact.with_name(artifact.name + ".manifest.json").read_text())


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16", "int8"])
def test_ir_matches_onnxruntime_fp32(precision: str, tiny_cnn_onnx: Path, artifacts: dict[str, Path]) -> None:
    reference = Model.from_proto(onnx.load_model(str(tiny_cnn_onnx)))
    feeds = random_inputs(reference.inputs, seed=11, dims={"batch": 4})
    expected = run_onnx(reference, feeds)
    runner = load_artifact(artifacts[precision])
    got = runner.run(for_runner(runner, feeds))  # an fp16 build takes float16 inputs
    comparisons = compare_outputs(expected, got)
    assert within(comparisons, TOLERANCES[precision]), comparisons
    assert artifacts[precision].with_suffix(".bin").is_file()
    # Loaded at the precision the manifest intends (f32 for fp32: no silent bf16).
    assert _manifest(artifacts[precision])["inference_precision"] == inference_precisions(precision,
                                                                                          cpu_capabilities())[0]


# The compute precision is decided from the CPU's capabilities; forcing them runs both sides of every decision on
# any CPU (this Xeon has BF16/FP16, an AMD EPYC CI runner has neither), with the same assertions.
CPUS = {"no bf16/f16 (e.g. AMD EPYC)": "FP32,INT8", "bf16 (AVX512_BF16/AMX)": "FP32,INT8,BF16",
        "bf16 and f16 (AMX-FP16)": "FP32,INT8,BF16,FP16"}


@pytest.mark.parametrize("cpu", CPUS)
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16", "int8"])
def test_precision_decision_follows_forced_cpu_capabilities(cpu: str, precision: str, tiny_cnn_onnx: Path,
                                                            tiny_cnn_calib: CalibrationSettings, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CAPABILITIES_ENV, CPUS[cpu])
    caps = set(CPUS[cpu].split(","))
    expected = {"fp32": "f32", "fp16": "f16" if "FP16" in caps else "bf16" if "BF16" in caps else "f32",
                "int8": "bf16" if "BF16" in caps else "f32", "bf16": "bf16" if "BF16" in caps else "f32"}[precision]
    result = compile_model(tiny_cnn_onnx, BuildOptions(
        target="openvino", precision=precision, output=tmp_path / "m.xml", target_options={"export_blob": True},
        calibration=tiny_cnn_calib if precision == "int8" else None))
    assert result.manifest.target_fields["inference_precision"] == expected
    runner = load_artifact(result.artifact)
    if expected == "f32":  # every CPU computes f32 when asked: the runner must have asked
        assert str(runner.compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"
    reference = Model.from_proto(onnx.load_model(str(tiny_cnn_onnx)))
    feeds = random_inputs(reference.inputs, seed=5, dims={"batch": 2})
    expected_out = run_onnx(reference, feeds)
    got = runner.run(for_runner(runner, feeds))
    assert within(compare_outputs(expected_out, got), TOLERANCES[precision])


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


def test_graph_openvino_cannot_convert_is_one_line_refusal(tmp_path: Path) -> None:
    # ONNX's own Col2Im case: onnxruntime runs it, OpenVINO's converter fails on the runtime image shape.
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Col2Im", ["input", "image_shape", "block_shape"], ["output"], pads=[0, 1, 0, 1])],
        "col2im", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 5, 15]),
                   helper.make_tensor_value_info("image_shape", TensorProto.INT64, [2]),
                   helper.make_tensor_value_info("block_shape", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, 5, 5])])
    source = tmp_path / "col2im.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), source)
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, input=np.arange(75, dtype=np.float32).reshape(1, 5, 15),
             image_shape=np.array([5, 5]), block_shape=np.array([1, 5]))
    out = tmp_path / "out" / "m.xml"
    result = CliRunner().invoke(app, [str(source), "-t", "openvino", "-o", str(out), "--inputs", str(inputs),
                                      "--no-tune", "--no-cache"])
    assert result.exit_code == ExitCode.USER_ERROR, result.output
    assert "OpenVINO cannot convert this model" in result.output and "Traceback" not in result.output
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


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
    runner = load_artifact(out)
    # The imported blob runs at the recorded precision (f32), not the CPU's default (bf16 where it has it).
    assert str(runner.compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"
    assert within(compare_outputs(expected, runner.run(feeds)), TOLERANCES["fp32"])


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
    assert inference_precisions("bf16", {"FP32", "BF16", "FP16"}) == ["bf16", "f32"]
    assert inference_precisions("bf16", {"FP32", "FP16"}) == ["f32"]
    assert all(inference_precisions(p, set()) == ["f32"] for p in ("fp32", "bf16", "fp16", "int8"))


def test_bf16_on_a_cpu_without_it_says_the_artifact_computes_f32(tiny_cnn_onnx: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CAPABILITIES_ENV, "FP32,INT8")
    with pytest.warns(BuildWarning, match=r"no bf16 support .* computes in f32 here"):
        result = compile_model(tiny_cnn_onnx, BuildOptions(target="openvino", precision="bf16",
                                                           output=tmp_path / "m.xml"))
    assert result.manifest.precision == "bf16" and result.manifest.target_fields["inference_precision"] == "f32"


def test_only_openvino_takes_bf16(tiny_cnn_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="target 'onnxruntime' does not support bf16"):
        compile_model(tiny_cnn_onnx, BuildOptions(target="onnxruntime", precision="bf16", output=tmp_path / "m.onnx"))


def _residual_block() -> onnx.ModelProto:
    """ResNet's identity block: the ReLU output r0 feeds both the next conv and the residual Add, then max pooling."""
    from onnx import helper

    from tests.builders import make_model, tensor

    rng = np.random.default_rng(0)
    n = helper.make_node
    nodes = [n("Conv", ["x", "w0", "b0"], ["c0"], name="stem", pads=[1, 1, 1, 1]),
             n("Relu", ["c0"], ["r0"], name="relu0"),
             n("Conv", ["r0", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             n("Relu", ["c1"], ["r1"], name="relu1"),
             n("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
             n("Add", ["c2", "r0"], ["s"], name="residual"), n("Relu", ["s"], ["r2"], name="relu2"),
             n("MaxPool", ["r2"], ["p"], name="maxpool", kernel_shape=[2, 2], strides=[2, 2]),
             n("Conv", ["p", "w3", "b3"], ["y"], name="head", pads=[1, 1, 1, 1])]
    weights = {f"w{i}": rng.normal(0, (2 / (9 * cin)) ** 0.5, (16, cin, 3, 3)).astype(np.float32)
               for i, cin in enumerate((8, 16, 16, 16))}
    biases = {f"b{i}": rng.normal(0, 0.1, 16).astype(np.float32) for i in range(4)}
    return make_model(nodes, [tensor("x", [1, 8, 16, 16])], [tensor("y", [1, 16, 8, 8])], {**weights, **biases})


def test_int8_residual_add_and_pooling_run_in_int8(tmp_path: Path) -> None:
    """OpenVINO's placement (both Add inputs quantized, pooling input quantized, u8 after ReLU): the CPU plugin
    fuses the Add into the u8 Convolution and pools in u8, as it does for NNCF's graphs; with one float Add
    input it runs the Add as a separate float eltwise."""
    proto = _residual_block()
    source, calib = tmp_path / "block.onnx", tmp_path / "calib"
    onnx.save_model(proto, str(source))
    calib.mkdir()
    reference = Model.from_proto(proto)
    for seed in range(16):
        np.save(calib / f"{seed:03d}.npy", random_inputs(reference.inputs, seed=seed)["x"])
    artifact = compile_model(source, BuildOptions(target="openvino", precision="int8", output=tmp_path / "m.xml",
                                                  calibration=CalibrationSettings(calib, method="minmax"))).artifact
    runner = load_artifact(artifact)
    layers = [op.get_rt_info() for op in runner.compiled.get_runtime_model().get_ordered_ops()]
    fused_with = {name: info["layerType"].astype(str) + ":" + info["runtimePrecision"].astype(str)
                  for info in layers for name in info["originalLayersNames"].astype(str).split(",")}
    assert fused_with["residual"] == "Convolution:u8" and fused_with["maxpool"] == "Pooling:u8", fused_with
    feeds = random_inputs(reference.inputs, seed=42)
    expected = run_onnx(reference, feeds)
    assert within(compare_outputs(expected, runner.run(feeds)), TOLERANCES["int8"])
