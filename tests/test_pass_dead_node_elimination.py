"""dead-node-elimination: nodes and initializers no output depends on go; graph inputs stay."""

from __future__ import annotations

import numpy as np
from onnx import helper

from infer_compile.passes.dead_code import DeadNodeElimination
from tests.builders import make_model, nested_if, tensor, tiny_cnn
from tests.passes_helpers import apply_pass, assert_nested_if_preserved, assert_same_outputs, assert_unchanged


def test_removes_unused_branch_and_its_weights() -> None:
    nodes = [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("MatMul", ["x", "w"], ["unused"]),
             helper.make_node("Sigmoid", ["unused"], ["unused2"])]
    proto = make_model(nodes, [tensor("x", [2, 4]), tensor("spare", [1])], [tensor("y", [2, 4])],
                       {"w": np.ones((4, 4), np.float32), "orphan": np.zeros(3, np.float32)})
    model, result = apply_pass(DeadNodeElimination(), proto)
    assert result.counts == {"dead_nodes": 2, "dead_initializers": 1}
    # An initializer no node references never even enters the IR.
    assert {i.name for i in model.to_proto().graph.initializer} == set()
    assert [n.op for n in model.graph.nodes] == ["Relu"]
    # Graph inputs are the model's interface: kept even when unused.
    assert [t.name for t in model.graph.inputs] == ["x", "spare"]
    assert_same_outputs(proto, model)


def test_live_graph_is_untouched() -> None:
    assert_unchanged(DeadNodeElimination(), tiny_cnn())


def test_values_only_if_bodies_read_are_alive() -> None:
    outer = [helper.make_node("Relu", ["x"], ["pre"]), helper.make_node("Tanh", ["x"], ["unused"])]
    _, result = assert_nested_if_preserved(DeadNodeElimination(), nested_if(outer=outer))
    assert result.counts == {"dead_nodes": 1, "dead_initializers": 0}  # the Tanh only
