"""common-subexpression-elimination: repeated computations merge, transitively; others stay."""

from __future__ import annotations

import numpy as np
from onnx import helper

from infer_compile.passes.cse import CommonSubexpressionElimination
from tests.builders import make_model, nested_if, tensor
from tests.passes_helpers import (
    apply_pass,
    assert_nested_if_preserved,
    assert_same_outputs,
    assert_unchanged,
    op_counts,
)


def _branches(second_relu_attrs: dict | None = None, second_op: str = "Sigmoid"):
    """Two branches over x; with defaults they are the same computation."""
    nodes = [
        helper.make_node("Sigmoid", ["x"], ["a1"]),
        helper.make_node("Mul", ["a1", "k"], ["b1"]),
        helper.make_node(second_op, ["x"], ["a2"], **(second_relu_attrs or {})),
        helper.make_node("Mul", ["a2", "k"], ["b2"]),
        helper.make_node("Sub", ["b1", "b2"], ["y"]),
        helper.make_node("Add", ["b1", "b2"], ["z"]),
    ]
    return make_model(nodes, [tensor("x", [3, 4])], [tensor("y", [3, 4]), tensor("z", [3, 4])],
                      {"k": np.full((4,), 3.0, np.float32)})


def test_duplicate_branch_merges_transitively() -> None:
    proto = _branches()
    model, result = apply_pass(CommonSubexpressionElimination(), proto)
    assert result.counts == {"nodes_merged": 2}
    assert op_counts(model) == {"Sigmoid": 1, "Mul": 1, "Sub": 1, "Add": 1}
    assert_same_outputs(proto, model)


def test_different_op_or_attributes_are_not_merged() -> None:
    assert_unchanged(CommonSubexpressionElimination(), _branches(second_op="Tanh"))
    proto = _branches()
    for node in proto.graph.node[:4:2]:
        node.op_type = "Softmax"
    proto.graph.node[2].attribute.append(helper.make_attribute("axis", 0))
    assert_unchanged(CommonSubexpressionElimination(), proto)


def test_random_ops_are_never_merged() -> None:
    nodes = [helper.make_node("RandomUniformLike", ["x"], ["r1"]), helper.make_node("RandomUniformLike", ["x"], ["r2"]),
             helper.make_node("Sub", ["r1", "r2"], ["y"])]
    proto = make_model(nodes, [tensor("x", [4])], [tensor("y", [4])])
    model, result = apply_pass(CommonSubexpressionElimination(), proto)
    assert not result.modified and op_counts(model)["RandomUniformLike"] == 2


def test_duplicate_read_only_inside_if_bodies_is_merged_there_too() -> None:
    _, result = assert_nested_if_preserved(CommonSubexpressionElimination(), nested_if())
    assert result.counts == {"nodes_merged": 1}
