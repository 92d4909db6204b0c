"""pad-folding: a zero constant Pad over spatial dims merges into Conv / AveragePool pads."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from infer_compile.passes.pad_folding import PadFolding
from tests.builders import make_model, nested_if, tensor
from tests.passes_helpers import (
    apply_pass,
    assert_missed,
    assert_nested_if_preserved,
    assert_same_outputs,
    op_counts,
    rand,
)


def _pad_then(op: str, pads: list[int], op_attrs: dict, fill: float | None = None, mode: str = "constant",
              out_hw: int = 7) -> onnx.ModelProto:
    inputs = ["x", "pads"] + (["fill"] if fill is not None else [])
    inits = {"pads": np.array(pads, np.int64), "w": rand(np.random.default_rng(0), 2, 3, 3, 3)}
    if fill is not None:
        inits["fill"] = np.array(fill, np.float32)
    consumer_inputs = ["p", "w"] if op == "Conv" else ["p"]
    nodes = [helper.make_node("Pad", inputs, ["p"], mode=mode),
             helper.make_node(op, consumer_inputs, ["y"], **op_attrs)]
    channels = 2 if op == "Conv" else 3
    proto = make_model(nodes, [tensor("x", [1, 3, 6, 6])], [tensor("y", [1, channels, out_hw, out_hw])], inits)
    return onnx.shape_inference.infer_shapes(proto)


CASES = {
    "conv": ("Conv", [0, 0, 1, 2, 0, 0, 2, 1], {"pads": [0, 0, 0, 0]}, 7),
    "conv_with_own_pads": ("Conv", [0, 0, 1, 1, 0, 0, 1, 1], {"pads": [1, 1, 1, 1], "strides": [2, 2]}, 4),
    "average_pool": ("AveragePool", [0, 0, 1, 1, 0, 0, 1, 1], {"kernel_shape": [2, 2], "count_include_pad": 1}, 7),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_pad_folds(case: str) -> None:
    op, pads, attrs, hw = CASES[case]
    proto = _pad_then(op, pads, attrs, fill=0.0 if case == "conv" else None, out_hw=hw)
    model, result = apply_pass(PadFolding(), proto)
    assert result.counts == {"pad": 1} and op_counts(model) == {op: 1}
    assert_same_outputs(proto, model)


def test_unfoldable_pads_are_left_alone() -> None:
    pads = [0, 0, 1, 1, 0, 0, 1, 1]
    assert_missed(PadFolding(), _pad_then("Conv", pads, {}, fill=1.0, out_hw=6), "pad", "the pad value is not 0")
    assert_missed(PadFolding(), _pad_then("Conv", pads, {}, mode="reflect", out_hw=6), "pad", "the Pad mode is reflect")
    assert_missed(PadFolding(), _pad_then("AveragePool", pads, {"kernel_shape": [3, 3]}, out_hw=6), "pad",
                  "the AveragePool does not count padded zeros (count_include_pad=0)")


def test_nested_if_model_is_preserved() -> None:
    assert_nested_if_preserved(PadFolding(), nested_if())
