"""batchnorm-folding: BN after Conv, ConvTranspose (grouped), Gemm and 2-D MatMul folds into weights."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from infer_compile.passes.batchnorm_folding import BatchNormFolding
from tests.builders import make_model, nested_if, tensor
from tests.passes_helpers import (
    apply_pass,
    assert_missed,
    assert_nested_if_preserved,
    assert_same_outputs,
    op_counts,
    rand,
)


def _bn_inits(rng: np.random.Generator, c: int) -> dict[str, np.ndarray]:
    return {"g": rng.uniform(0.5, 1.5, c).astype(np.float32), "b": rand(rng, c, scale=0.1),
            "m": rand(rng, c, scale=0.1), "v": rng.uniform(0.5, 1.5, c).astype(np.float32)}


def _with_bn(op: str, x_shape: list[int], y_shape: list[int], weight: np.ndarray, attrs: dict,
             bias: bool = True, seed: int = 0, bn_inputs: tuple[str, ...] = ("g", "b", "m", "v")) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    c = y_shape[1]
    inits = {"w": weight, **_bn_inits(rng, c)}
    inputs = ["x", "w"]
    if bias:
        inits["bias"] = rand(rng, c, scale=0.1)
        inputs.append("bias")
    nodes = [helper.make_node(op, inputs, ["h"], **attrs),
             helper.make_node("BatchNormalization", ["h", *bn_inputs], ["y"], epsilon=1e-3)]
    graph_inputs = [tensor("x", x_shape)] + [tensor(n, [c]) for n in bn_inputs if n not in inits]
    model = make_model(nodes, graph_inputs, [tensor("y", y_shape)], {k: v for k, v in inits.items() if k in
                                                                       {"w", "bias", *bn_inputs}})
    return onnx.shape_inference.infer_shapes(model)


RNG = np.random.default_rng(1)
CASES = {
    "conv": ("Conv", [1, 4, 6, 6], [1, 8, 6, 6], rand(RNG, 8, 4, 3, 3), {"pads": [1, 1, 1, 1]}),
    "conv_grouped_no_bias": ("Conv", [1, 4, 6, 6], [1, 8, 6, 6], rand(RNG, 8, 2, 3, 3),
                             {"pads": [1, 1, 1, 1], "group": 2}),
    "conv_transpose_grouped": ("ConvTranspose", [1, 4, 5, 5], [1, 6, 10, 10], rand(RNG, 4, 3, 2, 2),
                               {"strides": [2, 2], "group": 2}),
    "gemm_transposed": ("Gemm", [3, 5], [3, 7], rand(RNG, 7, 5), {"transB": 1, "beta": 0.5}),
    "matmul": ("MatMul", [3, 5], [3, 7], rand(RNG, 5, 7), {}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_batchnorm_folds(case: str) -> None:
    op, x_shape, y_shape, weight, attrs = CASES[case]
    proto = _with_bn(op, x_shape, y_shape, weight, attrs, bias=op not in ("MatMul",) and "no_bias" not in case)
    model, result = apply_pass(BatchNormFolding(), proto)
    assert result.counts == {"batchnorm": 1}
    assert op_counts(model) == {("Gemm" if op == "MatMul" else op): 1}
    assert_same_outputs(proto, model)


def test_shared_weight_is_left_alone() -> None:
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["h"]),
             helper.make_node("BatchNormalization", ["h", "g", "b", "m", "v"], ["y"]),
             helper.make_node("Conv", ["x", "w"], ["z"])]
    proto = make_model(nodes, [tensor("x", [1, 2, 4, 4])], [tensor("y", [1, 3, 4, 4]), tensor("z", [1, 3, 4, 4])],
                       {"w": rand(rng, 3, 2, 1, 1), **_bn_inits(rng, 3)})
    assert_missed(BatchNormFolding(), proto, "batchnorm", "the Conv weight is not a constant only it reads")


def test_conv_output_read_elsewhere_is_left_alone() -> None:
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["h"]),
             helper.make_node("BatchNormalization", ["h", "g", "b", "m", "v"], ["y"]),
             helper.make_node("Relu", ["h"], ["z"])]
    proto = make_model(nodes, [tensor("x", [1, 2, 4, 4])], [tensor("y", [1, 3, 4, 4]), tensor("z", [1, 3, 4, 4])],
                       {"w": rand(rng, 3, 2, 1, 1), **_bn_inits(rng, 3)})
    assert_missed(BatchNormFolding(), proto, "batchnorm", "the Conv output has 2 consumers")


def test_near_misses_are_counted_with_a_few_examples() -> None:
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("BatchNormalization", [f"h{i}", "g", "b", "m", "v"], [f"y{i}"], name=f"bn{i}")
             for i in range(5)]
    proto = make_model(nodes, [tensor(f"h{i}", [1, 3, 4, 4]) for i in range(5)],
                       [tensor(f"y{i}", [1, 3, 4, 4]) for i in range(5)], _bn_inits(rng, 3))
    result = apply_pass(BatchNormFolding(), proto)[1]
    reason = "the input is not produced by Conv/ConvTranspose/Gemm/MatMul"
    assert result.misses == {"batchnorm": {reason: {"count": 5, "examples": ["bn0", "bn1", "bn2"]}}}
    assert_missed(BatchNormFolding(), proto, "batchnorm", reason)


def test_non_constant_bn_parameter_is_left_alone() -> None:
    op, x_shape, y_shape, weight, attrs = CASES["conv"]
    proto = _with_bn(op, x_shape, y_shape, weight, attrs, bn_inputs=("g", "b", "m", "var_in"))
    assert_missed(BatchNormFolding(), proto, "batchnorm", "var is not a constant")


def test_matmul_on_3d_input_is_left_alone() -> None:
    # BN's channel axis (1) is the sequence axis here, not the MatMul's output features.
    proto = _with_bn("MatMul", [2, 7, 5], [2, 7, 7], rand(np.random.default_rng(2), 5, 7), {}, bias=False)
    assert_missed(BatchNormFolding(), proto, "batchnorm", "the MatMul input is not known to be 2-D")


def test_nested_if_model_is_preserved() -> None:
    assert_nested_if_preserved(BatchNormFolding(), nested_if())
