"""gelu-fusion: erf and tanh GELU subgraphs -> com.microsoft Gelu/FastGelu (ORT) or ONNX Gelu (opset 20)."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import helper

from infer_compile.passes.base import PassContext
from infer_compile.passes.gelu_fusion import GeluFusion
from infer_compile.targets.onnxruntime import OnnxRuntimeTarget
from tests.builders import make_model, nested_if, tensor
from tests.passes_helpers import (
    apply_pass,
    assert_missed,
    assert_nested_if_preserved,
    assert_same_outputs,
    op_counts,
)

ORT = PassContext(target="onnxruntime", capabilities=OnnxRuntimeTarget.capabilities)
PLAIN = PassContext(target="plain")
CONSTS = {"sqrt2": np.array(math.sqrt(2), np.float32), "inv_sqrt2": np.array(1 / math.sqrt(2), np.float32),
          "one": np.array(1.0, np.float32), "half": np.array(0.5, np.float32), "three": np.array(3.0, np.float32),
          "c": np.array(0.044715, np.float32), "k": np.array(math.sqrt(2 / math.pi), np.float32)}
M = helper.make_node


def _erf_gelu(variant: str) -> list[onnx.NodeProto]:
    head = [M("Div", ["x", "sqrt2"], ["s"])] if variant != "mul_scale" else [M("Mul", ["inv_sqrt2", "x"], ["s"])]
    head += [M("Erf", ["s"], ["e"]), M("Add", ["e", "one"], ["a"])]
    tails = {
        "exported": [M("Mul", ["a", "half"], ["h"]), M("Mul", ["x", "h"], ["y"])],  # what torch's exporter writes
        "mul_scale": [M("Mul", ["x", "a"], ["h"]), M("Mul", ["h", "half"], ["y"])],
        "half_x_first": [M("Mul", ["x", "half"], ["h"]), M("Mul", ["h", "a"], ["y"])],
    }
    return head + tails[variant]


TANH_GELU = [M("Pow", ["x", "three"], ["p"]), M("Mul", ["p", "c"], ["pc"]), M("Add", ["x", "pc"], ["i"]),
             M("Mul", ["i", "k"], ["ik"]), M("Tanh", ["ik"], ["t"]), M("Add", ["one", "t"], ["a"]),
             M("Mul", ["x", "a"], ["h"]), M("Mul", ["h", "half"], ["y"])]


def _model(nodes: list[onnx.NodeProto], opset: int = 18) -> onnx.ModelProto:
    used = {i for n in nodes for i in n.input}
    proto = make_model([M("Relu", ["x_in"], ["x"]), *nodes], [tensor("x_in", [2, 16])], [tensor("y", [2, 16])],
                       {k: v for k, v in CONSTS.items() if k in used}, opset=opset)
    return onnx.shape_inference.infer_shapes(proto)


def _check(proto: onnx.ModelProto, ctx: PassContext, rule: str, op: str) -> None:
    model, result = apply_pass(GeluFusion(), proto, ctx)
    assert result.counts == {rule: 1} and op_counts(model) == {"Relu": 1, op: 1}
    assert_same_outputs(proto, model, feeds={"x_in": np.linspace(-4, 4, 32, dtype=np.float32).reshape(2, 16)})


@pytest.mark.parametrize("variant", ["exported", "mul_scale", "half_x_first"])
def test_erf_gelu_becomes_ort_gelu(variant: str) -> None:
    _check(_model(_erf_gelu(variant)), ORT, "gelu_erf", "Gelu")


def test_tanh_gelu_becomes_fast_gelu() -> None:
    _check(_model(TANH_GELU), ORT, "gelu_tanh", "FastGelu")


@pytest.mark.parametrize(("nodes", "rule"), [(_erf_gelu("exported"), "gelu_erf"), (TANH_GELU, "gelu_tanh")])
def test_plain_target_gets_onnx_gelu_at_opset_20(nodes: list[onnx.NodeProto], rule: str) -> None:
    _check(_model(nodes, opset=20), PLAIN, rule, "Gelu")


def test_plain_target_below_opset_20_is_left_alone() -> None:
    assert_missed(GeluFusion(), _model(_erf_gelu("exported")), "gelu_erf",
                  "the target has no Gelu and the opset is below 20 (no ONNX Gelu)", PLAIN)


def test_wrong_constant_or_shared_intermediate_is_left_alone() -> None:
    nodes = _erf_gelu("exported")
    nodes[-2] = M("Mul", ["a", "one"], ["h"])  # 1.0 instead of 0.5: not GELU
    assert_missed(GeluFusion(), _model(nodes), "gelu_erf", "the Erf is not followed by 0.5 * x * (1 + erf)", ORT)
    shared = _model(_erf_gelu("exported"))
    shared.graph.output.append(helper.make_tensor_value_info("e", onnx.TensorProto.FLOAT, [2, 16]))
    assert_missed(GeluFusion(), shared, "gelu_erf", "the Erf output is a graph output", ORT)


def test_gelu_split_by_an_if_body_is_not_fused() -> None:
    n = helper.make_node
    outer = [n("Div", ["x", "sqrt2"], ["d"]), n("Erf", ["d"], ["e"]), n("Relu", ["x"], ["pre"])]
    inner = [n("Add", ["e", "one"], ["g"]), n("Mul", ["x", "g"], ["h"]), n("Mul", ["h", "half"], ["body"])]
    constants = {"sqrt2": np.array(np.sqrt(2.0), np.float32), "one": np.array(1.0, np.float32),
                 "half": np.array(0.5, np.float32)}
    proto = nested_if(outer=outer, inner=inner, initializers=constants, opset=20)
    _, result = assert_nested_if_preserved(GeluFusion(), proto)
    assert not result.modified
