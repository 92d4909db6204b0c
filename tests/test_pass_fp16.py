"""FP16 conversion: runs in onnxruntime within fp16 tolerance; blocklist, I/O types, overflow fallback, clamping."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

from infer_compile.ir import Model
from infer_compile.numerics import TOLERANCES, compare_outputs, run_onnx, summarize, within
from infer_compile.passes import PassContext
from infer_compile.passes.fp16 import Fp16Conversion, to_fp16
from infer_compile.passes.precision_state import node_precisions
from tests.builders import make_model, tensor, tiny_cnn
from tests.precision_models import calibration, cleaned, held_out, small_transformer


def convert(proto: onnx.ModelProto, data=None, **options) -> tuple[Model, PassContext]:
    model = cleaned(proto)
    ctx = PassContext(calibration=data, options=options)
    Fp16Conversion().run(model, ctx)
    onnx.checker.check_model(model.to_proto(), full_check=True)
    return model, ctx


def figures_vs_fp32(proto: onnx.ModelProto, model: Model) -> tuple[dict, bool]:
    feeds = held_out(proto)
    reference = run_onnx(Model.from_proto(proto), feeds)
    dtypes = {s.name: s.dtype for s in model.inputs}
    got = run_onnx(model, {k: v.astype(dtypes[k]) for k, v in feeds.items()})
    comparisons = compare_outputs(reference, {k: v.astype(np.float32) for k, v in got.items()})
    return summarize(comparisons), within(reference, comparisons, TOLERANCES["fp16"])


@pytest.mark.parametrize("build", [tiny_cnn, small_transformer])
def test_fp16_model_runs_within_fp16_tolerance(build) -> None:
    proto = build()
    model, ctx = convert(proto, keep_io_types=True)
    figures, ok = figures_vs_fp32(proto, model)
    assert ok, figures
    assert [s.dtype for s in model.inputs + model.outputs] == [np.dtype(np.float32)] * 2
    weights = [c for c in model.constants() if c.values.dtype.kind == "f" and c.values.size > 1]
    assert weights and all(c.values.dtype == np.float16 for c in weights)
    counts = ctx.records["quantization"]["nodes"]
    assert counts["fp16"] > 0 and counts["int8"] == 0


def test_without_keep_io_types_the_graph_takes_half_inputs() -> None:
    model, _ = convert(tiny_cnn())
    assert model.inputs[0].dtype == np.float16 and model.outputs[0].dtype == np.float16
    assert not any(n.op == "Cast" for n in model.graph.nodes)  # nothing left in fp32, so no casts
    assert figures_vs_fp32(tiny_cnn(), model)[1]


def test_blocklist_by_op_type_and_node_name() -> None:
    model, ctx = convert(tiny_cnn(), keep_io_types=True, fp16_block=["Gemm", "conv2"])
    nodes = {n.name: n for n in model.graph.nodes}
    assert nodes["fc"].outputs[0].dtype == np.float32 and nodes["conv2"].outputs[0].dtype == np.float32
    assert nodes["conv1"].outputs[0].dtype == np.float16
    assert ctx.records["quantization"]["fp16_blocked"] == ["conv2", "fc"]
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
    model, ctx = convert(proto, calibration(proto), keep_io_types=True)
    assert ctx.records["quantization"]["fp16_overflow_fp32"] == ["scale_down", "scale_up"]
    got = half_precision_outputs(model, feeds)
    comparisons = compare_outputs(reference, got)
    assert within(reference, comparisons, TOLERANCES["fp16"]) and np.isfinite(got["up"]).all(), summarize(comparisons)
    assert node_precisions(model) == {"int8": 0, "fp16": 1, "fp32": 2}


def test_constants_are_clamped_safely() -> None:
    values = np.array([1e6, -1e6, 1e-9, -1e-9, 0.0, -np.inf, 0.5], np.float32)
    half = to_fp16(values)
    assert half.dtype == np.float16
    assert half[0] == 65504 and half[1] == -65504  # saturate instead of inf
    assert half[2] > 0 and half[3] < 0  # keep the sign instead of flushing to zero
    assert half[4] == 0 and half[5] == -np.inf and half[6] == 0.5
