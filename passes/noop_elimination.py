"""No-op elimination: Cast to the same type, Reshape to the same shape, and op pairs that cancel."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from infer_compile.passes.base import PassContext
from infer_compile.passes.graph_utils import axes_of, bypass_node, constant, known_shape, numpy_dtype, produced_by, rank
from infer_compile.passes.rewrite import RewritePass


def _same_type_cast(graph: gs.Graph, node: gs.Node, ctx: PassContext) -> bool:
    dtype = numpy_dtype(node.inputs[0])
    if dtype is None:
        return False
    return dtype == onnx.helper.tensor_dtype_to_np_dtype(node.attrs["to"]) and bypass_node(graph, node)


def _same_shape_reshape(graph: gs.Graph, node: gs.Node, ctx: PassContext) -> bool:
    shape_in, target = known_shape(node.inputs[0]), constant(node.inputs[1])
    if shape_in is None or target is None:
        return False
    if len(target) != len(shape_in) or np.count_nonzero(target == -1) > 1:
        return False
    # A literal 0 copies the input's dim (unless allowzero); a single -1 takes what is left, which
    # is the input's own dim when every other dim already matches.
    copied = (target == -1) | ((target == 0) & (not node.attrs.get("allowzero", 0)))
    resolved = tuple(int(d) for d in np.where(copied, shape_in, target))
    return resolved == shape_in and bypass_node(graph, node)


def _perm(node: gs.Node) -> list[int] | None:
    if "perm" in node.attrs:
        return [int(p) for p in node.attrs["perm"]]
    r = rank(node.inputs[0])
    return None if r is None else list(range(r - 1, -1, -1))  # the default reverses the axes


def _cancelling_transposes(graph: gs.Graph, node: gs.Node, ctx: PassContext) -> bool:
    first = produced_by(node.inputs[0], "Transpose")
    if first is None:
        return False
    outer, inner = _perm(node), _perm(first)
    if outer is None or inner is None or len(outer) != len(inner):
        return False
    return all(inner[outer[i]] == i for i in range(len(outer))) and bypass_node(graph, node, first.inputs[0])


def _normalized_axes(node: gs.Node, out_rank: int | None) -> list[int] | None:
    axes = axes_of(node)
    if axes is None or (any(a < 0 for a in axes) and out_rank is None):
        return None
    return sorted(a % out_rank if a < 0 else a for a in axes)


def _cancelling_squeeze_pair(graph: gs.Graph, node: gs.Node, ctx: PassContext) -> bool:
    """Squeeze(Unsqueeze(x, a), a) and Unsqueeze(Squeeze(x, a), a) are x (Squeeze checks the dims are 1)."""
    inner_op = "Unsqueeze" if node.op == "Squeeze" else "Squeeze"
    inner = produced_by(node.inputs[0], inner_op)
    if inner is None:
        return False
    x_rank = rank(inner.inputs[0])
    # Axes index the larger of the two tensors: Unsqueeze's output or Squeeze's input.
    big_rank = x_rank if inner_op == "Squeeze" else rank(node.inputs[0])
    outer_axes, inner_axes = _normalized_axes(node, big_rank), _normalized_axes(inner, big_rank)
    if outer_axes is None or outer_axes != inner_axes:
        return False
    return bypass_node(graph, node, inner.inputs[0])


class NoopElimination(RewritePass):
    name = "noop-elimination"
    description = "Remove Cast to the same type, Reshape to the same shape, cancelling Transpose and (Un)Squeeze pairs."
    rules = (
        ("cast", ("Cast",), _same_type_cast),
        ("reshape", ("Reshape",), _same_shape_reshape),
        ("transpose_pair", ("Transpose",), _cancelling_transposes),
        ("squeeze_pair", ("Squeeze", "Unsqueeze"), _cancelling_squeeze_pair),
    )
