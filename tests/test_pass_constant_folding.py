"""constant-folding: constant subgraphs are computed at build time, within a size limit."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from infer_compile.core.ir import Model
from infer_compile.passes.base import PassContext
from infer_compile.passes.constant_folding import ConstantFolding
from infer_compile.passes.shape_inference import ShapeInference
from tests.builders import make_model, nested_if_static_condition, tensor, tiny_cnn
from tests.passes_helpers import apply_pass, assert_same_outputs, assert_unchanged, op_counts


def test_folds_constant_subexpression() -> None:
    proto = tiny_cnn()
    model, result = apply_pass(ConstantFolding(), proto)
    assert result.counts == {"nodes_folded": 1}
    assert op_counts(model)["Mul"] == op_counts(proto)["Mul"] - 1
    assert_same_outputs(proto, model)


def test_folds_static_shape_computation() -> None:
    # Reshape target computed from Shape(x): foldable once x's shape is static.
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "zero_axes"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus_one"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"]),
    ]
    proto = make_model(nodes, [tensor("x", [2, 3, 4])], [tensor("y", [2, 12])],
                       {"zero": np.array(0, np.int64), "zero_axes": np.array([0], np.int64),
                        "minus_one": np.array([-1], np.int64)})
    model, result = apply_pass(ConstantFolding(), proto)
    assert [n.op for n in model.graph.nodes] == ["Reshape"]
    assert result.counts["nodes_folded"] == 4
    assert_same_outputs(proto, model)


def test_graph_inputs_are_never_folded() -> None:
    proto = make_model([helper.make_node("Mul", ["x", "two"], ["y"])], [tensor("x", [3])], [tensor("y", [3])],
                       {"two": np.array(2.0, np.float32)})
    assert_unchanged(ConstantFolding(), proto)


def test_size_limit_keeps_large_results_as_computation() -> None:
    nodes = [helper.make_node("Expand", ["one", "shape"], ["big"]), helper.make_node("Add", ["x", "big"], ["y"])]
    proto = make_model(nodes, [tensor("x", [256, 256])], [tensor("y", [256, 256])],
                       {"one": np.array([1.0], np.float32), "shape": np.array([256, 256], np.int64)})
    assert_unchanged(ConstantFolding(), proto, PassContext(options={"fold_size_limit": 0}))  # MiB
    model, result = apply_pass(ConstantFolding(), proto)  # default limit: 64 MiB
    assert result.counts == {"nodes_folded": 1}
    assert_same_outputs(proto, model)


def test_nested_if_keeps_every_branch_output() -> None:
    # graphsurgeon's flattening of the statically true outer If lost its second output ('b' undefined).
    proto = nested_if_static_condition()
    model = Model.from_proto(proto)
    ShapeInference().run(model, PassContext())
    result = ConstantFolding().run(model, PassContext())
    onnx.checker.check_model(model.to_proto(), full_check=True)
    assert result.counts["nodes_folded"] >= 3  # Shape -> Gather -> Equal became a constant condition
    for flag in (True, False):
        assert_same_outputs(proto, model, feeds={"x": np.arange(6, dtype=np.float32).reshape(2, 3),
                                                 "flag": np.array(flag)})


@pytest.mark.parametrize(("start", "end"), [(1, None), (0, 2), (-1, None), (1, -1), (2, 1)])
def test_shape_start_end_are_honoured(start: int, end: int | None) -> None:
    # Reshape(x, Concat([-1], Shape(x)[start:end])): folding the full shape would change y's rank.
    attrs = {"start": start} | ({} if end is None else {"end": end})
    nodes = [helper.make_node("Shape", ["x"], ["s"], **attrs),
             helper.make_node("Concat", ["minus_one", "s"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["y"])]
    dims = [2, 3, 4][slice(start, end)]
    proto = make_model(nodes, [tensor("x", [2, 3, 4])], [tensor("y", [None] * (1 + len(dims)))],
                       {"minus_one": np.array([-1], np.int64)})
    model, result = apply_pass(ConstantFolding(), proto)
    assert "Shape" not in op_counts(model) and result.counts["nodes_folded"] == 2
    assert_same_outputs(proto, model)
