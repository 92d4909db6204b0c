"""shape-simplification: Reshape chains collapse; Shape/Gather/Concat -> Reshape folds when shapes are static."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from infer_compile.passes.shape_simplification import ShapeSimplification
from tests.builders import make_model, nested_if, tensor
from tests.passes_helpers import (
    apply_pass,
    assert_missed,
    assert_nested_if_preserved,
    assert_same_outputs,
    op_counts,
)

M = helper.make_node


def _reshape_chain(second: list[int]) -> onnx.ModelProto:
    nodes = [M("Relu", ["x"], ["r"]), M("Reshape", ["r", "s1"], ["a"]), M("Reshape", ["a", "s2"], ["b"]),
             M("Reshape", ["b", "s3"], ["y"])]
    inits = {"s1": np.array([6, 4], np.int64), "s2": np.array(second, np.int64), "s3": np.array([4, -1], np.int64)}
    return onnx.shape_inference.infer_shapes(make_model(nodes, [tensor("x", [2, 3, 4])], [tensor("y", [4, 6])], inits))


def test_reshape_chain_collapses() -> None:
    proto = _reshape_chain([3, 8])
    model, result = apply_pass(ShapeSimplification(), proto)
    assert result.counts == {"reshape_chain": 2} and op_counts(model) == {"Relu": 1, "Reshape": 1}
    assert_same_outputs(proto, model)


def test_reshape_copying_a_dim_of_the_inner_output_is_left_alone() -> None:
    # 0 copies the inner output's 6; applied to x it would copy x's 2 instead.
    nodes = [M("Reshape", ["x", "s1"], ["a"]), M("Reshape", ["a", "s2"], ["y"])]
    inits = {"s1": np.array([6, 4], np.int64), "s2": np.array([0, -1], np.int64)}
    assert_missed(ShapeSimplification(), make_model(nodes, [tensor("x", [2, 3, 4])], [tensor("y", [6, 4])], inits),
                  "reshape_chain", "the target shape copies a dim (0) from the inner Reshape")


def test_static_shape_computation_folds() -> None:
    # y = Reshape(x, Concat(Gather(Shape(x), 0), [-1])): the exporter's way to flatten.
    nodes = [M("Shape", ["x"], ["shp"]), M("Gather", ["shp", "zero"], ["n"], axis=0),
             M("Unsqueeze", ["n", "ax"], ["n1"]),
             M("Concat", ["n1", "minus1"], ["target"], axis=0), M("Reshape", ["x", "target"], ["y"])]
    inits = {"zero": np.array(0, np.int64), "ax": np.array([0], np.int64), "minus1": np.array([-1], np.int64)}
    proto = make_model(nodes, [tensor("x", [2, 3, 4])], [tensor("y", [2, 12])], inits)
    proto = onnx.shape_inference.infer_shapes(proto)
    model, result = apply_pass(ShapeSimplification(), proto)
    assert result.counts["static_shape"] == 1 and op_counts(model) == {"Reshape": 1}
    assert_same_outputs(proto, model)


def test_dynamic_shape_is_left_alone() -> None:
    nodes = [M("Shape", ["x"], ["shp"]), M("Reshape", ["x", "shp"], ["y"])]
    assert_missed(ShapeSimplification(), make_model(nodes, [tensor("x", ["n", 3])], [tensor("y", ["n", 3])]),
                  "static_shape", "the input shape is not static")


def test_reshape_chain_read_by_if_bodies() -> None:
    flat, back = np.array([8], np.int64), np.array([2, 4], np.int64)
    outer = [helper.make_node("Reshape", ["x", "flat"], ["r"]), helper.make_node("Reshape", ["r", "back"], ["pre"])]
    proto = nested_if(outer=outer, initializers={"flat": flat, "back": back})
    _, result = assert_nested_if_preserved(ShapeSimplification(), proto)
    assert result.counts.get("reshape_chain") == 1
