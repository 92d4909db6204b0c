"""No-op elimination: Cast to the same type, Reshape to the same shape, and op pairs that cancel."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from infer_compile.passes.base import PassContext
from infer_compile.passes.graph_utils import axes_of, constant, known_shape, numpy_dtype, produced_by, rank
from infer_compile.passes.rewrite import Miss, Outcome, RewritePass, bypass


def _same_type_cast(graph: gs.Graph, node: gs.Node, ctx: PassContext) -> Outcome:
    dtype = numpy_dtype(node.inputs[0])
    if dtype is None:
        return Miss("the input dtype is not known")
    if dtype != onnx.helper.tensor_dtype_to_np_dtype(node.attrs["to"]):
        return Miss("the Cast changes the type")
    return bypass(graph, node)


def _same_shape_reshape(graph: gs.Graph, node: gs.Node, ctx: PassContext) -> Outcome:
    shape_in, target = known_shape(node.inputs[0]), constant(node.inputs[1])
    if shape_in is None:
        return Miss("the input shape is not known")
    if target is None:
        return Miss("the target shape is not a constant")
    if len(target) != len(shape_in):
        return Miss("the Reshape changes the rank")
    if np.count_nonzero(target == -1) > 1:
        return Miss("the target shape has more than one -1")
    # A literal 0 copies the input's dim (unless allowzero); a single -1 takes what is left, which
    # is the input's own dim when every other dim already matches.
    copied = (target == -1) | ((target == 0) & (not node.attrs.get("allowzero", 0)))
    resolved = tuple(int(d) for d in np.where(copied, shape_in, target))
    if resolved != shape_in:
        return Miss("the Reshape changes the shape")
    return bypass(graph, node)


def _perm(node: gs.Node) -> list[int] | None:
    if "perm" in node.attrs:
        return [int(p) for p in node.attrs["perm"]]
    r = rank(node.inputs[0])
    return None if r is None else list(range(r - 1, -1, -1))  # the default reverses the axes


def _cancelling_transposes(graph: gs.Graph, node: gs.Node, ctx: PassContext) -> Outcome:
    first = produced_by(node.inputs[0], "Transpose")
    if first is None:
        return Miss("the input is not produced by a Transpose")
    outer, inner = _perm(node), _perm(first)
    if outer is None or inner is None:
        return Miss("a perm is not known (no perm attribute and an unknown rank)")
    if len(outer) != len(inner):
        return Miss("the perms have different lengths")
    if not all(inner[outer[i]] == i for i in range(len(outer))):
        return Miss("the perms do not cancel")
    return bypass(graph, node, first.inputs[0])


def _normalized_axes(node: gs.Node, out_rank: int | None) -> list[int] | None:
    axes = axes_of(node)
    if axes is None:
        return None
    if out_rank is None:  # negative axes count from a rank not known here
        return None if any(a < 0 for a in axes) else sorted(axes)
    return sorted(a % out_rank if a < 0 else a for a in axes)


def _cancelling_squeeze_pair(graph: gs.Graph, node: gs.Node, ctx: PassContext) -> Outcome:
    """Squeeze(Unsqueeze(x, a), a) and Unsqueeze(Squeeze(x, a), a) are x (Squeeze checks the dims are 1)."""
    inner_op = "Unsqueeze" if node.op == "Squeeze" else "Squeeze"
    inner = produced_by(node.inputs[0], inner_op)
    if inner is None:
        return Miss(f"the input is not produced by {inner_op}")
    x_rank = rank(inner.inputs[0])
    # Axes index the larger of the two tensors: Unsqueeze's output or Squeeze's input.
    big_rank = x_rank if inner_op == "Squeeze" else rank(node.inputs[0])
    outer_axes, inner_axes = _normalized_axes(node, big_rank), _normalized_axes(inner, big_rank)
    if outer_axes is None:
        return Miss(f"the {node.op} axes are not known")
    if outer_axes != inner_axes:
        return Miss(f"the {inner_op} axes differ or are not known")
    return bypass(graph, node, inner.inputs[0])


class NoopElimination(RewritePass):
    name = "noop-elimination"
    description = "Remove Cast to the same type, Reshape to the same shape, cancelling Transpose and (Un)Squeeze pairs."
    rules = (
        ("cast", ("Cast",), _same_type_cast),
        ("reshape", ("Reshape",), _same_shape_reshape),
        ("transpose_pair", ("Transpose",), _cancelling_transposes),
        ("squeeze_pair", ("Squeeze", "Unsqueeze"), _cancelling_squeeze_pair),
    )
