"""Attention fusion: scaled-dot-product attention spelt out in MatMul/Softmax/Reshape/Transpose ops
becomes ONNX Runtime's com.microsoft MultiHeadAttention.

Matched (any reshape/transpose spelling whose data movement is the standard one; checked by
running the layout ops on an index tensor):
    Q, K, V [B, S, D] -> heads [B, N, S, H] (K as [B, N, H, S]) -> optional scalar scales
    -> MatMul -> optional scalar scale -> optional additive mask -> Softmax(-1)
    -> optional NaN guard Where(IsNaN(p), 0, p) -> MatMul V -> back to [B, S, D].
One difference is accepted: with a NaN guard, a query that can see no key at all (every key
masked) gives 0 in the original and not in the fused op.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from infer_compile.core.capabilities import Capability
from infer_compile.passes.base import PassContext
from infer_compile.passes.graph_utils import (
    MS_DOMAIN,
    add_node,
    constant,
    is_float32,
    is_scalar,
    known_shape,
    new_constant,
    other_input,
    produced_by,
    read_only_by,
    replace_nodes,
    scalar_value,
    sole_consumer,
)
from infer_compile.passes.rewrite import Miss, Outcome, RewritePass, consumer_miss

LAYOUT_OPS = ("Reshape", "Transpose")


def _apply_layout(values: np.ndarray, nodes: list[gs.Node]) -> np.ndarray | None:
    """``values`` moved through Reshape/Transpose ``nodes`` (None when a target shape is not constant)."""
    for node in nodes:
        if node.op == "Transpose":
            values = values.transpose(node.attrs.get("perm", list(range(values.ndim))[::-1]))
            continue
        target = constant(node.inputs[1])
        if target is None:
            return None
        copy_zero = not node.attrs.get("allowzero", 0)
        shape = [values.shape[i] if d == 0 and copy_zero else int(d) for i, d in enumerate(target)]
        try:
            values = values.reshape(shape)
        except ValueError:
            return None
    return values


def _unscaled(graph: gs.Graph, t: gs.Tensor) -> tuple[gs.Tensor, float, list[gs.Node]]:
    """(input, factor, [node]) when ``t`` is input * scalar or input / scalar, else (t, 1, [])."""
    node = produced_by(t, ("Mul", "Div"))
    if node is None or sole_consumer(graph, t) is None or len(node.inputs) != 2:
        return t, 1.0, []
    if node.op == "Div":
        c = scalar_value(node.inputs[1])
        return (node.inputs[0], 1.0 / c, [node]) if c else (t, 1.0, [])
    for x in node.inputs:
        c = scalar_value(other_input(node, x))
        if c is not None and constant(x) is None:
            return x, c, [node]
    return t, 1.0, []


def _heads_source(graph: gs.Graph, heads: gs.Tensor, perm: tuple[int, ...],
                  num_heads: int) -> tuple[gs.Tensor, list[gs.Node]] | None:
    """(x [B, S, D], layout nodes) when ``heads`` is x split into ``num_heads`` heads and permuted by ``perm``."""
    chain: list[gs.Node] = []
    t = heads
    while (node := produced_by(t, LAYOUT_OPS)) is not None and sole_consumer(graph, t) is not None:
        chain.insert(0, node)
        t = node.inputs[0]
    for start in range(len(chain)):  # the longest chain whose source is a plain [B, S, D] tensor
        source, nodes = chain[start].inputs[0], chain[start:]
        shape = known_shape(source)
        if shape is None or len(shape) != 3 or shape[2] % num_heads:
            continue
        index = np.arange(int(np.prod(shape))).reshape(shape)
        expected = index.reshape(*shape[:2], num_heads, shape[2] // num_heads).transpose(perm)
        moved = _apply_layout(index, nodes)
        if moved is not None and moved.shape == expected.shape and np.array_equal(moved, expected):
            return source, nodes
    return None


def _merged_heads(graph: gs.Graph, context: gs.Tensor) -> tuple[gs.Tensor, list[gs.Node]] | None:
    """(y [B, S, D], layout nodes) when ``context`` [B, N, S, H] is merged back to [B, S, N*H] by them."""
    shape = known_shape(context)
    if shape is None or len(shape) != 4:
        return None
    b, n, s, h = shape
    index = np.arange(b * s * n * h).reshape(b, s, n, h)
    moved: np.ndarray = index.transpose(0, 2, 1, 3)
    nodes, t = [], context
    expected = index.reshape(b, s, n * h)
    while (node := sole_consumer(graph, t, LAYOUT_OPS)) is not None:
        nodes.append(node)
        t = node.outputs[0]
        applied = _apply_layout(moved, [node])
        if applied is None:
            return None
        moved = applied
        if moved.shape == expected.shape and np.array_equal(moved, expected):
            return t, nodes
    return None


def _nan_guarded(graph: gs.Graph, softmax: gs.Node) -> tuple[gs.Tensor, list[gs.Node]]:
    """(probabilities, guard nodes): Where(IsNaN(p), 0, p) after the Softmax, if that is what follows."""
    p = softmax.outputs[0]
    readers = {id(n): n for n in p.outputs}.values()
    isnan = next((n for n in readers if n.op == "IsNaN"), None)
    where = sole_consumer(graph, isnan.outputs[0], "Where") if isnan is not None else None
    if where is None or len(readers) != 2 or where.inputs[2] is not p or not is_scalar(where.inputs[1], 0.0):
        return p, []
    return where.outputs[0], [isnan, where]


def _attention_bias(graph: gs.Graph, mask: gs.Tensor | None, b: int, n: int, s: int) -> gs.Tensor | None:
    """The mask as MultiHeadAttention's attention_bias [B or 1, N or 1, S, S] (None if it cannot be)."""
    if mask is None:
        return gs.Variable.empty()
    shape = known_shape(mask)
    if shape is None or len(shape) > 4 or not is_float32(mask):
        return None
    m = (1,) * (4 - len(shape)) + shape
    if m[0] not in (1, b) or m[1] not in (1, n) or m[2] not in (1, s) or m[3] != s:
        return None
    if m[2] == s and len(shape) == 4:
        return mask
    full = np.array([m[0], m[1], s, s], np.int64)
    for reader in mask.outputs:  # the mask is shared by every layer: expand it once
        if reader.op == "Expand" and (shape_to := constant(reader.inputs[1])) is not None \
                and np.array_equal(shape_to, full):
            return reader.outputs[0]
    expand = add_node(graph, "Expand", [mask, new_constant(graph, f"{mask.name}_shape", full)])
    expand.outputs.append(gs.Variable(f"{mask.name}_expanded", np.float32, [int(d) for d in full]))
    return expand.outputs[0]


def _attention(graph: gs.Graph, softmax: gs.Node, ctx: PassContext) -> Outcome:
    if softmax.attrs.get("axis", -1) not in (-1, 3):
        return Miss("the Softmax is not over the last axis")
    if known_shape(softmax.outputs[0]) is None:
        return Miss("the Softmax output shape is not known")
    probs, guard = _nan_guarded(graph, softmax)
    pv = sole_consumer(graph, probs, "MatMul")
    if pv is None:
        return consumer_miss(graph, probs, "MatMul")
    if pv.inputs[0] is not probs:
        return Miss("the probabilities are the second MatMul input, not the first")
    # Scores: [scale] (Q K^T) [+ mask]
    scores, mask, add_nodes = softmax.inputs[0], None, []
    add = produced_by(scores, "Add")
    if add is not None and read_only_by(graph, scores, softmax):
        for t in add.inputs:
            if produced_by(_unscaled(graph, t)[0], "MatMul") is not None:
                scores, mask, add_nodes = t, other_input(add, t), [add]
                break
    qk_out, outer_scale, outer_nodes = _unscaled(graph, scores)
    qk = produced_by(qk_out, "MatMul")
    if qk is None:
        return Miss("the scores are not Q K^T [* scalar] [+ mask]")
    if sole_consumer(graph, qk_out) is None:
        return consumer_miss(graph, qk_out)
    q_heads, q_scale, q_nodes = _unscaled(graph, qk.inputs[0])
    k_heads, k_scale, k_nodes = _unscaled(graph, qk.inputs[1])
    shape = known_shape(q_heads)
    if shape is None or len(shape) != 4:
        return Miss("the query heads do not have a known 4-D shape [B, N, S, H]")
    b, n, s, h = shape
    q = _heads_source(graph, q_heads, (0, 2, 1, 3), n)
    k = _heads_source(graph, k_heads, (0, 2, 3, 1), n)
    v = _heads_source(graph, pv.inputs[1], (0, 2, 1, 3), n)
    out = _merged_heads(graph, pv.outputs[0])
    if q is None:
        return Miss("the query is not a [B, S, D] tensor split into heads")
    if k is None:
        return Miss("the key is not a [B, S, D] tensor split into heads and transposed")
    if v is None:
        return Miss("the value is not a [B, S, D] tensor split into heads")
    if out is None:
        return Miss("the attention output is not merged back to [B, S, D]")
    if any(known_shape(x[0]) != (b, s, n * h) for x in (q, k, v)):
        return Miss("query, key and value shapes differ (self-attention only)")
    bias = _attention_bias(graph, mask, b, n, s)  # last check: it may add the mask's Expand
    if bias is None:
        return Miss("the mask is not float32 or does not broadcast to [B, N, S, S]")
    matched = [*q[1], *k[1], *v[1], *q_nodes, *k_nodes, qk, *outer_nodes, *add_nodes, softmax, *guard, pv, *out[1]]
    inputs = [q[0], k[0], v[0], gs.Variable.empty(), gs.Variable.empty(), bias]
    attrs = {"num_heads": n, "scale": float(q_scale * k_scale * outer_scale)}
    replace_nodes(matched, add_node(graph, "MultiHeadAttention", inputs, attrs, domain=MS_DOMAIN, name=pv.name))
    return True


class AttentionFusion(RewritePass):
    name = "attention-fusion"
    description = "Fuse scaled-dot-product attention subgraphs into MultiHeadAttention (ONNX Runtime)."
    requires = frozenset({Capability.MULTI_HEAD_ATTENTION})
    rules = (("multi_head_attention", ("Softmax",), _attention),)
