"""Which reduced-precision layers hurt accuracy most, ranked from one run of each graph.

The fp32 reference and the reduced-precision graph run side by side on the held-out samples with every
candidate layer's input and output exposed. A layer's sensitivity is how much error its output carries
beyond what its inputs brought before its own quantizers: error(output) - max error(inputs), each error the mean over
channels (last axis) of the squared difference from fp32 divided by that channel's fp32 variance. Per
channel, because transformers carry a few huge residual channels that LayerNorm later divides away:
one relative error over the whole tensor would see only them.

One run of each graph replaces one build and evaluation per layer (MiniLM: 2 runs instead of 48).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx_graphsurgeon as gs

from infer_compile.calibration.collect import exposed
from infer_compile.core.ir import Model
from infer_compile.core.numerics import Feeds, in_dtypes, ort_session
from infer_compile.passes.graph_utils import producer

FLOATS = (np.float32, np.float16)


class ChannelError:
    """Streamed per-channel squared error against a reference and the reference's variance."""

    def __init__(self) -> None:
        self.squared_error: np.ndarray | float = 0.0
        self.total: np.ndarray | float = 0.0
        self.total_squares: np.ndarray | float = 0.0
        self.count = 0

    def update(self, reference: np.ndarray, value: np.ndarray) -> None:
        ref = reference.astype(np.float64).reshape(-1, reference.shape[-1] if reference.ndim else 1)
        got = value.astype(np.float64).reshape(ref.shape)
        self.squared_error = self.squared_error + np.square(got - ref).sum(axis=0)
        self.total = self.total + ref.sum(axis=0)
        self.total_squares = self.total_squares + np.square(ref).sum(axis=0)
        self.count += ref.shape[0]

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
    pairs = {(r, q) for n in layers for r, q in zip([*ref_io[n][0], ref_io[n][1]], [*red_io[n][0], red_io[n][1]],
                                                      strict=True)}
    errors = {pair: ChannelError() for pair in pairs}
    ref_names = sorted({r for r, _ in pairs})
    red_names = sorted({q for _, q in pairs})
    with exposed(reference, ref_names), exposed(reduced, red_names):
        ref_session = ort_session(reference, arena=False)
        red_session = ort_session(reduced, optimize=True, arena=False)
        for feeds in samples:  # one at a time: every layer's input and output of both graphs is exposed
            ref_values = dict(zip(ref_names, ref_session.run(ref_names, feeds), strict=True))
            red_values = dict(zip(red_names, red_session.run(red_names, in_dtypes(feeds, reduced.inputs)),
                                  strict=True))
            for (r, q), error in errors.items():
                error.update(ref_values[r], red_values[q])

    def sensitivity(name: str) -> float:
        (ref_in, ref_out), (red_in, red_out) = ref_io[name], red_io[name]
        brought = max((errors[p].error for p in zip(ref_in, red_in, strict=True)), default=0.0)
        return errors[(ref_out, red_out)].error - brought

    added = {name: round(sensitivity(name), 6) for name in layers}
    ranked = sorted(layers, key=added.__getitem__, reverse=True)
    return ranked + [n for n in candidates if n not in added], added
