"""integer-matmul-fusion: Q/DQ'd MatMuls (+ bias) -> ONNX Runtime's MatMulIntegerToFloat, computing the same."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from infer_compile.app.build import BuildOptions, compile_model
from infer_compile.calibration import CalibrationSettings
from infer_compile.core.ir import Model
from infer_compile.core.numerics import compare_outputs, run_onnx, summarize
from infer_compile.passes import PassContext, PassManager
from infer_compile.passes.integer_matmul import IntegerMatMulFusion
from infer_compile.passes.precision_state import node_precisions
from infer_compile.passes.quantize_int8 import QuantizeInt8
from infer_compile.targets.onnxruntime import OnnxRuntimeTarget
from tests.builders import inverted_residual
from tests.passes_helpers import assert_missed, op_counts
from tests.precision_models import calibration, cleaned, held_out, small_transformer

ORT = OnnxRuntimeTarget.capabilities


def _quantized(proto):
    model = cleaned(proto)
    ctx = PassContext(target="onnxruntime", capabilities=ORT, calibration=calibration(proto, count=10))
    PassManager([QuantizeInt8()]).run(model, ctx)
    return model, ctx


def test_weighted_matmuls_become_integer_kernels_with_the_same_outputs() -> None:
    proto = small_transformer()
    model, ctx = _quantized(proto)
    qdq = model.copy()
    result = IntegerMatMulFusion().run(model, ctx)
    # q, k, v, o projections and both FFN layers; ffn1's bias Add is absorbed into the op
    assert result.counts == {"matmul_integer_to_float": 6}
    assert op_counts(model)["MatMulIntegerToFloat"] == 6 and op_counts(model)["Add"] == op_counts(qdq)["Add"] - 1
    integer = [n for n in model.graph.nodes if n.op == "MatMulIntegerToFloat"]
    assert all(n.inputs[0].dtype == np.uint8 and n.inputs[1].values.dtype == np.int8 for n in integer)
    feeds = held_out(proto)
    figures = summarize(compare_outputs(run_onnx(qdq, feeds), run_onnx(model, feeds)))
    assert figures["cosine"] > 0.99999, figures  # the same integer arithmetic; only float rounding differs
    assert node_precisions(model)["int8"] == node_precisions(qdq)["int8"]


def test_a_classifier_gemm_with_float_logits_runs_on_an_integer_kernel() -> None:
    """The logits are a graph output, so not quantized and ORT would not make it a QGemm: it ran a float Gemm
    that dequantized its int8 weights on every run. Its transposed [N, K] weights are stored [K, N]."""
    proto = inverted_residual()
    model, ctx = _quantized(proto)
    qdq = model.copy()
    result = IntegerMatMulFusion().run(model, ctx)
    assert result.counts == {"gemm_integer_to_float": 1}
    (fc,) = [n for n in model.graph.nodes if n.op == "MatMulIntegerToFloat"]
    assert fc.inputs[1].values.shape == (16, 10) and fc.inputs[3].values.shape == (10,)  # [K, N], per column
    assert fc.outputs[0].name == "logits" and not op_counts(model)["Gemm"]
    feeds = held_out(proto)
    figures = summarize(compare_outputs(run_onnx(qdq, feeds), run_onnx(model, feeds)))
    assert figures["cosine"] > 0.99999, figures


def test_a_float_matmul_is_left_alone_and_says_why() -> None:
    assert_missed(IntegerMatMulFusion(), small_transformer(), "matmul_integer_to_float",
                  "an input is not a DequantizeLinear with constant scale and zero point",
                  ctx=PassContext(capabilities=ORT))


def test_an_onnxruntime_int8_build_runs_integer_kernels(tmp_path: Path) -> None:
    source = tmp_path / "block.onnx"
    proto = small_transformer()
    onnx.save(proto, source)
    folder = tmp_path / "calib"
    folder.mkdir()
    for i, sample in enumerate(calibration(proto, count=12).samples):
        np.savez(folder / f"{i}.npz", **sample)
    result = compile_model(source, BuildOptions(target="onnxruntime", precision="int8", output=tmp_path / "q.onnx",
                                                calibration=CalibrationSettings(folder)))
    artifact = Model.from_proto(onnx.load(result.artifact))
    assert op_counts(artifact)["MatMulIntegerToFloat"] >= 6
    assert result.manifest.quantization["nodes"]["int8"] >= 6
