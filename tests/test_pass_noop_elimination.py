"""noop-elimination: same-type Cast, same-shape Reshape, cancelling Transpose and (Un)Squeeze pairs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from infer_compile.passes.noop_elimination import NoopElimination
from tests.builders import make_model, nested_if, tensor
from tests.passes_helpers import (
    apply_pass,
    assert_missed,
    assert_nested_if_preserved,
    assert_same_outputs,
    op_counts,
)


def _inferred(proto: onnx.ModelProto) -> onnx.ModelProto:
    return onnx.shape_inference.infer_shapes(proto)


def _chain(nodes: list[onnx.NodeProto], inits: dict | None = None, out_shape=(2, 3, 4)) -> onnx.ModelProto:
    """x -> nodes -> Relu -> y, shapes inferred so the pass can see them."""
    nodes = [*nodes, helper.make_node("Relu", [nodes[-1].output[0]], ["y"])]
    return _inferred(make_model(nodes, [tensor("x", [2, 3, 4])], [tensor("y", list(out_shape))], inits))


CASES = {
    "cast": [helper.make_node("Cast", ["x"], ["a"], to=TensorProto.FLOAT)],
    "reshape": [helper.make_node("Reshape", ["x", "shape"], ["a"])],
    "transpose_pair": [helper.make_node("Transpose", ["x"], ["t"], perm=[1, 2, 0]),
                       helper.make_node("Transpose", ["t"], ["a"], perm=[2, 0, 1])],
    "squeeze_pair": [helper.make_node("Unsqueeze", ["x", "ax"], ["u"]),
                     helper.make_node("Squeeze", ["u", "ax"], ["a"])],
}
INITS = {"shape": np.array([2, -1, 4], np.int64), "ax": np.array([-1], np.int64)}


@pytest.mark.parametrize("rule", sorted(CASES))
def test_rule_removes_the_noop(rule: str) -> None:
    proto = _chain(CASES[rule], INITS)
    model, result = apply_pass(NoopElimination(), proto)
    assert result.counts == {rule: 1}
    assert op_counts(model) == {"Relu": 1}
    assert_same_outputs(proto, model)


def test_noop_feeding_a_graph_output_keeps_the_output_name() -> None:
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Cast", ["r"], ["y"], to=TensorProto.FLOAT)]
    proto = _inferred(make_model(nodes, [tensor("x", [2, 3])], [tensor("y", [2, 3])]))
    model, result = apply_pass(NoopElimination(), proto)
    assert result.counts == {"cast": 1} and [t.name for t in model.graph.outputs] == ["y"]
    assert_same_outputs(proto, model)


NEGATIVE = {
    "cast_to_other_type": ([helper.make_node("Cast", ["x"], ["c"], to=TensorProto.DOUBLE),
                            helper.make_node("Cast", ["c"], ["a"], to=TensorProto.FLOAT)], (2, 3, 4),
                           "cast", "the Cast changes the type"),
    "reshape_changes_shape": ([helper.make_node("Reshape", ["x", "flat"], ["a"])], (6, 4),
                              "reshape", "the Reshape changes the rank"),
    "transposes_not_cancelling": ([helper.make_node("Transpose", ["x"], ["t"], perm=[1, 2, 0]),
                                   helper.make_node("Transpose", ["t"], ["a"], perm=[1, 2, 0])], (4, 2, 3),
                                  "transpose_pair", "the perms do not cancel"),
    "squeeze_other_axis": ([helper.make_node("Unsqueeze", ["x", "ax"], ["u"]),
                            helper.make_node("Squeeze", ["u", "ax0"], ["a"])], (2, 3, 4),
                           "squeeze_pair", "the Unsqueeze axes differ or are not known"),
}


@pytest.mark.parametrize("case", sorted(NEGATIVE))
def test_non_noops_are_left_alone(case: str) -> None:
    nodes, out_shape, rule, reason = NEGATIVE[case]
    inits = {"flat": np.array([6, 4], np.int64), "ax": np.array([0], np.int64), "ax0": np.array([1], np.int64)}
    if case == "squeeze_other_axis":  # squeezing axis 1 of [1, 2, 3, 4] is invalid: use a size-1 dim there
        nodes = [helper.make_node("Unsqueeze", ["x", "ax"], ["u"]), helper.make_node("Unsqueeze", ["u", "ax"], ["v"]),
                 helper.make_node("Squeeze", ["v", "ax0"], ["a"])]
        out_shape = (1, 2, 3, 4)
    assert_missed(NoopElimination(), _chain(nodes, inits, out_shape), rule, reason)


def test_cast_of_unknown_type_is_left_alone() -> None:
    nodes = [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)]
    proto = make_model(nodes, [tensor("x", [2])], [tensor("y", [2])])
    proto.graph.input[0].type.tensor_type.elem_type = TensorProto.FLOAT
    del proto.graph.value_info[:]
    model, result = apply_pass(NoopElimination(), proto)
    # x feeds the graph output directly through the Cast: bypassing it would rename an output.
    assert not result.modified and op_counts(model) == {"Cast": 1}


def test_noop_whose_output_only_if_bodies_read() -> None:
    outer = [helper.make_node("Cast", ["x"], ["pre"], to=TensorProto.FLOAT)]
    _, result = assert_nested_if_preserved(NoopElimination(), nested_if(outer=outer))
    assert result.counts == {"cast": 1}
