"""Activation fusion into the target's fused forms: ONNX Runtime's com.microsoft FusedConv and FusedGemm.

Conv [+ residual Add] + activation -> FusedConv(X, W, B, Z); Gemm + activation -> FusedGemm.
Only for targets that accept these ops (``requires``); others keep the plain ONNX graph.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from infer_compile.core.capabilities import Capability
from infer_compile.passes.base import PassContext
from infer_compile.passes.graph_utils import (
    MS_DOMAIN,
    add_node,
    clip_bounds,
    is_float32,
    known_shape,
    new_constant,
    other_input,
    produced_by,
    read_only_by,
    replace_nodes,
)
from infer_compile.passes.rewrite import Miss, Outcome, RewritePass, consumer_miss

ACTIVATIONS = ("Relu", "Clip", "LeakyRelu", "HardSigmoid", "Sigmoid", "Tanh")
FLOAT_MAX = float(np.finfo(np.float32).max)


def _activation_params(act: gs.Node) -> list[float] | None:
    """The activation's parameters in the order FusedConv's activation_params takes them."""
    if act.op == "Clip":
        bounds = clip_bounds(act)
        return None if bounds is None else [float(np.clip(b, -FLOAT_MAX, FLOAT_MAX)) for b in bounds]
    if act.op == "LeakyRelu":
        return [float(act.attrs.get("alpha", 0.01))]
    if act.op == "HardSigmoid":
        return [float(act.attrs.get("alpha", 0.2)), float(act.attrs.get("beta", 0.5))]
    return []


def _conv_and_residual(graph: gs.Graph, t: gs.Tensor) -> tuple[gs.Node, gs.Tensor | None, list[gs.Node]] | Miss:
    """(conv, residual Z or None, matched nodes) when ``t`` is Conv(...) or Conv(...) + Z of the same shape."""
    conv = produced_by(t, "Conv")
    if conv is not None:
        return conv, None, [conv]
    add = produced_by(t, "Add")
    if add is None:
        return Miss("the input is not produced by Conv or Add")
    for conv_out in add.inputs:
        conv, z = produced_by(conv_out, "Conv"), other_input(add, conv_out)
        shape = known_shape(conv_out)
        if conv is not None and read_only_by(graph, conv_out, add) and shape is not None \
                and known_shape(z) == shape and is_float32(z):
            return conv, z, [conv, add]
    return Miss("the Add is not Conv + an fp32 residual of the same known shape")


def _fused_conv(graph: gs.Graph, act: gs.Node, ctx: PassContext) -> Outcome:
    params = _activation_params(act)
    if params is None:
        return Miss("the Clip bounds are not constants")
    t = act.inputs[0]
    if not read_only_by(graph, t, act):
        return consumer_miss(graph, t)
    found = _conv_and_residual(graph, t)
    if isinstance(found, Miss):
        return found
    conv, z, matched = found
    # 2-D convolutions in fp32: what the CPU kernel implements
    if len(conv.inputs[1].shape or ()) != 4:
        return Miss("the Conv is not 2-D")
    if not is_float32(conv.outputs[0]):
        return Miss("the Conv output is not float32")
    inputs = list(conv.inputs)
    if z is not None:
        if len(inputs) < 3:  # Z is the 4th input: give a bias-less Conv a zero bias
            channels = conv.inputs[1].shape[0]
            inputs.append(new_constant(graph, f"{conv.name}_bias", np.zeros(channels, np.float32)))
        inputs.append(z)
    attrs = {**conv.attrs, "activation": act.op, **({"activation_params": params} if params else {})}
    replace_nodes([*matched, act], add_node(graph, "FusedConv", inputs, attrs, domain=MS_DOMAIN, name=conv.name))
    return True


def _fused_gemm(graph: gs.Graph, act: gs.Node, ctx: PassContext) -> Outcome:
    if Capability.FUSED_GEMM not in ctx.capabilities:
        return Miss("the target has no FusedGemm")
    if act.op == "Clip":
        return Miss("FusedGemm takes no Clip")
    gemm = produced_by(act.inputs[0], "Gemm")
    if gemm is None:
        return Miss("the input is not produced by Gemm")
    if not read_only_by(graph, act.inputs[0], act):
        return consumer_miss(graph, act.inputs[0])
    if not is_float32(act.inputs[0]):
        return Miss("the Gemm output is not float32")
    params = _activation_params(act) or []
    extra = dict(zip(("activation_alpha", "activation_beta"), params, strict=False))
    attrs = {**gemm.attrs, "activation": act.op, **extra}
    replace_nodes([gemm, act], add_node(graph, "FusedGemm", list(gemm.inputs), attrs, domain=MS_DOMAIN,
                                        name=gemm.name))
    return True


class ActivationFusion(RewritePass):
    name = "activation-fusion"
    description = "Fuse Conv[+Add]+activation into FusedConv and Gemm+activation into FusedGemm (ONNX Runtime)."
    requires = frozenset({Capability.FUSED_CONV})
    uses = frozenset({Capability.FUSED_GEMM})
    rules = (("fused_conv", ACTIVATIONS, _fused_conv), ("fused_gemm", ACTIVATIONS, _fused_gemm))
