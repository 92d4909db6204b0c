"""BatchNormalization folding into the Conv, ConvTranspose, Gemm or 2-D MatMul that feeds it."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from infer_compile.passes.base import PassContext
from infer_compile.passes.channel_affine import PRODUCERS, fold_channel_affine, output_channels
from infer_compile.passes.graph_utils import constant, produced_by, sole_consumer
from infer_compile.passes.rewrite import RewritePass


def _fold_batchnorm(graph: gs.Graph, bn: gs.Node, ctx: PassContext) -> bool:
    if bn.attrs.get("training_mode", 0) or any(t.outputs for t in bn.outputs[1:]):
        return False
    node = produced_by(bn.inputs[0], PRODUCERS)
    if node is None or sole_consumer(graph, bn.inputs[0]) is not bn:
        return False
    params = [constant(t) for t in bn.inputs[1:5]]
    found = output_channels(node)
    if found is None or any(p is None for p in params):
        return False
    gamma, beta, mean, var = (np.asarray(p, np.float64) for p in params)
    if not all(p.shape == (found[0],) for p in (gamma, beta, mean, var)):
        return False
    scale = gamma / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-5)))
    return fold_channel_affine(graph, node, bn, scale, beta - mean * scale)


class BatchNormFolding(RewritePass):
    name = "batchnorm-folding"
    description = "Fold inference BatchNormalization into the preceding Conv/ConvTranspose/Gemm/MatMul weights."
    rules = (("batchnorm", ("BatchNormalization",), _fold_batchnorm),)
