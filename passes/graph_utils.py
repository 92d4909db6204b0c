"""Small graph-surgery helpers shared by passes (onnx-graphsurgeon graphs)."""

from __future__ import annotations

import onnx_graphsurgeon as gs


def producer(tensor: gs.Tensor) -> gs.Node | None:
    return tensor.inputs[0] if tensor.inputs else None


def is_graph_io(graph: gs.Graph, tensor: gs.Tensor) -> bool:
    return any(t is tensor for t in graph.inputs) or any(t is tensor for t in graph.outputs)


def replace_tensor(old: gs.Tensor, new: gs.Tensor) -> None:
    """Point every consumer of ``old`` at ``new``."""
    for consumer in list(old.outputs):
        for i, t in enumerate(consumer.inputs):
            if t is old:
                consumer.inputs[i] = new


def bypass_node(graph: gs.Graph, node: gs.Node) -> bool:
    """Remove a node whose first output equals its first input; keeps graph output names.

    Returns False (graph untouched) when the node cannot be removed without renaming a graph
    output, i.e. when it copies a graph input or constant straight to a graph output.
    """
    src, dst = node.inputs[0], node.outputs[0]
    if any(t is dst for t in graph.outputs):
        upstream = producer(src)
        if upstream is None or is_graph_io(graph, src):
            return False
        # Keep the output's name: the upstream node writes ``dst`` directly.
        replace_tensor(src, dst)
        upstream.outputs[upstream.outputs.index(src)] = dst
    else:
        replace_tensor(dst, src)
    node.inputs.clear()
    node.outputs.clear()
    return True
