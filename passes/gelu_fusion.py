"""GELU fusion: the erf form 0.5*x*(1+erf(x/sqrt2)) and the tanh form
0.5*x*(1+tanh(sqrt(2/pi)*(x+0.044715*x^3))) become one op.

ONNX Runtime targets get com.microsoft Gelu / FastGelu; other targets get ONNX Gelu when the
model's opset has it (>= 20); otherwise the graph is left as it is.
"""

from __future__ import annotations

import math

import onnx_graphsurgeon as gs

from infer_compile.core.capabilities import Capability
from infer_compile.passes.base import PassContext
from infer_compile.passes.graph_utils import (
    MS_DOMAIN,
    add_node,
    is_scalar,
    other_input,
    produced_by,
    read_only_by,
    replace_nodes,
    sole_consumer,
)
from infer_compile.passes.rewrite import Miss, Outcome, RewritePass, consumer_miss

ONNX_GELU_OPSET = 20
SQRT2 = math.sqrt(2.0)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _scaled_input(graph: gs.Graph, t: gs.Tensor, factor: float) -> tuple[gs.Tensor, gs.Node] | None:
    """(x, node) when ``t`` is x * factor or x / (1 / factor), read only by its one consumer."""
    node = produced_by(t, ("Mul", "Div"))
    if node is None or sole_consumer(graph, t) is None:
        return None
    if node.op == "Div":
        return (node.inputs[0], node) if is_scalar(node.inputs[1], 1.0 / factor) else None
    x = next((x for x in node.inputs if is_scalar(other_input(node, x), factor)), None)
    return None if x is None else (x, node)


def _half_x_times(graph: gs.Graph, gate: gs.Node, x: gs.Tensor) -> list[gs.Node] | Miss:
    """The nodes computing 0.5 * x * (1 + gate(...)) after ``gate``, in any association, last one last."""
    add = sole_consumer(graph, gate.outputs[0], "Add")
    if add is None:
        return consumer_miss(graph, gate.outputs[0], "Add")
    found = _half_x_times_sum(graph, add, gate, x)
    return Miss(f"the {gate.op} is not followed by 0.5 * x * (1 + {gate.op.lower()})") if found is None else found


def _half_x_times_sum(graph: gs.Graph, add: gs.Node, gate: gs.Node, x: gs.Tensor) -> list[gs.Node] | None:
    """The nodes computing 0.5 * x * ``add`` when ``add`` is 1 + gate(...)."""
    if not is_scalar(other_input(add, gate.outputs[0]), 1.0):
        return None
    first = sole_consumer(graph, add.outputs[0], "Mul")
    if first is None:
        return None
    operand = other_input(first, add.outputs[0])
    if operand is None:
        return None
    half_x = produced_by(operand, "Mul")
    if half_x is not None and read_only_by(graph, operand, first) and \
            any(t is x and is_scalar(other_input(half_x, t), 0.5) for t in half_x.inputs):
        return [add, half_x, first]  # (0.5 * x) * (1 + gate)
    if operand is not x and not is_scalar(operand, 0.5):
        return None
    second = sole_consumer(graph, first.outputs[0], "Mul")
    rest = other_input(second, first.outputs[0]) if second is not None else None
    wanted_ok = is_scalar(rest, 0.5) if operand is x else rest is x
    return [add, first, second] if wanted_ok else None


def _cubic_term(graph: gs.Graph, t: gs.Tensor) -> tuple[gs.Tensor, list[gs.Node]] | None:
    """(x, nodes) when ``t`` is x + 0.044715 * x^3 (x^3 as Pow(x, 3))."""
    add = produced_by(t, "Add")
    for cube_scaled in add.inputs if add is not None and sole_consumer(graph, t) else ():
        x = other_input(add, cube_scaled)
        scaled = _scaled_input(graph, cube_scaled, 0.044715)
        if scaled is None:
            continue
        pow_node = produced_by(scaled[0], "Pow")
        if pow_node is not None and pow_node.inputs[0] is x and is_scalar(pow_node.inputs[1], 3.0) \
                and read_only_by(graph, scaled[0], scaled[1]):
            return x, [pow_node, scaled[1], add]
    return None


def _fused_gelu(graph: gs.Graph, ctx: PassContext, x: gs.Tensor, matched: list[gs.Node], tanh: bool) -> Outcome:
    ms_op, capability = ("FastGelu", Capability.FAST_GELU) if tanh else ("Gelu", Capability.GELU)
    if capability in ctx.capabilities:
        replace_nodes(matched, add_node(graph, ms_op, [x], domain=MS_DOMAIN, name=matched[-1].name))
        return True
    if graph.opset >= ONNX_GELU_OPSET:
        attrs = {"approximate": "tanh"} if tanh else {}
        replace_nodes(matched, add_node(graph, "Gelu", [x], attrs, name=matched[-1].name))
        return True
    return Miss(f"the target has no {ms_op} and the opset is below {ONNX_GELU_OPSET} (no ONNX Gelu)")


def _erf_gelu(graph: gs.Graph, erf: gs.Node, ctx: PassContext) -> Outcome:
    scaled = _scaled_input(graph, erf.inputs[0], 1.0 / SQRT2)
    if scaled is None:
        return Miss("the Erf input is not x / sqrt(2) read by the Erf alone")
    tail = _half_x_times(graph, erf, scaled[0])
    if isinstance(tail, Miss):
        return tail
    return _fused_gelu(graph, ctx, scaled[0], [scaled[1], erf, *tail], tanh=False)


def _tanh_gelu(graph: gs.Graph, tanh: gs.Node, ctx: PassContext) -> Outcome:
    scaled = _scaled_input(graph, tanh.inputs[0], SQRT_2_OVER_PI)
    if scaled is None:
        return Miss("the Tanh input is not sqrt(2/pi) * y read by the Tanh alone")
    cubic = _cubic_term(graph, scaled[0])
    if cubic is None:
        return Miss("y is not x + 0.044715 * x^3")
    tail = _half_x_times(graph, tanh, cubic[0])
    if isinstance(tail, Miss):
        return tail
    return _fused_gelu(graph, ctx, cubic[0], [*cubic[1], scaled[1], tanh, *tail], tanh=True)


class GeluFusion(RewritePass):
    name = "gelu-fusion"
    description = "Fuse erf/tanh GELU subgraphs into Gelu/FastGelu (ONNX Runtime) or ONNX Gelu (opset >= 20)."
    uses = frozenset({Capability.GELU, Capability.FAST_GELU})
    rules = (("gelu_erf", ("Erf",), _erf_gelu), ("gelu_tanh", ("Tanh",), _tanh_gelu))
