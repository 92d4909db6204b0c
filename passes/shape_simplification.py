"""Shape-op simplification: collapse Reshape chains, and replace Shape of statically shaped tensors by
constants so the shape arithmetic after them (Gather/Concat/...) folds away."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from infer_compile.core.ir import Model
from infer_compile.passes.base import PassContext, PassResult
from infer_compile.passes.constant_folding import ConstantFolding, fold_static_shape
from infer_compile.passes.graph_utils import constant, produced_by
from infer_compile.passes.rewrite import Miss, Outcome, RewritePass


def _reshape_chain(graph: gs.Graph, node: gs.Node, ctx: PassContext) -> Outcome:
    """Reshape(Reshape(x, a), b) -> Reshape(x, b) when b does not copy dims (0) from the inner output."""
    inner = produced_by(node.inputs[0], "Reshape")
    target = constant(node.inputs[1])
    if inner is None:
        return Miss("the input is not produced by a Reshape")
    if target is None:
        return Miss("the target shape is not a constant")
    if not node.attrs.get("allowzero", 0) and np.any(target == 0):
        return Miss("the target shape copies a dim (0) from the inner Reshape")
    node.inputs[0] = inner.inputs[0]  # the inner Reshape stays for any other reader, else cleanup drops it
    return True


def _static_shape(graph: gs.Graph, node: gs.Node, ctx: PassContext) -> Outcome:
    return fold_static_shape(graph, node)


class ShapeSimplification(RewritePass):
    name = "shape-simplification"
    description = "Collapse Reshape chains; turn Shape of static tensors into constants and fold what follows."
    rules = (("reshape_chain", ("Reshape",), _reshape_chain), ("static_shape", ("Shape",), _static_shape))

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        result = super().run(model, ctx)
        if result.counts.get("static_shape"):
            folded = ConstantFolding().run(model, ctx)
            result.add("shape_ops_folded", folded.counts.get("nodes_folded", 0))
        return result
