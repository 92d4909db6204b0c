"""smooth-quant: activation outliers move into the weights; exact in fp32, much better INT8."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from infer_compile.core.ir import Model
from infer_compile.core.numerics import compare_outputs, run_onnx, summarize
from infer_compile.passes import PassContext, PassManager
from infer_compile.passes.quantize_int8 import QuantizeInt8
from infer_compile.passes.smooth_quant import SmoothQuant
from tests.builders import make_model, tensor
from tests.passes_helpers import apply_pass, assert_same_outputs, op_counts
from tests.precision_models import HIDDEN, calibration, cleaned, held_out, outlier_mlp

N = helper.make_node


def _int8_cosine(proto: onnx.ModelProto, alpha: float) -> float:
    model = cleaned(proto)
    ctx = PassContext(target="trt", calibration=calibration(proto, count=25), options={"smoothquant": alpha})
    PassManager([SmoothQuant(), QuantizeInt8()]).run(model, ctx)
    feeds = held_out(proto, seed=123)
    return summarize(compare_outputs(run_onnx(Model.from_proto(proto), feeds), run_onnx(model, feeds)))["cosine"]


def test_smoothing_is_exact_in_fp32_and_counts_what_it_changed() -> None:
    proto = onnx.shape_inference.infer_shapes(outlier_mlp())  # the pass needs channel counts, as in a build
    ctx = PassContext(calibration=calibration(proto, count=10))
    model, result = apply_pass(SmoothQuant(), proto, ctx)
    # fc1 reads the graph input, fc2 and fc3 read ReLUs: one Mul in front of each
    assert result.counts == {"smoothing_muls": 3, "layers_smoothed": 3}
    assert op_counts(model)["Mul"] == 3
    assert_same_outputs(proto, model, feeds=held_out(proto))


def test_int8_of_an_outlier_channel_recovers_with_smoothing() -> None:
    proto = outlier_mlp(scale=100.0)
    without, with_smoothing = _int8_cosine(proto, 0.0), _int8_cosine(proto, 0.5)
    assert without < 0.99 < with_smoothing, (without, with_smoothing)


def _pre_norm_block(seed: int = 0) -> onnx.ModelProto:
    """LayerNorm feeding only the Q/K/V projections (a pre-LN transformer), one channel of gamma 50x the rest."""
    rng = np.random.default_rng(seed)
    gamma = np.ones(HIDDEN, np.float32)
    gamma[3] = 50.0
    init = {"gamma": gamma, "beta": rng.standard_normal(HIDDEN).astype(np.float32),
            **{f"w{k}": (rng.standard_normal((HIDDEN, HIDDEN)) / 4).astype(np.float32) for k in "qkv"}}
    nodes = [N("LayerNormalization", ["x", "gamma", "beta"], ["ln"], axis=-1),
             *(N("MatMul", ["ln", f"w{k}"], [k], name=f"{k}_proj") for k in "qkv"),
             N("Add", ["q", "k"], ["qk"]), N("Add", ["qk", "v"], ["y"])]
    proto = make_model(nodes, [tensor("x", ["batch", 8, HIDDEN])], [tensor("y", ["batch", 8, HIDDEN])], init)
    return onnx.shape_inference.infer_shapes(proto)


def test_a_layernorm_feeding_only_the_projections_absorbs_the_scales() -> None:
    proto = _pre_norm_block()
    model, result = apply_pass(SmoothQuant(), proto, PassContext(calibration=calibration(proto, count=10)))
    assert result.counts == {"folded_into_layernorm": 1, "layers_smoothed": 3}
    assert "Mul" not in op_counts(model)  # no extra op: LayerNorm's gamma and beta carry 1/s
    gamma = next(n for n in model.graph.nodes if n.op == "LayerNormalization").inputs[1].values
    assert gamma[3] / np.median(gamma) < 50.0  # the outlier channel is flattened
    assert_same_outputs(proto, model, feeds=held_out(proto))


def test_alpha_zero_turns_it_off() -> None:
    proto = outlier_mlp()
    ctx = PassContext(calibration=calibration(proto, count=5), options={"smoothquant": 0.0})
    model, result = apply_pass(SmoothQuant(), proto, ctx)
    assert not result.modified and op_counts(model) == op_counts(proto)
