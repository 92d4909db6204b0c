"""skip-layernorm-fusion: residual Add + LayerNormalization -> com.microsoft SkipLayerNormalization."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from infer_compile.core.capabilities import Capability
from infer_compile.core.ir import Model
from infer_compile.passes.base import PassContext
from infer_compile.passes.manager import PassManager
from infer_compile.passes.skip_layernorm_fusion import SkipLayerNormFusion
from infer_compile.targets.onnxruntime import OnnxRuntimeTarget
from tests.builders import make_model, nested_if, tensor
from tests.passes_helpers import (
    apply_pass,
    assert_missed,
    assert_nested_if_preserved,
    assert_same_outputs,
    op_counts,
    rand,
)

ORT = PassContext(target="onnxruntime", capabilities=OnnxRuntimeTarget.capabilities)
M = helper.make_node


def _residual_ln(skip_shape: list[int] | None = None, gamma_is_input: bool = False) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes = [M("MatMul", ["x", "w"], ["h"]), M("Add", ["h", "x"] if skip_shape is None else ["h", "skip"], ["s"]),
             M("LayerNormalization", ["s", "gamma", "beta"], ["y"], axis=-1, epsilon=1e-6)]
    inits = {"w": rand(rng, 16, 16, scale=0.25), "gamma": rng.uniform(0.5, 1.5, 16).astype(np.float32),
             "beta": rand(rng, 16)}
    inputs = [tensor("x", [2, 4, 16])] + ([tensor("skip", skip_shape)] if skip_shape else [])
    if gamma_is_input:
        inputs.append(tensor("gamma", [16]))
        del inits["gamma"]
    proto = make_model(nodes, inputs, [tensor("y", [2, 4, 16])], inits)
    return onnx.shape_inference.infer_shapes(proto)


def test_residual_add_layernorm_fuses() -> None:
    proto = _residual_ln()
    model, result = apply_pass(SkipLayerNormFusion(), proto, ORT)
    assert result.counts == {"skip_layernorm": 1}
    assert op_counts(model) == {"MatMul": 1, "SkipLayerNormalization": 1}
    assert_same_outputs(proto, model)


def test_broadcast_skip_or_runtime_gamma_is_left_alone() -> None:
    assert_missed(SkipLayerNormFusion(), _residual_ln(skip_shape=[1, 4, 16]), "skip_layernorm",
                  "the Add inputs differ in shape (broadcasting)", ORT)
    assert_missed(SkipLayerNormFusion(), _residual_ln(gamma_is_input=True), "skip_layernorm",
                  "scale or bias is not a constant", ORT)


def test_skipped_for_targets_without_the_op() -> None:
    [record] = PassManager([SkipLayerNormFusion()]).run(Model.from_proto(_residual_ln()), PassContext()).records
    assert record.status == "skipped" and "SkipLayerNormalization" in record.reason


def test_residual_sum_read_by_if_bodies_is_not_fused() -> None:
    outer = [helper.make_node("Add", ["x", "k"], ["sum"]),
             helper.make_node("LayerNormalization", ["sum", "gamma", "beta"], ["pre"], axis=-1)]
    inner = [helper.make_node("Sub", ["pre", "sum"], ["body"])]
    proto = nested_if(outer=outer, inner=inner, initializers={"gamma": np.ones(4, np.float32),
                                                              "beta": np.zeros(4, np.float32)})
    ctx = PassContext(capabilities=frozenset({Capability.SKIP_LAYER_NORMALIZATION}))
    _, result = assert_nested_if_preserved(SkipLayerNormFusion(), proto, ctx)
    assert not result.modified
