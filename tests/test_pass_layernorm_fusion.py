"""layernorm-fusion: decomposed layer norm over the last axis -> LayerNormalization (opset >= 17)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from infer_compile.passes.layernorm_fusion import LayerNormFusion
from tests.builders import make_model, nested_if, tensor
from tests.passes_helpers import (
    apply_pass,
    assert_missed,
    assert_nested_if_preserved,
    assert_same_outputs,
    op_counts,
    rand,
)

M = helper.make_node


def _decomposed(affine: bool = True, square: str = "Pow", axis: int = -1, opset: int = 18,
                gamma_shape: tuple[int, ...] = (8,)) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = {"ax": np.array([axis], np.int64), "two": np.array(2.0, np.float32), "eps": np.array(1e-5, np.float32),
             "gamma": rng.uniform(0.5, 1.5, gamma_shape).astype(np.float32), "beta": rand(rng, *gamma_shape)}
    sq = M("Pow", ["d", "two"], ["sq"]) if square == "Pow" else M("Mul", ["d", "d"], ["sq"])
    nodes = [M("Relu", ["x_in"], ["x"]), M("ReduceMean", ["x", "ax"], ["m"]), M("Sub", ["x", "m"], ["d"]), sq,
             M("ReduceMean", ["sq", "ax"], ["v"]), M("Add", ["v", "eps"], ["ve"]), M("Sqrt", ["ve"], ["s"]),
             M("Div", ["d", "s"], ["n" if affine else "y"])]
    if affine:
        nodes += [M("Mul", ["n", "gamma"], ["g"]), M("Add", ["beta", "g"], ["y"])]
    used = {i for n in nodes for i in n.input}
    proto = make_model(nodes, [tensor("x_in", [2, 3, 8])], [tensor("y", [2, 3, 8])],
                       {k: v for k, v in inits.items() if k in used}, opset=opset)
    return onnx.shape_inference.infer_shapes(proto)


@pytest.mark.parametrize(("affine", "square"), [(True, "Pow"), (False, "Mul")])
def test_decomposed_layernorm_fuses(affine: bool, square: str) -> None:
    proto = _decomposed(affine, square)
    model, result = apply_pass(LayerNormFusion(), proto)
    assert result.counts == {"layernorm": 1}
    assert op_counts(model) == {"Relu": 1, "LayerNormalization": 1}
    assert_same_outputs(proto, model)


def test_gamma_varying_along_other_axes_stays_outside() -> None:
    proto = _decomposed(gamma_shape=(3, 8))
    model, result = apply_pass(LayerNormFusion(), proto)
    # The normalisation fuses; the [3, 8] scale cannot be LayerNormalization's 1-D gamma.
    assert result.counts == {"layernorm": 1}
    assert op_counts(model) == {"Relu": 1, "LayerNormalization": 1, "Mul": 1, "Add": 1}
    assert_same_outputs(proto, model)


@pytest.mark.parametrize("case", ["other_axis", "old_opset"])
def test_unsupported_forms_are_left_alone(case: str) -> None:
    proto = _decomposed(axis=1) if case == "other_axis" else None
    if case == "old_opset":  # ReduceMean takes axes as an attribute before opset 18
        proto = _decomposed(opset=18)
        proto.opset_import[0].version = 16
        for node in proto.graph.node:
            if node.op_type == "ReduceMean":
                del node.input[1]
                node.attribute.append(helper.make_attribute("axes", [-1]))
    reason = {"other_axis": "the ReduceMean is not over the last axis alone with keepdims",
              "old_opset": "the opset is below 17 (no LayerNormalization)"}[case]
    assert_missed(LayerNormFusion(), proto, "layernorm", reason)


def test_layernorm_split_by_an_if_body_is_not_fused() -> None:
    n = helper.make_node
    outer = [n("ReduceMean", ["x"], ["mean"], axes=[-1]), n("Sub", ["x", "mean"], ["d"]),
             n("Mul", ["d", "d"], ["sq"]), n("ReduceMean", ["sq"], ["var"], axes=[-1]), n("Relu", ["x"], ["pre"])]
    inner = [n("Add", ["var", "eps"], ["ve"]), n("Sqrt", ["ve"], ["sd"]), n("Div", ["d", "sd"], ["body"])]
    proto = nested_if(outer=outer, inner=inner, initializers={"eps": np.array(1e-5, np.float32)})
    _, result = assert_nested_if_preserved(LayerNormFusion(), proto)
    assert not result.modified
