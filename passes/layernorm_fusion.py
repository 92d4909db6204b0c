"""LayerNormalization fusion: (x - mean) / sqrt(var + eps) [* gamma + beta] over the last axis
written as ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div becomes one ONNX LayerNormalization (opset >= 17)."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from infer_compile.passes.base import PassContext
from infer_compile.passes.graph_utils import (
    add_node,
    axes_of,
    constant,
    is_scalar,
    known_shape,
    new_constant,
    numpy_dtype,
    other_input,
    rank,
    read_only_by,
    replace_nodes,
    scalar_value,
    sole_consumer,
)
from infer_compile.passes.rewrite import Miss, Outcome, RewritePass, consumer_miss

LAYERNORM_OPSET = 17


def _reduces_last_axis(node: gs.Node, r: int) -> bool:
    axes = axes_of(node)
    return node.attrs.get("keepdims", 1) == 1 and axes is not None and len(axes) == 1 and axes[0] % r == r - 1


def _variance_of(graph: gs.Graph, d: gs.Tensor, r: int) -> tuple[list[gs.Node], gs.Node, float] | None:
    """(nodes, Div node, eps) when d feeds exactly Pow(d, 2)/Mul(d, d) -> ReduceMean -> Add eps -> Sqrt -> Div(d, .)."""
    readers = list({id(n): n for n in d.outputs}.values())  # Mul(d, d) reads d twice
    square = next((n for n in readers if (n.op == "Pow" and is_scalar(n.inputs[1], 2.0))
                   or (n.op == "Mul" and n.inputs[0] is d and n.inputs[1] is d)), None)
    div = next((n for n in readers if n.op == "Div" and n.inputs[0] is d), None)
    if square is None or div is None or len(readers) != 2:
        return None
    var = sole_consumer(graph, square.outputs[0], "ReduceMean")
    if var is None or not _reduces_last_axis(var, r):
        return None
    add = sole_consumer(graph, var.outputs[0], "Add")
    eps = scalar_value(other_input(add, var.outputs[0])) if add is not None else None
    if add is None or eps is None:
        return None
    sqrt = sole_consumer(graph, add.outputs[0], "Sqrt")
    if sqrt is None or div.inputs[1] is not sqrt.outputs[0] or not read_only_by(graph, sqrt.outputs[0], div):
        return None
    return [square, var, add, sqrt], div, eps


def _affine(graph: gs.Graph, node: gs.Node, op: str, width: int, r: int) -> tuple[gs.Node, np.ndarray] | None:
    """(next node, its constant as a (width,) vector) when ``node``'s output is only read by op(., const)
    and the constant varies along the last axis alone."""
    nxt = sole_consumer(graph, node.outputs[0], op)
    values = constant(other_input(nxt, node.outputs[0])) if nxt is not None else None
    if values is None or values.ndim > r or not (values.size == 1 or values.size == values.shape[-1] == width):
        return None
    return nxt, np.broadcast_to(values.reshape(-1), (width,))


def _layernorm(graph: gs.Graph, mean: gs.Node, ctx: PassContext) -> Outcome:
    x = mean.inputs[0]
    shape, r = known_shape(x), rank(x)
    if graph.opset < LAYERNORM_OPSET:
        return Miss(f"the opset is below {LAYERNORM_OPSET} (no LayerNormalization)")
    if r is None or shape is None:
        return Miss("the input shape is not known")
    if not _reduces_last_axis(mean, r):
        return Miss("the ReduceMean is not over the last axis alone with keepdims")
    sub = sole_consumer(graph, mean.outputs[0], "Sub")
    if sub is None:
        return consumer_miss(graph, mean.outputs[0], "Sub")
    if sub.inputs[0] is not x:
        return Miss("the Sub is not x - mean(x)")
    found = _variance_of(graph, sub.outputs[0], r)
    if found is None:
        return Miss("x - mean is not divided by sqrt(mean((x - mean)^2) + eps) alone")
    middle, last, eps = found
    dtype, width = numpy_dtype(x), shape[-1]
    if dtype is None or dtype.kind != "f":  # unknown, or a type numpy lacks (bfloat16): gamma/beta need one
        return Miss("the input is not float16/32/64")
    matched = [mean, sub, *middle, last]
    gamma, beta = np.ones(width, dtype), np.zeros(width, dtype)
    scaled = _affine(graph, last, "Mul", width, r)
    if scaled is not None:
        (last, gamma), matched = scaled, [*matched, scaled[0]]
        shifted = _affine(graph, last, "Add", width, r)
        if shifted is not None:
            (last, beta), matched = shifted, [*matched, shifted[0]]
    params = [new_constant(graph, f"{mean.name}_{k}", v.astype(dtype)) for k, v in (("gamma", gamma), ("beta", beta))]
    replace_nodes(matched, add_node(graph, "LayerNormalization", [x, *params], {"axis": -1, "epsilon": eps},
                                    name=mean.name))
    return True


class LayerNormFusion(RewritePass):
    name = "layernorm-fusion"
    description = "Fuse decomposed layer normalization (ReduceMean/Sub/Pow/Sqrt/Div) into LayerNormalization."
    rules = (("layernorm", ("ReduceMean",), _layernorm),)
