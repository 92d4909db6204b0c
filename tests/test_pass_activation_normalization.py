"""activation-normalization: Min/Max -> Clip, Clip(0, inf) -> Relu, decomposed HardSwish -> HardSwish."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from infer_compile.passes.activation_normalization import ActivationNormalization
from tests.builders import make_model, nested_if, tensor
from tests.passes_helpers import (
    apply_pass,
    assert_missed,
    assert_nested_if_preserved,
    assert_same_outputs,
    op_counts,
)

CONSTS = {"zero": np.array(0.0, np.float32), "three": np.array(3.0, np.float32), "six": np.array(6.0, np.float32),
          "sixth": np.array(1 / 6, np.float32), "two": np.array(2.0, np.float32)}


def _model(nodes: list[onnx.NodeProto], opset: int = 17) -> onnx.ModelProto:
    used = {i for n in nodes for i in n.input}
    proto = make_model(nodes, [tensor("x", [2, 8])], [tensor("y", [2, 8])],
                       {k: v for k, v in CONSTS.items() if k in used}, opset=opset)
    return onnx.shape_inference.infer_shapes(proto)


def _relu6_then_scale(last: onnx.NodeProto) -> list[onnx.NodeProto]:
    return [helper.make_node("Add", ["x", "three"], ["s"]), helper.make_node("Clip", ["s", "zero", "six"], ["c"]),
            helper.make_node("Mul", ["x", "c"], ["p"]), last]


CASES = {
    "min_max_to_clip": ([helper.make_node("Max", ["x", "zero"], ["m"]), helper.make_node("Min", ["m", "six"], ["y"])],
                        "min_max_to_clip", {"Clip": 1}),
    "max_min_to_clip": ([helper.make_node("Min", ["six", "x"], ["m"]), helper.make_node("Max", ["m", "zero"], ["y"])],
                        "min_max_to_clip", {"Clip": 1}),
    "clip_to_relu": ([helper.make_node("Clip", ["x", "zero"], ["y"])], "clip_to_relu", {"Relu": 1}),
    "hardswish_div": (_relu6_then_scale(helper.make_node("Div", ["p", "six"], ["y"])), "hardswish", {"HardSwish": 1}),
    "hardswish_mul": (_relu6_then_scale(helper.make_node("Mul", ["sixth", "p"], ["y"])), "hardswish", {"HardSwish": 1}),
    "hardswish_hardsigmoid": ([helper.make_node("HardSigmoid", ["x"], ["h"], alpha=1 / 6),
                               helper.make_node("Mul", ["h", "x"], ["y"])], "hardswish", {"HardSwish": 1}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_activation_is_normalised(case: str) -> None:
    nodes, rule, ops = CASES[case]
    proto = _model(nodes)
    model, result = apply_pass(ActivationNormalization(), proto)
    assert result.counts == {rule: 1}
    assert result.misses == {}  # the inner nodes a rule anchored at a later node swallowed are no near-misses
    assert op_counts(model) == ops
    assert_same_outputs(proto, model)


NEGATIVE = {
    "clip_with_max": ([helper.make_node("Clip", ["x", "zero", "six"], ["y"])],
                      "clip_to_relu", "the bounds are not constant (0, inf)"),
    "clip_bounds_reversed": ([helper.make_node("Min", ["x", "zero"], ["m"]),
                              helper.make_node("Max", ["m", "six"], ["y"])],
                             "min_max_to_clip", "the lower bound is above the upper bound"),
    "shift_not_three": ([helper.make_node("Add", ["x", "two"], ["s"]),
                         helper.make_node("Clip", ["s", "zero", "six"], ["c"]),
                         helper.make_node("Mul", ["x", "c"], ["p"]), helper.make_node("Div", ["p", "six"], ["y"])],
                        "hardswish", "the product scaled by 1/6 is not x * Clip(x + 3, 0, 6)"),
    "hardsigmoid_default_alpha": ([helper.make_node("HardSigmoid", ["x"], ["h"]),
                                   helper.make_node("Mul", ["h", "x"], ["y"])],
                                  "hardswish", "neither x * HardSigmoid(x) nor a product scaled by 1/6"),
}


@pytest.mark.parametrize("case", sorted(NEGATIVE))
def test_other_forms_are_left_alone(case: str) -> None:
    nodes, rule, reason = NEGATIVE[case]
    assert_missed(ActivationNormalization(), _model(nodes), rule, reason)


def test_hardswish_needs_opset_14() -> None:
    assert_missed(ActivationNormalization(), _model(CASES["hardswish_div"][0], opset=13), "hardswish",
                  "the opset is below 14 (no HardSwish)")


def test_min_max_pair_split_by_an_if_body_is_not_fused() -> None:
    outer = [helper.make_node("Max", ["x", "zero"], ["pre"])]
    inner = [helper.make_node("Min", ["pre", "six"], ["body"])]
    proto = nested_if(outer=outer, inner=inner,
                      initializers={"zero": np.array(0.0, np.float32), "six": np.array(6.0, np.float32)})
    _, result = assert_nested_if_preserved(ActivationNormalization(), proto)
    assert not result.modified
