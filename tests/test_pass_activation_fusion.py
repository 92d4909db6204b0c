"""activation-fusion: Conv[+Add]+activation -> FusedConv, Gemm+activation -> FusedGemm (ORT contrib ops)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from infer_compile.core.capabilities import Capability
from infer_compile.passes.activation_fusion import ActivationFusion
from infer_compile.passes.base import PassContext
from infer_compile.passes.manager import PassManager
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
ACT_ATTRS = {"Relu": {}, "LeakyRelu": {"alpha": 0.2}, "HardSigmoid": {"alpha": 0.3, "beta": 0.4},
             "Sigmoid": {}, "Tanh": {}, "Clip": {}}


def _conv_act(act: str, residual: bool = False, bias: bool = True, z_shape: list[int] | None = None) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = {"w": rand(rng, 4, 3, 3, 3), "b": rand(rng, 4), "lo": np.array(-0.5, np.float32),
             "hi": np.array(0.5, np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"] if bias else ["x", "w"], ["c"], pads=[1, 1, 1, 1])]
    inputs = [tensor("x", [1, 3, 6, 6])]
    if residual:
        nodes.append(helper.make_node("Add", ["z", "c"], ["s"]))
        inputs.append(tensor("z", z_shape or [1, 4, 6, 6]))
    act_in = ["s" if residual else "c"] + (["lo", "hi"] if act == "Clip" else [])
    nodes.append(helper.make_node(act, act_in, ["y"], **ACT_ATTRS[act]))
    used = {i for n in nodes for i in n.input}
    proto = make_model(nodes, inputs, [tensor("y", [1, 4, 6, 6])], {k: v for k, v in inits.items() if k in used})
    return onnx.shape_inference.infer_shapes(proto)


@pytest.mark.parametrize("act", sorted(ACT_ATTRS))
def test_conv_activation_fuses(act: str) -> None:
    proto = _conv_act(act)
    model, result = apply_pass(ActivationFusion(), proto, ORT)
    assert result.counts == {"fused_conv": 1} and op_counts(model) == {"FusedConv": 1}
    assert_same_outputs(proto, model)


@pytest.mark.parametrize("bias", [True, False])
def test_conv_residual_add_relu_fuses(bias: bool) -> None:
    proto = _conv_act("Relu", residual=True, bias=bias)
    model, result = apply_pass(ActivationFusion(), proto, ORT)
    assert result.counts == {"fused_conv": 1} and op_counts(model) == {"FusedConv": 1}
    assert_same_outputs(proto, model)


def test_broadcast_residual_is_not_fused_into_z() -> None:
    # Z must match the conv output exactly; a broadcast add stays, the conv alone cannot take the Relu.
    assert_missed(ActivationFusion(), _conv_act("Relu", residual=True, z_shape=[1, 4, 1, 1]), "fused_conv",
                  "the Add is not Conv + an fp32 residual of the same known shape", ORT)


def test_gemm_activation_fuses() -> None:
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["g"], transB=1),
             helper.make_node("LeakyRelu", ["g"], ["y"], alpha=0.3)]
    proto = make_model(nodes, [tensor("x", [2, 5])], [tensor("y", [2, 3])], {"w": rand(rng, 3, 5), "b": rand(rng, 3)})
    model, result = apply_pass(ActivationFusion(), onnx.shape_inference.infer_shapes(proto), ORT)
    assert result.counts == {"fused_gemm": 1} and op_counts(model) == {"FusedGemm": 1}
    assert_same_outputs(proto, model)
    no_gemm = PassContext(capabilities=frozenset({Capability.FUSED_CONV}))
    assert_missed(ActivationFusion(), onnx.shape_inference.infer_shapes(proto), "fused_gemm",
                  "the target has no FusedGemm", no_gemm)


def test_conv_output_read_twice_is_left_alone() -> None:
    proto = _conv_act("Relu")
    proto.graph.output.append(helper.make_tensor_value_info("c", onnx.TensorProto.FLOAT, [1, 4, 6, 6]))
    assert_missed(ActivationFusion(), proto, "fused_conv", "the Conv output is a graph output", ORT)


def test_target_without_fused_ops_skips_the_pass() -> None:
    from infer_compile.core.ir import Model

    model = Model.from_proto(_conv_act("Relu"))
    [record] = PassManager([ActivationFusion()]).run(model, PassContext(target="plain")).records
    assert record.status == "skipped" and "FusedConv" in record.reason
    assert Capability.FUSED_GEMM in OnnxRuntimeTarget.capabilities


def test_gemm_output_read_by_if_bodies_is_not_fused() -> None:
    outer = [helper.make_node("Gemm", ["x", "w"], ["g"]), helper.make_node("Relu", ["g"], ["pre"])]
    inner = [helper.make_node("Sub", ["pre", "g"], ["body"])]
    ctx = PassContext(capabilities=frozenset({Capability.FUSED_CONV, Capability.FUSED_GEMM}))
    _, result = assert_nested_if_preserved(ActivationFusion(), nested_if(outer=outer, inner=inner), ctx)
    assert not result.modified
