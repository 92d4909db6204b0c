"""bias-scale-folding: per-channel constant Add/Mul after Conv/Gemm/MatMul goes into the weights."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from infer_compile.passes.bias_scale_folding import BiasScaleFolding
from tests.builders import make_model, nested_if, tensor
from tests.passes_helpers import (
    apply_pass,
    assert_missed,
    assert_nested_if_preserved,
    assert_same_outputs,
    op_counts,
    rand,
)

RNG = np.random.default_rng(3)
CONV = ("Conv", [1, 3, 5, 5], [1, 4, 5, 5], rand(RNG, 4, 3, 3, 3), {"pads": [1, 1, 1, 1]})
GEMM = ("Gemm", [2, 6], [2, 4], rand(RNG, 6, 4), {"alpha": 2.0})
MATMUL = ("MatMul", [2, 6], [2, 4], rand(RNG, 6, 4), {})


def _then(producer: tuple, op: str, const: np.ndarray, const_first: bool = False,
          const_is_input: bool = False) -> onnx.ModelProto:
    kind, x_shape, y_shape, weight, attrs = producer
    operands = ["k", "h"] if const_first else ["h", "k"]
    nodes = [helper.make_node(kind, ["x", "w"], ["h"], **attrs), helper.make_node(op, operands, ["y"])]
    inputs = [tensor("x", x_shape)] + ([tensor("k", list(const.shape))] if const_is_input else [])
    inits = {"w": weight} if const_is_input else {"w": weight, "k": const}
    return onnx.shape_inference.infer_shapes(make_model(nodes, inputs, [tensor("y", y_shape)], inits))


CASES = {
    "conv_mul": (CONV, "Mul", rand(RNG, 4, 1, 1), "Conv"),
    "conv_add_4d": (CONV, "Add", rand(RNG, 1, 4, 1, 1), "Conv"),
    "conv_mul_scalar": (CONV, "Mul", np.array(0.5, np.float32), "Conv"),
    "gemm_add": (GEMM, "Add", rand(RNG, 4), "Gemm"),
    "gemm_mul": (GEMM, "Mul", rand(RNG, 1, 4), "Gemm"),
    "matmul_add": (MATMUL, "Add", rand(RNG, 4), "Gemm"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_constant_folds_into_weights(case: str) -> None:
    producer, op, const, fused = CASES[case]
    proto = _then(producer, op, const, const_first=case.endswith("_4d"))
    model, result = apply_pass(BiasScaleFolding(), proto)
    assert result.counts == {op.lower(): 1}
    assert op_counts(model) == {fused: 1}
    assert_same_outputs(proto, model)


NEGATIVE = {
    "varies_along_space": (CONV, "Add", rand(RNG, 1, 1, 5), False,
                           "the constant is not one value per Conv output channel"),
    "not_a_constant": (CONV, "Mul", rand(RNG, 4, 1, 1), True, "the other input is not a constant"),
    "gemm_rows": (GEMM, "Add", rand(RNG, 2, 1), False, "the constant is not one value per Gemm output channel"),
}


@pytest.mark.parametrize("case", sorted(NEGATIVE))
def test_non_per_channel_operands_are_left_alone(case: str) -> None:
    producer, op, const, is_input, reason = NEGATIVE[case]
    assert_missed(BiasScaleFolding(), _then(producer, op, const, const_is_input=is_input), op.lower(), reason)


def test_producer_output_read_by_if_bodies_is_not_folded() -> None:
    outer = [helper.make_node("Gemm", ["x", "w"], ["g"]), helper.make_node("Add", ["g", "k"], ["pre"])]
    inner = [helper.make_node("Sub", ["pre", "g"], ["body"])]  # the bodies see the Gemm's own output
    _, result = assert_nested_if_preserved(BiasScaleFolding(), nested_if(outer=outer, inner=inner))
    assert not result.modified
