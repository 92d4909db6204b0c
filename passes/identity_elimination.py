"""Identity elimination: remove nodes that pass their input through unchanged at inference time."""

from __future__ import annotations

import onnx_graphsurgeon as gs

from infer_compile.core.ir import Model
from infer_compile.passes.base import Pass, PassContext, PassResult
from infer_compile.passes.graph_utils import bypass_node, is_graph_io


def _is_inference_dropout(graph: gs.Graph, node: gs.Node) -> bool:
    # Dropout is the identity unless its training_mode input is present (and possibly true)
    # or its mask output is used.
    mask_used = len(node.outputs) > 1 and (bool(node.outputs[1].outputs) or is_graph_io(graph, node.outputs[1]))
    return (len(node.inputs) < 3 or node.inputs[2].name == "") and not mask_used


class IdentityElimination(Pass):
    name = "identity-elimination"
    description = "Remove Identity nodes and inference-mode Dropout."

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        result = PassResult()
        for node in list(model.graph.nodes):
            dropout = node.op == "Dropout" and _is_inference_dropout(model.graph, node)
            if (node.op == "Identity" or dropout) and bypass_node(model.graph, node):
                result.add(node.op.lower())
        model.graph.cleanup(remove_unused_graph_inputs=False)
        return result
