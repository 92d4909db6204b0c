"""Bias and scale folding: a per-channel constant Add or Mul after Conv/Gemm goes into its weights."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from infer_compile.passes.base import PassContext
from infer_compile.passes.channel_affine import PRODUCERS, fold_channel_affine, output_channels, per_channel
from infer_compile.passes.graph_utils import constant, produced_by, sole_consumer
from infer_compile.passes.rewrite import RewritePass


def _fold_into_producer(graph: gs.Graph, node: gs.Node, ctx: PassContext) -> bool:
    for data, other in (node.inputs, node.inputs[::-1]):
        producer = produced_by(data, PRODUCERS)
        values = constant(other)
        if producer is None or values is None or sole_consumer(graph, data) is not node:
            continue
        found = output_channels(producer)
        vector = None if found is None or values.dtype != data.dtype else per_channel(values, *found)
        if vector is None:
            continue
        vector = vector.astype(np.float64)
        one, zero = np.ones_like(vector), np.zeros_like(vector)
        scale, shift = (vector, zero) if node.op == "Mul" else (one, vector)
        return fold_channel_affine(graph, producer, node, scale, shift)
    return False


class BiasScaleFolding(RewritePass):
    name = "bias-scale-folding"
    description = "Fold a per-channel constant Add/Mul after Conv/ConvTranspose/Gemm/2-D MatMul into its weights."
    rules = (("add", ("Add",), _fold_into_producer), ("mul", ("Mul",), _fold_into_producer))
