"""Small graph-surgery helpers shared by passes (onnx-graphsurgeon graphs)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import onnx_graphsurgeon as gs

# ONNX Runtime's contrib-op domain (FusedConv, Gelu, SkipLayerNormalization, ...).
MS_DOMAIN = "com.microsoft"


def numpy_dtype(tensor: gs.Tensor) -> np.dtype | None:
    """The tensor's element type as a numpy dtype; None when unknown or one numpy lacks (graphsurgeon keeps
    the ONNX enum, an int, for bfloat16 and float8 types, and ``np.dtype`` of that raises)."""
    dtype = tensor.dtype
    return None if dtype is None or isinstance(dtype, int | np.integer) else np.dtype(dtype)


def is_float32(tensor: gs.Tensor) -> bool:
    return numpy_dtype(tensor) == np.float32


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


def bypass_node(graph: gs.Graph, node: gs.Node, src: gs.Tensor | None = None) -> bool:
    """Remove a node whose first output equals its first input (or ``src``); keeps graph output names.

    Returns False (graph untouched) when the node cannot be removed without renaming a graph
    output, i.e. when it copies a graph input or constant straight to a graph output.
    """
    src, dst = src if src is not None else node.inputs[0], node.outputs[0]
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


# Nodes inside If/Loop/Scan bodies share the outer tensors they capture, so they appear among those tensors'
# consumers (``tensor.outputs``) although they are not nodes of the outer graph: a rewrite of the outer graph
# must never fuse them. Registered per graph while a rewrite runs (see ``subgraph_scope``).
_SUBGRAPH_NODES: dict[int, frozenset[int]] = {}


def subgraph_node_ids(graph: gs.Graph) -> frozenset[int]:
    """ids of every node inside the subgraphs (any depth) of ``graph``'s nodes."""
    known = _SUBGRAPH_NODES.get(id(graph))
    if known is not None:
        return known
    return frozenset(id(n) for subgraph in graph.subgraphs(recursive=True) for n in subgraph.nodes)


@contextmanager
def subgraph_scope(graph: gs.Graph) -> Iterator[None]:
    """While the block rewrites ``graph`` (adding or removing nodes of its own, never inside its subgraphs),
    ``subgraph_node_ids`` answers from one walk instead of one per call."""
    _SUBGRAPH_NODES[id(graph)] = subgraph_node_ids(graph)
    try:
        yield
    finally:
        del _SUBGRAPH_NODES[id(graph)]


def sole_consumer(graph: gs.Graph, tensor: gs.Tensor, op: str | tuple[str, ...] | None = None) -> gs.Node | None:
    """The one node of ``graph`` reading ``tensor`` (of type ``op`` when given), when nothing else sees it.

    A fusion may only swallow an intermediate tensor that no other node, no subgraph and no graph output reads.
    """
    if len(tensor.outputs) != 1 or is_graph_io(graph, tensor):
        return None
    node = tensor.outputs[0]
    if id(node) in subgraph_node_ids(graph):
        return None
    ops = (op,) if isinstance(op, str) else op
    return node if ops is None or node.op in ops else None


def read_only_by(graph: gs.Graph, tensor: gs.Tensor, node: gs.Node) -> bool:
    """Whether ``node`` is ``tensor``'s sole consumer (see sole_consumer).

    A function rather than ``sole_consumer(...) is node``: mypy would narrow ``node`` to Node | None after it.
    """
    return sole_consumer(graph, tensor) is node


def produced_by(tensor: gs.Tensor, op: str | tuple[str, ...]) -> gs.Node | None:
    """The node writing ``tensor`` when it is of type ``op`` (plain ONNX domain)."""
    node = producer(tensor)
    ops = (op,) if isinstance(op, str) else op
    return node if node is not None and node.op in ops and node.domain in (None, "", "ai.onnx") else None


def constant(tensor: gs.Tensor | None) -> np.ndarray | None:
    """The values of a constant tensor (initializer), or None for anything computed or fed."""
    return np.asarray(tensor.values) if isinstance(tensor, gs.Constant) else None


def constant_bias_add(node: gs.Node) -> tuple[gs.Node, int] | None:
    """(Add, index of its bias) when an Add of a constant 1-D bias alone reads ``node``'s output."""
    consumers = node.outputs[0].outputs if node.outputs else []
    if len(consumers) != 1 or consumers[0].op != "Add" or len(consumers[0].inputs) != 2:
        return None
    add = consumers[0]
    index = next((i for i, t in enumerate(add.inputs) if (c := constant(t)) is not None and c.ndim == 1), None)
    return None if index is None else (add, index)


def private_constant(tensor: gs.Tensor | None, owner: gs.Node) -> np.ndarray | None:
    """The values of a constant only ``owner`` reads: safe to rewrite without touching other nodes."""
    if not isinstance(tensor, gs.Constant) or any(n is not owner for n in tensor.outputs):
        return None
    return np.asarray(tensor.values)


def scalar_value(tensor: gs.Tensor | None) -> float | None:
    """The single value of a one-element constant."""
    values = constant(tensor)
    return float(values.reshape(-1)[0]) if values is not None and values.size == 1 else None


def is_scalar(tensor: gs.Tensor | None, value: float, rtol: float = 1e-4) -> bool:
    got = scalar_value(tensor)
    return got is not None and bool(np.isclose(got, value, rtol=rtol, atol=0.0))


def other_input(node: gs.Node, tensor: gs.Tensor) -> gs.Tensor | None:
    """For a binary node, the input that is not ``tensor`` (None if ``tensor`` is not an input)."""
    if len(node.inputs) != 2:
        return None
    a, b = node.inputs
    return b if a is tensor else a if b is tensor else None


def new_constant(graph: gs.Graph, hint: str, values: np.ndarray) -> gs.Constant:
    return gs.Constant(unique_name(graph, hint), np.ascontiguousarray(values))


def unique_name(graph: gs.Graph, hint: str) -> str:
    return name_allocator(graph)(hint)


def name_allocator(graph: gs.Graph) -> Callable[[str], str]:
    """hint -> a tensor/node name ``graph`` does not use and no earlier call returned: for adding many nodes at once
    (``unique_name`` scans the graph on every call, and cannot see nodes not added yet)."""
    taken = graph.tensors().keys() | {n.name for n in graph.nodes}

    def allocate(hint: str) -> str:
        name, i = hint, 0
        while name in taken:
            i += 1
            name = f"{hint}_{i}"
        taken.add(name)
        return name

    return allocate


def detach(*nodes: gs.Node) -> None:
    """Disconnect nodes so the next cleanup removes them."""
    for node in nodes:
        node.inputs.clear()
        node.outputs.clear()


def replace_nodes(matched: list[gs.Node], new: gs.Node) -> gs.Node:
    """Replace a matched subgraph by ``new``, which takes over the last matched node's outputs
    (so tensor names, graph outputs included, stay as they were)."""
    last = matched[-1]
    outputs = list(last.outputs)
    detach(*matched)
    new.outputs.extend(outputs)
    return new


def add_node(graph: gs.Graph, op: str, inputs: list[gs.Tensor], attrs: dict | None = None,
             domain: str = "", name: str | None = None) -> gs.Node:
    node = gs.Node(op, name=unique_name(graph, name or op), attrs=dict(attrs or {}), inputs=inputs, domain=domain)
    graph.nodes.append(node)
    return node


def known_shape(tensor: gs.Tensor) -> tuple[int, ...] | None:
    """The tensor's shape when every dimension is a concrete integer."""
    shape = tensor.shape
    if shape is None or not all(isinstance(d, int | np.integer) and d >= 0 for d in shape):
        return None
    return tuple(int(d) for d in shape)


def rank(tensor: gs.Tensor) -> int | None:
    return None if tensor.shape is None else len(tensor.shape)


def axes_of(node: gs.Node, input_index: int = 1) -> list[int] | None:
    """A node's ``axes`` from its attribute (older opsets) or constant input (newer opsets)."""
    if "axes" in node.attrs:
        return [int(a) for a in node.attrs["axes"]]
    if len(node.inputs) > input_index:
        values = constant(node.inputs[input_index])
        return None if values is None else [int(a) for a in values.reshape(-1)]
    return None


def clip_bounds(node: gs.Node) -> tuple[float, float] | None:
    """(min, max) of a Clip from attributes (opset < 11) or constant inputs; absent bounds are infinite.

    None when a bound is computed at run time.
    """
    if len(node.inputs) == 1:
        return float(node.attrs.get("min", -np.inf)), float(node.attrs.get("max", np.inf))
    bounds = []
    for i, default in ((1, -np.inf), (2, np.inf)):
        if len(node.inputs) <= i or not node.inputs[i].name:
            bounds.append(default)
            continue
        value = scalar_value(node.inputs[i])
        if value is None:
            return None
        bounds.append(value)
    return bounds[0], bounds[1]
