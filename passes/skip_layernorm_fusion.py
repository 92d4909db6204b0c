"""Skip-LayerNorm fusion: residual Add + LayerNormalization -> com.microsoft SkipLayerNormalization (ORT)."""

from __future__ import annotations

import onnx_graphsurgeon as gs

from infer_compile.core.capabilities import Capability
from infer_compile.passes.base import PassContext
from infer_compile.passes.graph_utils import (
    MS_DOMAIN,
    add_node,
    constant,
    known_shape,
    produced_by,
    read_only_by,
    replace_nodes,
)
from infer_compile.passes.rewrite import Miss, Outcome, RewritePass, consumer_miss


def _skip_layernorm(graph: gs.Graph, ln: gs.Node, ctx: PassContext) -> Outcome:
    if len(ln.inputs) != 3:
        return Miss("the LayerNormalization has no bias (beta) input")
    if any(t.outputs for t in ln.outputs[1:]):
        return Miss("the mean/inv_std_dev outputs are read")
    add = produced_by(ln.inputs[0], "Add")
    if add is None:
        return Miss("the input is not produced by an Add")
    if not read_only_by(graph, ln.inputs[0], ln):
        return consumer_miss(graph, ln.inputs[0])
    a, b = add.inputs
    shape = known_shape(a)
    # The kernel normalises the last axis of [batch, seq, hidden] inputs with 1-D gamma/beta, no broadcasting.
    if shape is None or len(shape) != 3:
        return Miss("the Add input is not a known 3-D shape [batch, seq, hidden]")
    if known_shape(b) != shape:
        return Miss("the Add inputs differ in shape (broadcasting)")
    if ln.attrs.get("axis", -1) not in (-1, 2):
        return Miss("the LayerNormalization is not over the last axis")
    gamma, beta = constant(ln.inputs[1]), constant(ln.inputs[2])
    if gamma is None or beta is None:
        return Miss("scale or bias is not a constant")
    if gamma.shape != (shape[-1],) or beta.shape != (shape[-1],):
        return Miss("scale or bias is not a vector over the hidden axis")
    attrs = {"epsilon": float(ln.attrs.get("epsilon", 1e-5))}
    replace_nodes([add, ln], add_node(graph, "SkipLayerNormalization", [a, b, *ln.inputs[1:3]], attrs,
                                      domain=MS_DOMAIN, name=ln.name))
    return True


class SkipLayerNormFusion(RewritePass):
    name = "skip-layernorm-fusion"
    description = "Fuse residual Add + LayerNormalization into SkipLayerNormalization (ONNX Runtime)."
    requires = frozenset({Capability.SKIP_LAYER_NORMALIZATION})
    rules = (("skip_layernorm", ("LayerNormalization",), _skip_layernorm),)
