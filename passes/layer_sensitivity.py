"""Which reduced-precision layers hurt accuracy most, ranked from one run of both graphs side by side.

The fp32 reference and the reduced-precision graph run side by side on the held-out samples. A layer's
sensitivity is how much error its output carries beyond what its inputs brought before its own quantizers:
error(output) - max error(inputs), each error the mean over channels (last axis) of the squared difference from
fp32 divided by that channel's fp32 variance. Per channel, because transformers carry a few huge residual channels
that LayerNorm later divides away: one relative error over the whole tensor would see only them.

Both graphs run in one onnxruntime session, unoptimized (the reference semantics of both; Q/DQ emulated in
float), that reduces each compared pair of tensors to per-channel sums as soon as both exist, in node order: no
activation leaves the session and each is freed once compared. Exposing every layer's input and output of both
graphs instead cost the 640x640 PP-OCRv4 detector's ranking 600 MB over the build's peak (now 140 MB).
One run replaces one build and evaluation per layer (MiniLM: 1 run instead of 48).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from infer_compile.core.ir import Model
from infer_compile.core.numerics import Feeds, ort_session
from infer_compile.passes.graph_utils import name_allocator, producer

FLOATS = (np.float32, np.float16)
# What the session computes of each compared pair (reference r, reduced q), per channel (last axis), in this order.
SUMS = ("squared_error", "total", "total_squares")
REDUCED_PREFIX = "reduced/"  # the reduced graph's names in the side-by-side graph


class ChannelError:
    """Per-channel squared error against a reference and the reference's variance, from streamed sums."""

    def __init__(self) -> None:
        self.squared_error: np.ndarray | float = 0.0
        self.total: np.ndarray | float = 0.0
        self.total_squares: np.ndarray | float = 0.0
        self.count = 0

    def add(self, squared_error: np.ndarray, total: np.ndarray, total_squares: np.ndarray, size: int) -> None:
        """One run's sums over every position (all axes but the last) and the tensor's element count."""
        self.squared_error = self.squared_error + squared_error
        self.total = self.total + total
        self.total_squares = self.total_squares + total_squares
        self.count += size // max(np.size(total), 1)

    @property
    def error(self) -> float:
        if not self.count:
            return 0.0
        variance = np.asarray(self.total_squares) / self.count - np.square(np.asarray(self.total) / self.count)
        floor = max(float(np.max(variance)), 1e-30) * 1e-6  # constant channels: compare on the tensor's scale
        return float(np.mean(np.asarray(self.squared_error) / self.count / np.maximum(variance, floor)))


def _unquantized(tensor: gs.Tensor) -> gs.Tensor:
    """The float tensor a Q/DQ pair was applied to, the int8 constant behind a dequantized weight, else
    ``tensor``: the error a layer's inputs bring, without the rounding of its own quantizers."""
    dq = producer(tensor)
    if dq is None or dq.op != "DequantizeLinear":
        return tensor
    q = producer(dq.inputs[0])
    return q.inputs[0] if q is not None and q.op == "QuantizeLinear" else dq.inputs[0]


def _reads(graph: gs.Graph, names: Iterable[str]) -> dict[str, tuple[list[str], str]]:
    """Per node name: the names of its float activation inputs (before their quantizers) and of its output."""
    nodes = {n.name: n for n in graph.nodes}
    found = {}
    for name in names:
        node = nodes.get(name)
        if node is not None and node.outputs:
            inputs = [_unquantized(t) for t in node.inputs]
            found[name] = ([t.name for t in inputs if isinstance(t, gs.Variable) and t.dtype in FLOATS],
                           node.outputs[0].name)
    return found


def rank_layers(reference: Model, reduced: Model, candidates: list[str],
                samples: Iterable[Feeds]) -> tuple[list[str], dict[str, float]]:
    """``candidates`` (node names present in both graphs), most sensitive first, and the error each adds."""
    ref_io, red_io = _reads(reference.graph, candidates), _reads(reduced.graph, candidates)
    layers = [n for n in candidates if n in ref_io and n in red_io and len(ref_io[n][0]) == len(red_io[n][0])]
    pairs = list(dict.fromkeys((r, q) for n in layers for r, q in zip([*ref_io[n][0], ref_io[n][1]],
                                                                       [*red_io[n][0], red_io[n][1]], strict=True)))
    errors = {pair: ChannelError() for pair in pairs}
    if pairs:
        both, outputs = side_by_side(reference, reduced, pairs)
        session = ort_session(both, in_node_order=True, arena=False)  # node order: see side_by_side
        for feeds in samples:  # one at a time, like the evaluator
            values = session.run(outputs, feeds)
            for i, error in enumerate(errors.values()):
                squared_error, total, total_squares, size = values[4 * i:4 * i + 4]
                error.add(squared_error, total, total_squares, int(size))

    def sensitivity(name: str) -> float:
        (ref_in, ref_out), (red_in, red_out) = ref_io[name], red_io[name]
        brought = max((errors[p].error for p in zip(ref_in, red_in, strict=True)), default=0.0)
        return errors[(ref_out, red_out)].error - brought

    added = {name: round(sensitivity(name), 6) for name in layers}
    ranked = sorted(layers, key=added.__getitem__, reverse=True)
    return ranked + [n for n in candidates if n not in added], added


def side_by_side(reference: Model, reduced: Model, pairs: list[tuple[str, str]]) -> tuple[Model, list[str]]:
    """One model running ``reference`` and ``reduced`` (its names prefixed, its inputs read from the reference's,
    cast to its own types) on the same inputs, whose outputs are, per (reference tensor, reduced tensor) pair of
    ``pairs``, the SUMS per channel and the reference tensor's element count, in that order.

    The nodes run in an order a session keeps (``in_node_order``) that frees each activation soon after both graphs
    made it: each reduced node right after the reference node of its name (or, for nodes the reduced graph added
    such as its quantizers, right after what it reads), each pair's reductions right after both producers. In
    onnxruntime's own order every reference activation waited for the whole reduced graph (PP-OCRv4 detector
    at 640x640: +540 MB per run)."""
    both, other = reference.copy_sharing_weights(), reduced.copy_sharing_weights().graph
    graph = both.graph
    fresh = name_allocator(graph)
    ref_tensors, red_tensors = graph.tensors(), other.tensors()  # by the names in ``pairs``
    at = {node.name: index for index, node in enumerate(graph.nodes)}
    step: dict[int, tuple[int, int, int]] = {}  # node -> (reference step, stage: 0 reference 1 reduced 2 compare, i)

    def after(tensors: list[gs.Tensor]) -> int:
        return max((step[id(p)][0] for t in tensors if (p := producer(t)) is not None and id(p) in step), default=-1)

    for index, node in enumerate(graph.nodes):
        step[id(node)] = (index, 0, index)
    for index, node in enumerate(other.nodes):  # topologically sorted: producers have their step already
        step[id(node)] = (max(at.get(node.name, -1), after(node.inputs)), 1, index)
    nodes = [*graph.nodes, *other.nodes]
    for node in other.nodes:
        node.name = fresh(REDUCED_PREFIX + node.name)
    for name, tensor in red_tensors.items():
        if tensor not in other.inputs:
            tensor.name = fresh(REDUCED_PREFIX + name)
    for tensor in other.inputs:  # read from the reference's input of the same name, in this graph's type
        source = ref_tensors[tensor.name]
        if source.dtype != tensor.dtype:
            cast = gs.Variable(fresh(REDUCED_PREFIX + tensor.name), dtype=tensor.dtype, shape=tensor.shape)
            nodes.append(gs.Node("Cast", fresh(cast.name), {"to": onnx.helper.np_dtype_to_tensor_dtype(
                np.dtype(tensor.dtype))}, inputs=[source], outputs=[cast]))
            step[id(nodes[-1])] = (-1, 0, 0)
            source = cast
        for reader in list(tensor.outputs):
            for i, read in enumerate(reader.inputs):
                if read is tensor:
                    reader.inputs[i] = source
        red_tensors[tensor.name] = source
    outputs = []
    for index, (r, q) in enumerate(pairs):
        reductions = _compared(ref_tensors[r], red_tensors[q], fresh, graph.opset)
        when = after([ref_tensors[r], red_tensors[q]])
        step.update({id(n): (when, 2, index) for n in reductions})
        nodes += reductions
        outputs += [t for n in reductions if n.op in ("ReduceSum", "Size") for t in n.outputs]
    graph.nodes = sorted(nodes, key=lambda n: step[id(n)])
    graph.outputs = outputs
    return both, [t.name for t in outputs]


def _compared(ref: gs.Tensor, red: gs.Tensor, fresh: Callable[[str], str], opset: int) -> list[gs.Node]:
    """Nodes reducing (``ref``, ``red``) to the SUMS over all axes but the last and ``ref``'s element count (Size):
    the outputs of the ReduceSum and Size nodes, in order. In float32 (float16 tensors cast): float64 sums gave the
    same ranking within 3e-6 on the PP-OCRv4 detector, for twice the time and 140 MB more per run."""
    nodes: list[gs.Node] = []

    def node(op: str, inputs: list[gs.Tensor], attrs: dict | None = None, dtype: type = np.float32) -> gs.Variable:
        out = gs.Variable(fresh(f"{ref.name}@{op}"), dtype=dtype)
        nodes.append(gs.Node(op, fresh(f"{ref.name}@{op}"), attrs or {}, inputs=inputs, outputs=[out]))
        return out

    def constant(values: list[int]) -> gs.Constant:
        return gs.Constant(fresh(f"{ref.name}@const"), np.array(values, np.int64))

    ref32, red32 = (t if t.dtype == np.float32 else node("Cast", [t], {"to": onnx.TensorProto.FLOAT})
                    for t in (ref, red))
    difference = node("Sub", [red32, ref32])
    last = node("Slice", [node("Shape", [ref], dtype=np.int64), constant([-1]), constant([2**62]), constant([0])],
                dtype=np.int64)
    rows = node("Concat", [constant([-1]), last], {"axis": 0}, dtype=np.int64)  # [positions, channels]
    for value in (node("Mul", [difference, difference]), ref32, node("Mul", [ref32, ref32])):
        flat = node("Reshape", [value, rows])
        if opset < 13:
            node("ReduceSum", [flat], {"axes": [0], "keepdims": 0})
        else:
            node("ReduceSum", [flat, constant([0])], {"keepdims": 0})
    node("Size", [ref], dtype=np.int64)
    return nodes
