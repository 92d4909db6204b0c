"""identity-elimination: Identity and inference-mode Dropout disappear; output names survive."""

from __future__ import annotations

import numpy as np
from onnx import helper

from infer_compile.passes.identity_elimination import IdentityElimination
from tests.builders import make_model, nested_if, tensor, tiny_cnn
from tests.passes_helpers import (
    apply_pass,
    assert_nested_if_preserved,
    assert_same_outputs,
    assert_unchanged,
    op_counts,
)


def test_removes_identity_and_dropout_in_a_cnn() -> None:
    proto = tiny_cnn()
    model, result = apply_pass(IdentityElimination(), proto)
    assert result.counts == {"identity": 1, "dropout": 1}
    assert op_counts(model)["Identity"] == 0 and op_counts(model)["Dropout"] == 0
    assert_same_outputs(proto, model)


def test_identity_before_graph_output_keeps_the_output_name() -> None:
    proto = make_model([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Identity", ["r"], ["y"])],
                       [tensor("x", [2, 3])], [tensor("y", [2, 3])])
    model, result = apply_pass(IdentityElimination(), proto)
    assert result.counts == {"identity": 1}
    assert [t.name for t in model.graph.outputs] == ["y"]
    assert [n.op for n in model.graph.nodes] == ["Relu"]
    assert_same_outputs(proto, model)


def test_identity_whose_input_is_also_consumed_elsewhere() -> None:
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Identity", ["r"], ["y"]),
             helper.make_node("Neg", ["r"], ["z"])]
    proto = make_model(nodes, [tensor("x", [4])], [tensor("y", [4]), tensor("z", [4])])
    model, _ = apply_pass(IdentityElimination(), proto)
    assert op_counts(model)["Identity"] == 0
    assert [t.name for t in model.graph.outputs] == ["y", "z"]
    assert_same_outputs(proto, model)


def test_identity_from_graph_input_to_graph_output_stays() -> None:
    proto = make_model([helper.make_node("Identity", ["x"], ["y"])], [tensor("x", [2])], [tensor("y", [2])])
    assert_unchanged(IdentityElimination(), proto)


def test_dropout_in_training_mode_or_with_used_mask_stays() -> None:
    training = make_model(
        [helper.make_node("Dropout", ["x", "ratio", "train"], ["d"]), helper.make_node("Relu", ["d"], ["y"])],
        [tensor("x", [2, 2])], [tensor("y", [2, 2])],
        {"ratio": np.array(0.5, np.float32), "train": np.array(False)})
    assert_unchanged(IdentityElimination(), training)
    mask_used = make_model(
        [helper.make_node("Dropout", ["x"], ["d", "mask"]), helper.make_node("Relu", ["d"], ["y"])],
        [tensor("x", [2, 2])], [tensor("y", [2, 2]), tensor("mask", [2, 2], 9)])
    assert_unchanged(IdentityElimination(), mask_used)


def test_identity_read_only_inside_if_bodies_is_renamed_there_too() -> None:
    _, result = assert_nested_if_preserved(IdentityElimination(), nested_if())
    assert result.counts == {"identity": 1}
