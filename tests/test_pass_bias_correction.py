"""bias-correction: the mean output shift INT8 rounding leaves on a layer goes back into its bias."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from infer_compile.core.ir import Model
from infer_compile.core.numerics import run_onnx
from infer_compile.passes import PassContext, PassManager
from infer_compile.passes.bias_correction import BiasCorrection
from infer_compile.passes.quantize_int8 import QuantizeInt8
from tests.builders import make_model, tensor
from tests.precision_models import calibration, cleaned, held_out


def _biased_rounding(conv: bool = False) -> onnx.ModelProto:
    """x (non-negative) @ W + b where every weight but one per column is 0.0149 and that one is 1.27: per-channel
    int8 (scale 0.01) rounds all the small ones down to 0.01, a shift of -0.0049 * sum(x) on every output. With
    ``conv`` the same weights as a 1x1 convolution over a 4x4 image."""
    weight = np.full((32, 8), 0.0149, np.float32)
    weight[0] = 1.27
    if conv:
        nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Conv", ["r", "w", "b"], ["y"], name="fc")]
        return make_model(nodes, [tensor("x", ["batch", 32, 4, 4])], [tensor("y", ["batch", 8, 4, 4])],
                          {"w": weight.T.reshape(8, 32, 1, 1).copy(), "b": np.zeros(8, np.float32)})
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("MatMul", ["r", "w"], ["m"], name="fc"),
             helper.make_node("Add", ["m", "b"], ["y"], name="fc_bias")]
    return make_model(nodes, [tensor("x", ["batch", 32])], [tensor("y", ["batch", 8])],
                      {"w": weight, "b": np.zeros(8, np.float32)})


def _mean_shift(proto: onnx.ModelProto, correct: bool | None) -> tuple[float, dict]:
    model = cleaned(proto)
    options = {} if correct is None else {"bias_correction": correct}
    ctx = PassContext(target="trt", calibration=calibration(proto, count=20), options=options)
    result = PassManager([QuantizeInt8(), BiasCorrection()]).run(model, ctx)
    feeds = held_out(proto, seed=11)
    expected, got = run_onnx(Model.from_proto(proto), feeds)["y"], run_onnx(model, feeds)["y"]
    shift = np.moveaxis(expected - got, 1, -1).reshape(-1, expected.shape[1]).mean(axis=0)  # per channel
    return float(np.abs(shift).max()), result.records[-1].counts


def test_the_rounding_shift_goes_back_into_the_bias() -> None:
    proto = _biased_rounding()
    without, counts_off = _mean_shift(proto, correct=False)
    with_correction, counts = _mean_shift(proto, correct=True)
    assert counts == {"biases_corrected": 1} and not any(counts_off.values())
    assert without > 0.02 and with_correction < without / 5, (without, with_correction)  # 0.063 -> 0.0075


def test_by_default_convolutions_are_corrected_and_linear_layers_are_not() -> None:
    conv = _biased_rounding(conv=True)
    without, _ = _mean_shift(conv, correct=False)
    corrected, counts = _mean_shift(conv, correct=None)
    assert counts == {"biases_corrected": 1} and without > 0.02 and corrected < without / 5, (without, corrected)
    assert _mean_shift(_biased_rounding(), correct=None)[1] == {"biases_corrected": 0}
