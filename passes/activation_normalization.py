"""Activation normalisation: one canonical op per activation, so fusions match one form.

Max(Min(x, 6), 0) / Min(Max(x, 0), 6) -> Clip(x, 0, 6); Clip(x, 0, +inf) -> Relu;
x * Clip(x + 3, 0, 6) / 6 and x * HardSigmoid(x) -> HardSwish (opset >= 14).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx_graphsurgeon as gs

from infer_compile.passes.base import PassContext
from infer_compile.passes.graph_utils import (
    add_node,
    clip_bounds,
    is_scalar,
    new_constant,
    numpy_dtype,
    other_input,
    produced_by,
    read_only_by,
    replace_nodes,
    scalar_value,
    sole_consumer,
)
from infer_compile.passes.rewrite import Miss, Outcome, RewritePass, consumer_miss

HARDSWISH_OPSET = 14


def _min_max_to_clip(graph: gs.Graph, outer: gs.Node, ctx: PassContext) -> Outcome:
    inner_op = "Max" if outer.op == "Min" else "Min"
    if len(outer.inputs) != 2:
        return Miss(f"the {outer.op} does not have 2 inputs")
    misses = []
    for data in outer.inputs:
        inner = produced_by(data, inner_op)
        if inner is None:
            continue
        outer_bound = scalar_value(other_input(outer, data))
        if len(inner.inputs) != 2:
            misses.append(Miss(f"the {inner_op} does not have 2 inputs"))
        elif outer_bound is None:
            misses.append(Miss(f"the {outer.op}'s other input is not a scalar constant"))
        elif not read_only_by(graph, data, outer):
            misses.append(consumer_miss(graph, data))
        else:
            outcome = _inner_bound_clip(graph, outer, inner, outer_bound)
            if outcome is not None:
                return outcome
            misses.append(Miss(f"the {inner_op} has no scalar constant bound on a tensor of known dtype"))
    return misses[0] if misses else Miss(f"no input is produced by {inner_op}")


def _inner_bound_clip(graph: gs.Graph, outer: gs.Node, inner: gs.Node, outer_bound: float) -> Outcome | None:
    """Replace outer(inner(x, inner bound), outer bound) by Clip; None when inner has no scalar constant bound."""
    for x in inner.inputs:
        inner_bound = scalar_value(other_input(inner, x))
        dtype = numpy_dtype(x)
        if inner_bound is None or dtype is None:
            continue
        lo, hi = (inner_bound, outer_bound) if inner.op == "Max" else (outer_bound, inner_bound)
        if lo > hi:  # Clip(lo > hi) would not reproduce min/max semantics
            return Miss("the lower bound is above the upper bound")
        bounds = [new_constant(graph, f"{outer.name}_{key}", np.array(v, dtype))
                  for key, v in (("min", lo), ("max", hi))]
        replace_nodes([inner, outer], add_node(graph, "Clip", [x, *bounds], name=outer.name))
        return True
    return None


def _clip_to_relu(graph: gs.Graph, clip: gs.Node, ctx: PassContext) -> Outcome:
    if clip_bounds(clip) != (0.0, np.inf):
        return Miss("the bounds are not constant (0, inf)")
    replace_nodes([clip], add_node(graph, "Relu", [clip.inputs[0]], name=clip.name))
    return True


def _hard_sigmoid(graph: gs.Graph, t: gs.Tensor) -> tuple[gs.Tensor, list[gs.Node]] | None:
    """(x, nodes) when ``t`` is HardSigmoid(x) with HardSwish's alpha 1/6 and beta 0.5."""
    hs = produced_by(t, "HardSigmoid")
    if hs is None or sole_consumer(graph, t) is None:
        return None
    alpha, beta = hs.attrs.get("alpha", 0.2), hs.attrs.get("beta", 0.5)
    return (hs.inputs[0], [hs]) if np.isclose(alpha, 1 / 6) and np.isclose(beta, 0.5) else None


def _shifted_relu6(graph: gs.Graph, t: gs.Tensor) -> tuple[gs.Tensor, list[gs.Node]] | None:
    """(x, nodes) when ``t`` is Clip(x + 3, 0, 6)."""
    clip = produced_by(t, "Clip")
    if clip is None or sole_consumer(graph, t) is None or clip_bounds(clip) != (0.0, 6.0):
        return None
    add = produced_by(clip.inputs[0], "Add")
    if add is None or not read_only_by(graph, clip.inputs[0], clip):
        return None
    x = next((x for x in add.inputs if is_scalar(other_input(add, x), 3.0)), None)
    return None if x is None else (x, [add, clip])


GateMatcher = Callable[[gs.Graph, gs.Tensor], "tuple[gs.Tensor, list[gs.Node]] | None"]


def _x_times_gate(graph: gs.Graph, mul: gs.Node, gate_of: GateMatcher) -> tuple[gs.Tensor, list[gs.Node]] | None:
    """(x, the gate's nodes) when ``mul`` is x * gate(x)."""
    for gate in mul.inputs if len(mul.inputs) == 2 else ():
        found = gate_of(graph, gate)
        if found is not None and other_input(mul, gate) is found[0]:
            return found
    return None


def _scaled_by_sixth(node: gs.Node) -> gs.Tensor | None:
    """p when ``node`` is p / 6 or p * (1/6)."""
    if node.op == "Div":
        return node.inputs[0] if is_scalar(node.inputs[1], 6.0) else None
    return next((t for t in node.inputs if is_scalar(other_input(node, t), 1 / 6)), None)


def _hardswish(graph: gs.Graph, last: gs.Node, ctx: PassContext) -> Outcome:
    """x * HardSigmoid(x), or (x * Clip(x + 3, 0, 6)) / 6, becomes HardSwish(x)."""
    if graph.opset < HARDSWISH_OPSET:
        return Miss(f"the opset is below {HARDSWISH_OPSET} (no HardSwish)")
    if len(last.inputs) != 2:
        return Miss(f"the {last.op} does not have 2 inputs")
    found = _x_times_gate(graph, last, _hard_sigmoid) if last.op == "Mul" else None
    if found is None:
        product_out = _scaled_by_sixth(last)
        product = produced_by(product_out, "Mul") if product_out is not None else None
        if product is None:
            return Miss("neither x * HardSigmoid(x) nor a product scaled by 1/6")
        if not read_only_by(graph, product_out, last):
            return consumer_miss(graph, product_out)
        found = _x_times_gate(graph, product, _shifted_relu6)
        if found is None:
            return Miss("the product scaled by 1/6 is not x * Clip(x + 3, 0, 6)")
        found = (found[0], [*found[1], product])
    x, matched = found
    replace_nodes([*matched, last], add_node(graph, "HardSwish", [x], name=last.name))
    return True


class ActivationNormalization(RewritePass):
    name = "activation-normalization"
    description = "Canonicalise activations: Min/Max to Clip, Clip(0, inf) to Relu, decomposed HardSwish to HardSwish."
    rules = (
        ("min_max_to_clip", ("Min", "Max"), _min_max_to_clip),
        ("clip_to_relu", ("Clip",), _clip_to_relu),
        ("hardswish", ("Mul", "Div"), _hardswish),
    )
