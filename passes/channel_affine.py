"""Folding a per-output-channel ``y * scale + shift`` into the weights of the op producing ``y``.

Shared by batchnorm-folding (BN is such an affine map) and bias-scale-folding (Mul/Add by a
per-channel constant). Supported producers: Conv, ConvTranspose, Gemm, and MatMul with a 2-D
input (which becomes a Gemm). Weights must be constants read by the producer alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from infer_compile.passes.graph_utils import detach, new_constant, private_constant, rank
from infer_compile.passes.rewrite import Miss, Outcome

PRODUCERS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass
class _Plan:
    """The new weights for the producer, computed before anything is changed."""

    op: str
    weight: np.ndarray
    bias: np.ndarray
    attrs: dict


def output_channels(node: gs.Node) -> tuple[int, int] | Miss:
    """(channel count, output rank) of a supported producer with constant weights, channel axis 1."""
    weight = private_constant(node.inputs[1], node) if len(node.inputs) > 1 else None
    if weight is None:
        return Miss(f"the {node.op} weight is not a constant only it reads")
    if weight.dtype.kind != "f":
        return Miss(f"the {node.op} weight is not floating point")
    if node.op == "Conv":
        return weight.shape[0], weight.ndim
    if node.op == "ConvTranspose":
        return weight.shape[1] * int(node.attrs.get("group", 1)), weight.ndim
    if weight.ndim != 2:
        return Miss(f"the {node.op} weight is not 2-D")
    if node.op == "MatMul" and rank(node.inputs[0]) != 2:
        return Miss("the MatMul input is not known to be 2-D")  # the channel axis is 1 only for 2-D outputs
    return (weight.shape[0] if node.attrs.get("transB", 0) else weight.shape[1]), 2


def per_channel(values: np.ndarray, channels: int, out_rank: int) -> np.ndarray | None:
    """``values`` as a (channels,) vector when broadcasting it against the output only varies along axis 1."""
    if values.ndim > out_rank:
        return None
    shape = (1,) * (out_rank - values.ndim) + values.shape
    if any(d != 1 for i, d in enumerate(shape) if i != 1) or shape[1] not in (1, channels):
        return None
    return np.broadcast_to(values.reshape(-1), (channels,))


def _plan(node: gs.Node, scale: np.ndarray, shift: np.ndarray) -> _Plan | None:
    weight = np.asarray(node.inputs[1].values)
    bias_tensor = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2].name else None
    bias = np.zeros(1, weight.dtype) if bias_tensor is None else private_constant(bias_tensor, node)
    if bias is None:
        return None
    dtype = weight.dtype
    if node.op == "Conv":
        w = weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
        return _Plan("Conv", w.astype(dtype), (bias * scale + shift).astype(dtype), dict(node.attrs))
    if node.op == "ConvTranspose":
        group = int(node.attrs.get("group", 1))
        grouped = weight.reshape((group, weight.shape[0] // group, *weight.shape[1:]))
        w = grouped * scale.reshape((group, 1, -1) + (1,) * (weight.ndim - 2))
        return _Plan("ConvTranspose", w.reshape(weight.shape).astype(dtype),
                     (bias * scale + shift).astype(dtype), dict(node.attrs))
    attrs = dict(node.attrs) if node.op == "Gemm" else {}
    columns = scale[:, None] if attrs.get("transB", 0) else scale[None, :]
    beta = float(attrs.get("beta", 1.0))
    # Gemm's C broadcasts to the output [M, N]; scaled per column it still does.
    c = (beta * bias * scale + shift) if bias_tensor is not None else np.broadcast_to(shift, scale.shape)
    return _Plan("Gemm", (weight * columns).astype(dtype), np.asarray(c, dtype), {**attrs, "beta": 1.0})


def fold_channel_affine(graph: gs.Graph, node: gs.Node, consumer: gs.Node, scale: np.ndarray,
                        shift: np.ndarray) -> Outcome:
    """Make ``node`` compute ``consumer``'s output ``node(x) * scale + shift`` and drop ``consumer``.

    Returns a Miss, with the graph untouched, when the weights cannot be rewritten.
    """
    plan = _plan(node, scale, shift)
    if plan is None:
        return Miss(f"the {node.op} bias is not a constant only it reads")
    node.op, node.attrs = plan.op, plan.attrs
    node.inputs[1] = new_constant(graph, node.inputs[1].name, plan.weight)
    bias = new_constant(graph, f"{node.name}_bias", plan.bias)
    if len(node.inputs) > 2:
        node.inputs[2] = bias
    else:
        node.inputs.append(bias)
    out = consumer.outputs[0]
    detach(consumer)
    node.outputs[0] = out
    return True
