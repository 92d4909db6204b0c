"""Constant folding: evaluate subgraphs whose inputs are all constants, once, at build time."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from infer_compile.core.ir import Model
from infer_compile.passes.base import Pass, PassContext, PassResult
from infer_compile.passes.graph_utils import is_graph_io, known_shape, new_constant, replace_tensor
from infer_compile.passes.options import FOLD_SIZE_LIMIT
from infer_compile.passes.rewrite import Miss, Outcome


def static_shape(node: gs.Node) -> np.ndarray | None:
    """What a Shape node outputs when its input's shape is static: the dims from ``start`` to ``end``
    (opset 15; negative values count from the back and both clamp to the rank, as Python slices do)."""
    shape = known_shape(node.inputs[0])
    if shape is None:
        return None
    return np.array(shape[node.attrs.get("start", 0):node.attrs.get("end", len(shape))], np.int64)


def fold_static_shape(graph: gs.Graph, node: gs.Node) -> Outcome:
    """Replace what the Shape ``node`` of ``graph`` outputs by a constant when its input's shape is static."""
    values = static_shape(node)
    if values is None:
        return Miss("the input shape is not static")
    if not node.outputs:
        return Miss("the Shape has no output")
    if is_graph_io(graph, node.outputs[0]):
        return Miss("the Shape output is a graph output")
    replace_tensor(node.outputs[0], new_constant(graph, node.outputs[0].name + "_static", values))
    return True


def fold_static_shapes(graph: gs.Graph) -> int:
    """Fold the static Shape nodes of ``graph``, not of its subgraphs: a loop body's shapes may change
    between iterations. Returns how many."""
    return sum(fold_static_shape(graph, node) is True for node in list(graph.nodes) if node.op == "Shape")


class ConstantFolding(Pass):
    name = "constant-folding"
    description = "Fold constant subgraphs and static shape computations (size limit: --fold-size-limit)."
    options = (FOLD_SIZE_LIMIT,)

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        before = model.node_count
        graph = model.graph
        fold_static_shapes(graph)
        # Shapes are folded above: graphsurgeon's fold_shapes ignores Shape's start/end. Its flattening
        # of If nodes with a constant condition loses outputs that nested subgraphs capture.
        graph.fold_constants(
            fold_shapes=False,
            flatten_subgraphs=False,
            size_threshold=ctx.option(FOLD_SIZE_LIMIT) << 20,
            error_ok=True,
        ).cleanup(remove_unused_graph_inputs=False).toposort()
        return PassResult({"nodes_folded": before - model.node_count})
