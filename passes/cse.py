"""Common-subexpression elimination: nodes computing the same op on the same inputs run once."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter

from infer_compile.core.ir import Model
from infer_compile.passes.base import Pass, PassContext, PassResult
from infer_compile.passes.graph_utils import detach, is_graph_io, replace_tensor

# Ops whose two evaluations may differ although their inputs are the same.
NONDETERMINISTIC = frozenset({"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
                              "Multinomial", "Bernoulli", "Dropout"})


def _attr_key(value: object) -> object:
    if isinstance(value, np.ndarray):
        return value.dtype.str, value.shape, value.tobytes()
    if isinstance(value, gs.Constant):
        # The exported tensor (less its name), not ``value.values``: reading those replaces a lazily held
        # TensorProto by an array, and string arrays cannot be exported again.
        proto = onnx.TensorProto()
        proto.CopyFrom(OnnxExporter.export_tensor_proto(value))
        proto.ClearField("name")
        return proto.SerializeToString()
    if isinstance(value, list | tuple):
        return tuple(_attr_key(v) for v in value)
    return value


def _signature(node: gs.Node) -> tuple | None:
    """What makes two nodes compute the same thing; None for nodes never merged."""
    if node.op in NONDETERMINISTIC or any(isinstance(v, gs.Graph) for v in node.attrs.values()):
        return None
    attrs = tuple(sorted((k, _attr_key(v)) for k, v in node.attrs.items()))
    return node.op, node.domain or "", tuple(id(t) for t in node.inputs), attrs, len(node.outputs)


class CommonSubexpressionElimination(Pass):
    name = "common-subexpression-elimination"
    description = "Merge nodes that apply the same op with the same attributes to the same inputs."

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        graph = model.graph.toposort()
        seen: dict[tuple, gs.Node] = {}
        result = PassResult()
        # Topological order: once a node's inputs are merged, its own duplicates become visible.
        for node in list(graph.nodes):
            key = _signature(node)
            if key is None:
                continue
            first = seen.setdefault(key, node)
            if first is node or any(is_graph_io(graph, t) for t in node.outputs):
                continue
            for dup, kept in zip(node.outputs, first.outputs, strict=True):
                replace_tensor(dup, kept)
            detach(node)
            result.add("nodes_merged")
        if result.modified:
            graph.cleanup(remove_unused_graph_inputs=False).toposort()
        return result
