"""attention-fusion: spelt-out scaled-dot-product attention -> com.microsoft MultiHeadAttention (ORT)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from infer_compile.core.capabilities import Capability
from infer_compile.core.ir import Model
from infer_compile.passes.attention_fusion import AttentionFusion
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
M = helper.make_node
B, S, N, H = 2, 5, 2, 4
D = N * H


def _attention(mask: bool = True, k_transposes: tuple[list[int], ...] = ([0, 2, 3, 1],), scale_split: bool = False,
               nan_guard: bool = False, softmax_axis: int = -1, scale_shape: tuple[int, ...] = (),
               k_split: str = "heads") -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = {f"w{c}": rand(rng, D, D, scale=0.5) for c in "qkv"}
    inits |= {"heads": np.array([B, S, N, H], np.int64), "heads_last": np.array([B, S, H, N], np.int64),
              "merged": np.array([B, S, D], np.int64),
              "zero": np.array(0.0, np.float32), "root": np.full(scale_shape, H ** -0.25, np.float32),
              "sqrt_h": np.full(scale_shape, np.sqrt(H), np.float32)}
    nodes = [M("MatMul", ["x", f"w{c}"], [c]) for c in "qkv"]
    nodes += [M("Reshape", [c, k_split if c == "k" else "heads"], [f"{c}4"]) for c in "qkv"]
    nodes += [M("Transpose", ["q4"], ["qh"], perm=[0, 2, 1, 3]), M("Transpose", ["v4"], ["vh"], perm=[0, 2, 1, 3])]
    k = "k4"
    for i, perm in enumerate(k_transposes):
        nodes.append(M("Transpose", [k], [f"kt{i}"], perm=perm))
        k = f"kt{i}"
    if scale_split:  # the exporter's way: sqrt of the scale on each of Q and K
        nodes += [M("Mul", ["qh", "root"], ["qs"]), M("Mul", [k, "root"], ["ks"]), M("MatMul", ["qs", "ks"], ["qk"])]
        scores = "qk"
    else:
        nodes += [M("MatMul", ["qh", k], ["qk"]), M("Div", ["qk", "sqrt_h"], ["scaled"])]
        scores = "scaled"
    if mask:
        nodes.append(M("Add", ["bias", scores], ["masked"]))
        scores = "masked"
    nodes.append(M("Softmax", [scores], ["p"], axis=softmax_axis))
    probs = "p"
    if nan_guard:
        nodes += [M("IsNaN", ["p"], ["nan"]), M("Where", ["nan", "zero", "p"], ["pg"])]
        probs = "pg"
    nodes += [M("MatMul", [probs, "vh"], ["ctx"]), M("Transpose", ["ctx"], ["ctx_t"], perm=[0, 2, 1, 3]),
              M("Reshape", ["ctx_t", "merged"], ["y"])]
    used = {i for n in nodes for i in n.input}
    inputs = [tensor("x", [B, S, D])] + ([tensor("bias", [B, 1, 1, S])] if mask else [])
    proto = make_model(nodes, inputs, [tensor("y", [B, S, D])], {k: v for k, v in inits.items() if k in used})
    return onnx.shape_inference.infer_shapes(proto)


CASES = {
    "masked": {},
    "exporter_style": {"mask": False, "scale_split": True, "nan_guard": True},
    "k_transposed_in_two_steps": {"k_transposes": ([0, 3, 2, 1], [0, 2, 1, 3])},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_attention_fuses(case: str) -> None:
    proto = _attention(**CASES[case])
    model, result = apply_pass(AttentionFusion(), proto, ORT)
    assert result.counts == {"multi_head_attention": 1}
    expected = {"MatMul": 3, "MultiHeadAttention": 1, **({"Expand": 1} if CASES[case].get("mask", True) else {})}
    assert op_counts(model) == expected
    assert_same_outputs(proto, model)


NEGATIVE = {
    "softmax_over_queries": ({"softmax_axis": 2}, "the Softmax is not over the last axis"),
    "per_key_scale": ({"scale_shape": (S,)}, "the scores are not Q K^T [* scalar] [+ mask]"),
    # K split as [B, S, H, N]: the shapes still line up for the MatMul, but each "head" mixes heads.
    "k_heads_interleaved": ({"k_split": "heads_last", "k_transposes": ([0, 3, 2, 1],)},
                            "the key is not a [B, S, D] tensor split into heads and transposed"),
}


@pytest.mark.parametrize("case", sorted(NEGATIVE))
def test_non_attention_is_left_alone(case: str) -> None:
    spec, reason = NEGATIVE[case]
    assert_missed(AttentionFusion(), _attention(**spec), "multi_head_attention", reason, ORT)


def test_intermediate_read_elsewhere_is_left_alone() -> None:
    proto = _attention()
    proto.graph.output.append(helper.make_tensor_value_info("p", onnx.TensorProto.FLOAT, [B, N, S, S]))
    assert_missed(AttentionFusion(), proto, "multi_head_attention", "the Softmax output is a graph output", ORT)


def test_target_without_multi_head_attention_skips_the_pass() -> None:
    [record] = PassManager([AttentionFusion()]).run(Model.from_proto(_attention()), PassContext()).records
    assert record.status == "skipped" and "MultiHeadAttention" in record.reason


def test_softmax_read_by_if_bodies_is_not_fused() -> None:
    outer = [helper.make_node("MatMul", ["x", "w"], ["scores"]), helper.make_node("Softmax", ["scores"], ["pre"])]
    inner = [helper.make_node("MatMul", ["pre", "w"], ["body"])]
    ctx = PassContext(capabilities=frozenset({Capability.MULTI_HEAD_ATTENTION}))
    _, result = assert_nested_if_preserved(AttentionFusion(), nested_if(outer=outer, inner=inner), ctx)
    assert not result.modified
