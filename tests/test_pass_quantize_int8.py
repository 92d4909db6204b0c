"""INT8 Q/DQ insertion: placement, per-channel weights, and accuracy of the real int8 graph in onnxruntime."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from infer_compile.calibration import collect
from infer_compile.core.capabilities import Capability
from infer_compile.core.errors import UnsupportedError, UserInputError
from infer_compile.core.ir import Model
from infer_compile.core.numerics import compare_outputs, run_onnx, summarize
from infer_compile.passes import PassContext, PassResult
from infer_compile.passes.quantize_int8 import QuantizeInt8
from infer_compile.targets import get_target
from tests.builders import inverted_residual, make_model, nested_if, tensor, tiny_cnn
from tests.passes_helpers import assert_nested_if_preserved
from tests.precision_models import calibration, cleaned, held_out, mixed_types, small_transformer


def quantize(proto: onnx.ModelProto, target: str = "trt", caps: frozenset[Capability] | None = None,
             **options) -> tuple[Model, PassResult]:
    """Quantize as for ``target`` (its declared capabilities, unless ``caps`` overrides them)."""
    model = cleaned(proto)
    caps = get_target(target).capabilities if caps is None else caps
    ctx = PassContext(target=target, capabilities=caps, calibration=options.pop("data", None) or calibration(proto),
                      options=options)
    result = QuantizeInt8().run(model, ctx)
    onnx.checker.check_model(model.to_proto(), full_check=True)
    return model, result


def accuracy(proto: onnx.ModelProto, quantized: Model) -> dict:
    """The quantized graph as ORT runs it in the artifact (optimized: real int8 kernels) vs fp32."""
    feeds = held_out(proto)
    return summarize(compare_outputs(run_onnx(Model.from_proto(proto), feeds), run_onnx(quantized, feeds,
                                                                                          optimize=True)))


def by_op(model: Model, op: str) -> list:
    return [n for n in model.graph.nodes if n.op == op]


def dq_input(node) -> object | None:
    producer = node.inputs[0].inputs
    return producer[0] if producer and producer[0].op == "DequantizeLinear" else None


@pytest.mark.parametrize("target", ["trt", "onnxruntime"])
def test_small_cnn_int8_meets_its_bound(target: str) -> None:
    proto = tiny_cnn()
    model, result = quantize(proto, target)
    figures = accuracy(proto, model)
    assert figures["cosine"] >= 0.998 and figures["top1_agreement"] >= 0.9, figures
    assert result.manifest["quantization"]["nodes"]["int8"] >= 3
    # Weights: int8 initializers, one scale per output channel, zero-point 0.
    for conv in by_op(model, "Conv"):
        dq = conv.inputs[1].inputs[0]
        q_weight, scale, zero = dq.inputs
        assert dq.op == "DequantizeLinear" and dq.attrs["axis"] == 0
        assert q_weight.values.dtype == np.int8 and np.abs(q_weight.values).max() == 127
        assert scale.values.shape == (conv.inputs[1].shape[0],) and not zero.values.any()
        assert dq_input(conv) is not None  # activation input quantized per tensor
    output_quantized = any(c.op == "QuantizeLinear" for conv in by_op(model, "Conv") for c in conv.outputs[0].outputs)
    assert output_quantized == (target == "onnxruntime")  # ORT needs a quantized Conv output for QLinearConv


def test_small_transformer_int8_meets_its_bound() -> None:
    proto = small_transformer()
    model, _ = quantize(proto, "trt", data=calibration(proto, method="percentile"))
    figures = accuracy(proto, model)
    assert figures["cosine"] >= 0.995, figures
    matmuls = {n.name: n for n in by_op(model, "MatMul")}
    assert all(dq_input(n) is not None for n in matmuls.values())  # incl. attention's Q.K^T and attn.V
    assert matmuls["qk"].inputs[1].inputs[0].op == "DequantizeLinear"
    assert matmuls["q_proj"].inputs[1].inputs[0].attrs["axis"] == 1  # MatMul weights [K, N]: per column


def test_residual_add_input_is_quantized() -> None:
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c", "x"], ["y"], name="residual")]
    proto = make_model(nodes, [tensor("x", ["batch", 4, 6, 6])], [tensor("y", ["batch", 4, 6, 6])],
                       {"w": rng.standard_normal((4, 4, 3, 3)).astype(np.float32) * 0.2})
    model, _ = quantize(proto)
    (add,) = by_op(model, "Add")
    assert [t.inputs[0].op if t.inputs else None for t in add.inputs] == ["Conv", "DequantizeLinear"]
    assert accuracy(proto, model)["cosine"] >= 0.999
    ort_style, _ = quantize(proto, "onnxruntime")  # y is a graph output: it stays float
    (add,) = by_op(ort_style, "Add")
    assert all(t.inputs[0].op == "DequantizeLinear" for t in add.inputs) and add.outputs[0].name == "y"


def test_lpt_placement_quantizes_add_and_pool_inputs_and_uses_uint8_after_relu() -> None:
    rng = np.random.default_rng(0)
    n = helper.make_node
    nodes = [n("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]), n("Relu", ["c1"], ["r1"], name="relu1"),
             n("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
             n("Add", ["c2", "r1"], ["s"], name="residual"), n("Relu", ["s"], ["r2"], name="relu2"),
             n("GlobalAveragePool", ["r2"], ["y"], name="pool")]
    proto = make_model(nodes, [tensor("x", ["batch", 4, 8, 8])], [tensor("y", ["batch", 8, 1, 1])],
                       {"w1": rng.standard_normal((8, 4, 3, 3)).astype(np.float32) * 0.3,
                        "w2": rng.standard_normal((8, 8, 3, 3)).astype(np.float32) * 0.2})
    model, _ = quantize(proto, caps=frozenset({Capability.QDQ_PLACEMENT_LPT}))
    (add,), (pool,) = by_op(model, "Add"), by_op(model, "GlobalAveragePool")
    assert all(t.inputs[0].op == "DequantizeLinear" for t in [*add.inputs, pool.inputs[0]])
    # ReLU outputs are non-negative: uint8 with the ReLU kept (OpenVINO fuses it); the Conv output stays signed.
    signs = {t.name: t.inputs[0].inputs[2].values.dtype for t in [*add.inputs, pool.inputs[0]]}
    assert signs == {"c2_dequantized": np.int8, "r1_dequantized": np.uint8, "r2_dequantized": np.uint8}, signs
    assert len(by_op(model, "Relu")) == 2
    assert accuracy(proto, model)["cosine"] >= 0.999


def test_exclusions_keep_nodes_in_float() -> None:
    proto = tiny_cnn()
    model, result = quantize(proto, exclude_nodes=["conv2"], exclude_op_types=["Gemm"])
    nodes = {n.name: n for n in model.graph.nodes}
    assert nodes["conv2"].inputs[1].name == "w2" and dq_input(nodes["conv2"]) is None
    assert dq_input(nodes["fc"]) is None
    assert nodes["conv1"].inputs[1].inputs[0].op == "DequantizeLinear"
    assert result.manifest["quantization"]["excluded_nodes"] == ["conv2", "fc"]


def test_unknown_excluded_node_is_a_user_error() -> None:
    with pytest.raises(UserInputError, match="no node named convX"):
        quantize(tiny_cnn(), exclude_nodes=["convX"])


def test_calibration_cache_is_reused_only_for_the_same_data(tmp_path: Path) -> None:
    proto = tiny_cnn()
    cache = tmp_path / "ranges.json"

    def with_cache(seed: int):
        data = calibration(proto, seed=seed)
        data.settings = dataclasses.replace(data.settings, cache=cache)
        return quantize(proto, data=data)

    first, result1 = with_cache(0)
    again, result2 = with_cache(0)
    other, result3 = with_cache(500)
    assert [r.manifest["quantization"]["ranges_from_cache"] for r in (result1, result2, result3)] == [
        False, True, False]
    scales = [[c.values.item() for c in m.constants() if c.name == "image_scale"] for m in (first, again, other)]
    assert scales[0] == scales[1] != scales[2]


def test_a_rerun_on_the_same_graph_does_not_calibrate_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """The build reruns the pipeline when its final check fails (to name the pass to blame): the ranges
    measured on the same graph with the same data are reused, a changed graph is measured again."""
    runs = []
    measure = collect.collect_ranges
    monkeypatch.setattr(collect, "collect_ranges", lambda *args, **kw: runs.append(1) or measure(*args, **kw))
    proto = tiny_cnn()
    data = calibration(proto)
    first, _ = quantize(proto, data=data)
    again, _ = quantize(proto, data=data)
    assert len(runs) == 1
    assert [c.values.tolist() for c in first.constants()] == [c.values.tolist() for c in again.constants()]
    quantize(tiny_cnn(seed=1), data=data)
    assert len(runs) == 2


def test_already_quantized_or_old_opset_models() -> None:
    model, _ = quantize(tiny_cnn())
    ctx = PassContext(target="trt", calibration=calibration(tiny_cnn()))
    assert QuantizeInt8().run(model, ctx).counts == {"already_quantized": 1}
    old = Model.from_proto(tiny_cnn())
    old.graph.opset = 12
    with pytest.raises(UnsupportedError, match="opset >= 13"):
        QuantizeInt8().run(old, ctx)


def ort_optimized_ops(model: Model, folder: Path) -> list[str]:
    """The op types of ``model`` as ONNX Runtime's CPU provider runs it (after its graph optimizations)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(folder / "optimized.onnx")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    ort.InferenceSession(model.to_proto().SerializeToString(), options, providers=["CPUExecutionProvider"])
    return [node.op_type for node in onnx.load(str(folder / "optimized.onnx")).graph.node]


def test_onnxruntime_style_absorbs_relus_and_gets_real_int8_kernels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = helper.make_node
    nodes = [n("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]), n("Relu", ["c1"], ["r1"], name="relu1"),
             n("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]), n("Relu", ["c2"], ["r2"], name="relu2"),
             n("GlobalAveragePool", ["r2"], ["y"], name="pool")]
    proto = make_model(nodes, [tensor("x", ["batch", 4, 8, 8])], [tensor("y", ["batch", 8, 1, 1])],
                       {"w1": rng.standard_normal((8, 4, 3, 3)).astype(np.float32) * 0.3,
                        "w2": rng.standard_normal((8, 8, 3, 3)).astype(np.float32) * 0.2})
    model, _ = quantize(proto, "onnxruntime")
    assert not by_op(model, "Relu")  # clamping at 0 is the unsigned quantizer's job now
    out_q = [c for c in by_op(model, "Conv")[0].outputs[0].outputs if c.op == "QuantizeLinear"]
    assert out_q and out_q[0].inputs[2].values.dtype == np.uint8 and out_q[0].inputs[2].values == 0
    assert accuracy(proto, model)["cosine"] >= 0.999
    ops = ort_optimized_ops(model, tmp_path)
    assert ops.count("QLinearConv") == 2 and "Conv" not in ops, ops


def test_onnxruntime_runs_a_mobilenet_block_on_integer_kernels_throughout(tmp_path: Path) -> None:
    """The linear projection's output and the block input are signed: as uint8 with a zero-point they share the
    unsigned post-ReLU6 activations' type, so ORT fuses every Conv into a QLinearConv and the residual Add into a
    QLinearAdd (signed int8 left the projections and the Add in float, between DequantizeLinears)."""
    proto = inverted_residual()
    model, _ = quantize(proto, "onnxruntime")
    zero_points = {n.inputs[2].values.dtype for n in by_op(model, "QuantizeLinear")}
    assert zero_points == {np.dtype(np.uint8)}, zero_points
    assert accuracy(proto, model)["cosine"] >= 0.999
    ops = ort_optimized_ops(model, tmp_path)
    assert ops.count("QLinearConv") == 4 and ops.count("QLinearAdd") == 1, ops
    assert "Conv" not in ops and "Add" not in ops, ops



def test_onnxruntime_quantizes_skewed_activations_asymmetrically() -> None:
    # Only the sigmoid output is quantized (the Conv output is the graph output): its error alone shows.
    n = helper.make_node
    nodes = [n("Sigmoid", ["x"], ["s"], name="gate"), n("Conv", ["s", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])]
    proto = make_model(nodes, [tensor("x", ["batch", 8, 8, 8])], [tensor("y", ["batch", 8, 8, 8])],
                       {"w": np.random.default_rng(0).standard_normal((8, 8, 3, 3)).astype(np.float32) * 0.2})
    asymmetric, _ = quantize(proto, "onnxruntime")
    symmetric, _ = quantize(proto, caps=get_target("onnxruntime").capabilities
                            - {Capability.QDQ_ASYMMETRIC_ACTIVATIONS})
    # s lies in (0, 1): with a zero-point its 256 codes cover [0, max] instead of [-max, max], twice the resolution.
    scale, zero = dq_input(by_op(asymmetric, "Conv")[0]).inputs[1:]
    assert zero.values.dtype == np.uint8 and zero.values == 0 and 0.9 / 255 < scale.values < 1.0 / 255
    assert dq_input(by_op(symmetric, "Conv")[0]).inputs[2].values == 0
    better, worse = accuracy(proto, asymmetric), accuracy(proto, symmetric)
    assert better["max_abs"] < 0.9 * worse["max_abs"], (better, worse)
    assert 1 - better["cosine"] < 0.8 * (1 - worse["cosine"]), (better, worse)


def test_onnxruntime_runs_matmul_plus_bias_as_qgemm(tmp_path: Path) -> None:
    proto = small_transformer()
    for io in (proto.graph.input[0], proto.graph.output[0]):  # static shapes: ORT fuses MatMul+Add into a Gemm
        io.type.tensor_type.shape.dim[0].dim_value = 4
    # Without integer-matmul-fusion's MatMulIntegerToFloat (which returns float), QGemm is ORT's int8 MatMul.
    caps = get_target("onnxruntime").capabilities - {Capability.MATMUL_INTEGER_TO_FLOAT}
    model, _ = quantize(proto, caps=caps, data=calibration(proto, method="percentile"))
    # ffn1 + bias: its sum is quantized (uint8, the ReLU absorbed), so that Gemm runs as QGemm.
    (bias_q,) = [c for c in {n.name: n for n in model.graph.nodes}["ffn1_bias"].outputs[0].outputs]
    assert bias_q.op == "QuantizeLinear" and bias_q.inputs[2].values.dtype == np.uint8
    assert accuracy(proto, model)["cosine"] >= 0.995
    ops = ort_optimized_ops(model, tmp_path)
    assert "QGemm" in ops and "Gemm" not in ops, " ".join(ops)


def test_matmul_bias_sums_stay_float_where_the_matmul_returns_float() -> None:
    """ONNX Runtime's MatMulIntegerToFloat returns float: quantizing the sum after it would only add error."""
    proto = small_transformer()
    model, _ = quantize(proto, "onnxruntime", data=calibration(proto, method="percentile"))
    (after_bias,) = {n.name: n for n in model.graph.nodes}["ffn1_bias"].outputs[0].outputs
    assert after_bias.op == "Relu"  # read in float; ffn2 quantizes the ReLU's output for itself
    assert accuracy(proto, model)["cosine"] >= 0.999


def test_only_float32_tensors_are_quantized() -> None:
    proto = mixed_types()
    model, result = quantize(proto, "onnxruntime")
    tensors = model.graph.tensors()
    assert tensors["r_bf16"].dtype == onnx.TensorProto.BFLOAT16 and tensors["yd"].dtype == np.float64
    assert result.manifest["quantization"]["nodes"]["int8"] == 1  # the MatMul
    figures = accuracy(proto, model)
    assert figures["cosine"] > 0.99, figures


def test_values_if_bodies_capture_stay_float() -> None:
    proto = onnx.shape_inference.infer_shapes(nested_if(outer=[helper.make_node("MatMul", ["x", "w"], ["pre"])]))
    ctx = PassContext(target="onnxruntime", calibration=calibration(proto))
    model, _ = assert_nested_if_preserved(QuantizeInt8(), proto, ctx, precision="int8")
    assert any(n.op == "QuantizeLinear" for n in model.graph.nodes)


def test_a_model_that_cannot_run_on_the_samples_is_refused_with_the_reason() -> None:
    """Random samples for a shape input: onnxruntime's Reshape fails on them; the user has to give real ones."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("MatMul", ["r", "w"], ["m"]),
             helper.make_node("Reshape", ["m", "shape"], ["y"])]
    inputs = [tensor("x", [4, 8]), tensor("shape", [2], onnx.TensorProto.INT64)]
    proto = make_model(nodes, inputs, [tensor("y", ["a", "b"])], {"w": np.ones((8, 8), np.float32)})
    with pytest.raises(UserInputError, match=r"does not run on the calibration samples .*Reshape"):
        quantize(proto, "onnxruntime")


def test_empty_calibration_samples_do_not_break_the_batching() -> None:
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("MatMul", ["r", "w"], ["y"])]
    proto = make_model(nodes, [tensor("x", ["batch", 8])], [tensor("y", ["batch", 8])],
                       {"w": np.ones((8, 8), np.float32)})
    model, _ = quantize(proto, "onnxruntime", data=calibration(proto, batch=0))
    assert any(n.op == "QuantizeLinear" for n in model.graph.nodes)


@pytest.mark.parametrize("target", ["onnxruntime", "openvino"])
def test_nothing_to_quantize_is_refused_before_calibrating(target: str, tmp_path: Path) -> None:
    # An LSTM alone: no Conv/Gemm/MatMul with constant weights. An "int8" artifact computing in fp32 would
    # misname itself (and the empty set of tensors to measure once crashed calibration with exit 70).
    from typer.testing import CliRunner

    from infer_compile.app.cli import app
    from infer_compile.core.errors import ExitCode

    if target == "openvino":
        pytest.importorskip("openvino")
    rng = np.random.default_rng(0)
    source = tmp_path / "lstm.onnx"
    onnx.save(make_model([helper.make_node("LSTM", ["x", "w", "r"], ["y"], hidden_size=4)],
                         [tensor("x", [5, 1, 3])], [tensor("y", [5, 1, 1, 4])],
                         {"w": rng.normal(size=(1, 16, 3)).astype(np.float32),
                          "r": rng.normal(size=(1, 16, 4)).astype(np.float32)}), source)
    out = tmp_path / "out" / ("m.xml" if target == "openvino" else "m.onnx")
    result = CliRunner().invoke(app, [str(source), "-t", target, "--int8", "--calib", "synthetic", "-o", str(out),
                                      "--no-tune", "--no-cache"])
    assert result.exit_code == ExitCode.USER_ERROR, result.output
    assert "INT8 found nothing to quantize" in result.output and "--bf16 or --fp16" in result.output
    assert not out.exists() and "Traceback" not in result.output
