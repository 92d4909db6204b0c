"""matmul-add-to-gemm: 2-D MatMul + Add becomes Gemm only where Gemm's broadcasting allows."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from infer_compile.passes.matmul_add_to_gemm import MatMulAddToGemm
from tests.builders import make_model, nested_if, tensor
from tests.passes_helpers import (
    apply_pass,
    assert_missed,
    assert_nested_if_preserved,
    assert_same_outputs,
    op_counts,
    rand,
)


def _matmul_add(a_shape: list[int], bias_shape: list[int], bias_first: bool = False) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    n = 4
    out = [*a_shape[:-1], n]
    add_inputs = ["c", "h"] if bias_first else ["h", "c"]
    nodes = [helper.make_node("MatMul", ["a", "b"], ["h"]), helper.make_node("Add", add_inputs, ["y"])]
    # The bias is a graph input: Gemm does not need it constant, only broadcastable.
    proto = make_model(nodes, [tensor("a", a_shape), tensor("c", bias_shape)],
                       [tensor("y", list(np.broadcast_shapes(tuple(out), tuple(bias_shape))))],
                       {"b": rand(rng, a_shape[-1], n)})
    return onnx.shape_inference.infer_shapes(proto)


@pytest.mark.parametrize(("bias_shape", "bias_first"), [([4], False), ([3, 4], True), ([3, 1], False)])
def test_matmul_add_becomes_gemm(bias_shape: list[int], bias_first: bool) -> None:
    proto = _matmul_add([3, 5], bias_shape, bias_first)
    model, result = apply_pass(MatMulAddToGemm(), proto)
    assert result.counts == {"matmul_add": 1} and op_counts(model) == {"Gemm": 1}
    assert_same_outputs(proto, model)


@pytest.mark.parametrize(("a_shape", "bias_shape", "reason"), [
    ([2, 3, 5], [4], "the MatMul operands are not 2-D"),
    ([3, 5], [2, 3, 4], "the bias does not broadcast to the MatMul output"),
    ([1, 5], [3, 4], "the bias does not broadcast to the MatMul output")])
def test_illegal_gemm_is_left_alone(a_shape: list[int], bias_shape: list[int], reason: str) -> None:
    assert_missed(MatMulAddToGemm(), _matmul_add(a_shape, bias_shape), "matmul_add", reason)


def test_matmul_read_by_if_bodies_is_not_fused() -> None:
    outer = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "k"], ["pre"])]
    inner = [helper.make_node("Sub", ["pre", "m"], ["body"])]
    _, result = assert_nested_if_preserved(MatMulAddToGemm(), nested_if(outer=outer, inner=inner))
    assert not result.modified
