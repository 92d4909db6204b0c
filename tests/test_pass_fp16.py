"""FP16 conversion: runs in onnxruntime within fp16 tolerance; blocklist, I/O types, overflow fallback, clamping."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from infer_compile.core.ir import Model
from infer_compile.core.numerics import TOLERANCES, compare_outputs, run_onnx, summarize, within
from infer_compile.passes import PassContext, PassResult
from infer_compile.passes.fp16 import Fp16Conversion, to_fp16
from infer_compile.passes.precision_state import node_precisions
from tests.builders import make_model, nested_if, tensor, tiny_cnn
from tests.passes_helpers import assert_nested_if_preserved
from tests.precision_models import calibration, cleaned, held_out, mixed_types, small_transformer


def convert(proto: onnx.ModelProto, data=None, **options) -> tuple[Model, PassResult]:
    model = cleaned(proto)
    ctx = PassContext(calibration=data, options=options)
    result = Fp16Conversion().run(model, ctx)
    onnx.checker.check_model(model.to_proto(), full_check=True)
    return model, result


def figures_vs_fp32(proto: onnx.ModelProto, model: Model, feeds: dict | None = None) -> tuple[dict, bool]:
    """onnxruntime on the fp32 original and the fp16 model (fed the same values in its input dtypes)."""
    feeds = held_out(proto) if feeds is None else feeds
    reference = run_onnx(Model.from_proto(proto), feeds)
    dtypes = {s.name: s.dtype for s in model.inputs}
    got = run_onnx(model, {k: v.astype(dtypes[k]) for k, v in feeds.items()})
    comparisons = compare_outputs(reference, {k: v.astype(np.float32) if v.dtype == np.float16 else v
                                              for k, v in got.items()})
    return summarize(comparisons), within(comparisons, TOLERANCES["fp16"])


@pytest.mark.parametrize("build", [tiny_cnn, small_transformer])
def test_fp16_model_runs_within_fp16_tolerance(build) -> None:
    proto = build()
    model, result = convert(proto, keep_io_types=True)
    figures, ok = figures_vs_fp32(proto, model)
    assert ok, figures
    assert [s.dtype for s in model.inputs + model.outputs] == [np.dtype(np.float32)] * 2
    weights = [c for c in model.constants() if c.values.dtype.kind == "f" and c.values.size > 1]
    assert weights and all(c.values.dtype == np.float16 for c in weights)
    counts = result.manifest["quantization"]["nodes"]
    assert counts["fp16"] > 0 and counts["int8"] == 0


def test_without_keep_io_types_the_graph_takes_half_inputs() -> None:
    model, _ = convert(tiny_cnn())
    assert model.inputs[0].dtype == np.float16 and model.outputs[0].dtype == np.float16
    assert not any(n.op == "Cast" for n in model.graph.nodes)  # nothing left in fp32, so no casts
    assert figures_vs_fp32(tiny_cnn(), model)[1]


def test_blocklist_by_op_type_and_node_name() -> None:
    model, result = convert(tiny_cnn(), keep_io_types=True, fp16_block=["Gemm", "conv2"])
    nodes = {n.name: n for n in model.graph.nodes}
    assert nodes["fc"].outputs[0].dtype == np.float32 and nodes["conv2"].outputs[0].dtype == np.float32
    assert nodes["conv1"].outputs[0].dtype == np.float16
    assert result.manifest["quantization"]["fp16_blocked"] == ["conv2", "fc"]
    assert figures_vs_fp32(tiny_cnn(), model)[1]


def overflowing_model() -> onnx.ModelProto:
    """x * 1e5 (beyond fp16's 65504, and a graph output, so it is stored) then * 1e-5: fine in fp32, inf in fp16."""
    init = {"big": np.array(1e5, np.float32), "small": np.array(1e-5, np.float32),
            "w": np.eye(8, dtype=np.float32)}
    nodes = [helper.make_node("Mul", ["x", "big"], ["up"], name="scale_up"),
             helper.make_node("Mul", ["up", "small"], ["down"], name="scale_down"),
             helper.make_node("MatMul", ["down", "w"], ["y"], name="proj")]
    return make_model(nodes, [tensor("x", ["batch", 8])], [tensor("y", ["batch", 8]), tensor("up", ["batch", 8])],
                      init)


def half_precision_outputs(model: Model, feeds: dict) -> dict:
    """onnx's reference evaluator computes fp16 nodes in fp16 (as GPUs do); ORT's CPU kernels would
    quietly compute them in fp32 and hide the overflow."""
    evaluator = ReferenceEvaluator(model.to_proto())
    return dict(zip(evaluator.output_names, evaluator.run(None, feeds), strict=True))


def test_values_overflowing_fp16_keep_their_nodes_in_fp32() -> None:
    proto = overflowing_model()
    feeds = held_out(proto)
    reference = run_onnx(Model.from_proto(proto), feeds)
    blind, _ = convert(proto, keep_io_types=True)
    with np.errstate(all="ignore"):
        assert np.isinf(half_precision_outputs(blind, feeds)["up"]).any()  # without data: overflow unnoticed
    model, result = convert(proto, calibration(proto), keep_io_types=True)
    assert result.manifest["quantization"]["fp16_overflow_fp32"] == ["scale_down", "scale_up"]
    got = half_precision_outputs(model, feeds)
    comparisons = compare_outputs(reference, got)
    assert within(comparisons, TOLERANCES["fp16"]) and np.isfinite(got["up"]).all(), summarize(comparisons)
    assert node_precisions(model) == {"int8": 0, "fp16": 1, "fp32": 2}


def test_constants_are_clamped_safely() -> None:
    values = np.array([1e6, -1e6, 1e-9, -1e-9, 0.0, -np.inf, 0.5], np.float32)
    half = to_fp16(values)
    assert half.dtype == np.float16
    assert half[0] == 65504 and half[1] == -65504  # saturate instead of inf
    assert half[2] > 0 and half[3] < 0  # keep the sign instead of flushing to zero
    assert half[4] == 0 and half[5] == -np.inf and half[6] == 0.5


@pytest.mark.parametrize("keep_io_types", [True, False])
def test_values_if_bodies_capture_reach_them_in_fp32(keep_io_types: bool) -> None:
    proto = onnx.shape_inference.infer_shapes(nested_if())  # the build infers dtypes before fp16 runs
    ctx = PassContext(options={"keep_io_types": keep_io_types})
    model, _ = assert_nested_if_preserved(Fp16Conversion(), proto, ctx, precision="fp16")
    assert model.op_histogram()["Cast"] >= 3  # a_dup, idn and s are captured; each is cast back once


def _layernorm_with_statistics() -> tuple[onnx.ModelProto, dict]:
    """LayerNormalization's Mean/InvStdDev outputs are float32 (or bfloat16) only."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("LayerNormalization", ["r", "g", "b"], ["y", "mean", "inv_std"], axis=-1)]
    outputs = [tensor("y", [2, 8]), tensor("mean", [2, 1]), tensor("inv_std", [2, 1])]
    gamma_beta = {"g": np.ones(8, np.float32), "b": np.zeros(8, np.float32)}
    proto = make_model(nodes, [tensor("x", [2, 8])], outputs, gamma_beta)
    return proto, {"x": np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)}


def _dynamic_quantize() -> tuple[onnx.ModelProto, dict]:
    """DynamicQuantizeLinear reads float32 only."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("DynamicQuantizeLinear", ["r"], ["q", "s", "z"])]
    outputs = [tensor("q", [2, 8], TensorProto.UINT8), tensor("s", []), tensor("z", [], TensorProto.UINT8)]
    proto = make_model(nodes, [tensor("x", [2, 8])], outputs)
    return proto, {"x": np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)}


def _bitcast() -> tuple[onnx.ModelProto, dict]:
    """BitCast reinterprets its input's bits: half bits are not float bits."""
    nodes = [helper.make_node("BitCast", ["x"], ["bits"], to=TensorProto.INT32), helper.make_node("Relu", ["x"], ["r"])]
    outputs = [tensor("bits", [2, 8], TensorProto.INT32), tensor("r", [2, 8])]
    proto = make_model(nodes, [tensor("x", [2, 8])], outputs, opset=26)
    return proto, {"x": np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)}


def _local_function_with_mixed_types() -> tuple[onnx.ModelProto, dict]:
    """A model-local function whose body computes in float64 between two Casts: its body keeps its types."""
    body = [helper.make_node("Cast", ["a"], ["wide"], to=TensorProto.DOUBLE),
            helper.make_node("Mul", ["wide", "wide"], ["square"]),
            helper.make_node("Cast", ["square"], ["out"], to=TensorProto.FLOAT)]
    function = helper.make_function("local", "Square64", ["a"], ["out"], body,
                                    [helper.make_opsetid("", 17)])
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Square64", ["r"], ["y"], domain="local")]
    graph = helper.make_graph(nodes, "local_function", [tensor("x", [2, 8])], [tensor("y", [2, 8])])
    proto = helper.make_model(graph, functions=[function], ir_version=8,
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)])
    return proto, {"x": np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)}


def _softmax_of_large_numbers() -> tuple[onnx.ModelProto, dict]:
    """ONNX's softmax_large_number case: fp16 rounds 10001..10003 to 10000 (steps of 8 there)."""
    proto = make_model([helper.make_node("Softmax", ["x"], ["y"])], [tensor("x", [2, 4])], [tensor("y", [2, 4])])
    return proto, {"x": np.array([[0, 1, 2, 3], [10000, 10001, 10002, 10003]], np.float32)}


def _scatter_with_reduction() -> tuple[onnx.ModelProto, dict]:
    """onnxruntime's CPU ScatterElements has no float16 kernel with a reduction."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("ScatterElements", ["r", "index", "r"], ["y"], axis=1, reduction="add")]
    proto = make_model(nodes, [tensor("x", [2, 8])], [tensor("y", [2, 8])],
                       {"index": np.tile(np.arange(8, dtype=np.int64)[::-1], (2, 1))})
    return proto, {"x": np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)}


@pytest.mark.parametrize("keep_io_types", [True, False])
@pytest.mark.parametrize("build", [_layernorm_with_statistics, _dynamic_quantize, _bitcast,
                                   _local_function_with_mixed_types, _softmax_of_large_numbers,
                                   _scatter_with_reduction])
def test_ops_without_fp16_numerics_stay_fp32_and_the_graph_is_type_consistent(build, keep_io_types: bool) -> None:
    proto, feeds = build()
    model, _ = convert(proto, keep_io_types=keep_io_types)
    figures, ok = figures_vs_fp32(proto, model, feeds)
    assert ok and figures["cosine"] > 0.9999, figures


def test_only_float32_tensors_change() -> None:
    proto = mixed_types()
    model, _ = convert(proto, keep_io_types=True)
    tensors = model.graph.tensors()
    assert tensors["r_bf16"].dtype == onnx.TensorProto.BFLOAT16
    assert tensors["r_f8"].dtype == onnx.TensorProto.FLOAT8E4M3FN
    assert tensors["yd"].dtype == np.float64 and tensors["d"].values.dtype == np.float64
    assert tensors["m"].dtype == np.float16
    figures, ok = figures_vs_fp32(proto, model)
    assert ok, figures


def test_mean_variance_normalization_stays_fp32() -> None:
    """onnxruntime runs it as its ONNX function body, whose epsilon is float32 (onnx's full checker cannot
    expand that body at all, so this test checks what onnxruntime does)."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("MeanVarianceNormalization", ["r"], ["y"])]
    proto = make_model(nodes, [tensor("x", [2, 3, 4, 4])], [tensor("y", [2, 3, 4, 4])], opset=13)
    model = cleaned(proto)
    Fp16Conversion().run(model, PassContext())
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 3, 4, 4)).astype(np.float32)}
    figures, ok = figures_vs_fp32(proto, model, feeds)
    assert ok and figures["cosine"] > 0.9999, figures
