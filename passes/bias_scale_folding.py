"""Bias and scale folding: a per-channel constant Add or Mul after Conv/Gemm goes into its weights."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from infer_compile.passes.base import PassContext
from infer_compile.passes.channel_affine import PRODUCERS, fold_channel_affine, output_channels, per_channel
from infer_compile.passes.graph_utils import constant, produced_by, read_only_by
from infer_compile.passes.rewrite import Miss, Outcome, RewritePass, consumer_miss


def _fold_into_producer(graph: gs.Graph, node: gs.Node, ctx: PassContext) -> Outcome:
    misses = []
    for data, other in (node.inputs, node.inputs[::-1]):
        producer = produced_by(data, PRODUCERS)
        if producer is None:
            continue
        outcome = _fold_side(graph, node, producer, data, other)
        if outcome is True:
            return outcome
        misses.append(outcome)
    return misses[0] if misses else Miss("no input is produced by " + "/".join(PRODUCERS))


def _fold_side(graph: gs.Graph, node: gs.Node, producer: gs.Node, data: gs.Tensor, other: gs.Tensor) -> Outcome:
    """Fold ``node`` (data op other) into ``producer``, which writes ``data``."""
    values = constant(other)
    if values is None:
        return Miss("the other input is not a constant")
    if not read_only_by(graph, data, node):
        return consumer_miss(graph, data)
    found = output_channels(producer)
    if isinstance(found, Miss):
        return found
    if values.dtype != data.dtype:
        return Miss(f"the constant's dtype differs from the {producer.op} output's")
    vector = per_channel(values, *found)
    if vector is None:
        return Miss(f"the constant is not one value per {producer.op} output channel")
    vector = vector.astype(np.float64)
    one, zero = np.ones_like(vector), np.zeros_like(vector)
    scale, shift = (vector, zero) if node.op == "Mul" else (one, vector)
    return fold_channel_affine(graph, producer, node, scale, shift)


class BiasScaleFolding(RewritePass):
    name = "bias-scale-folding"
    description = "Fold a per-channel constant Add/Mul after Conv/ConvTranspose/Gemm/2-D MatMul into its weights."
    rules = (("add", ("Add",), _fold_into_producer), ("mul", ("Mul",), _fold_into_producer))
