"""BatchNormalization folding into the Conv, ConvTranspose, Gemm or 2-D MatMul that feeds it."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from infer_compile.passes.base import PassContext
from infer_compile.passes.channel_affine import PRODUCERS, fold_channel_affine, output_channels
from infer_compile.passes.graph_utils import constant, produced_by, read_only_by
from infer_compile.passes.rewrite import Miss, Outcome, RewritePass, consumer_miss


def _fold_batchnorm(graph: gs.Graph, bn: gs.Node, ctx: PassContext) -> Outcome:
    if bn.attrs.get("training_mode", 0):
        return Miss("training_mode is set")
    if any(t.outputs for t in bn.outputs[1:]):
        return Miss("the running mean/var outputs are read")
    node = produced_by(bn.inputs[0], PRODUCERS)
    if node is None:
        return Miss("the input is not produced by " + "/".join(PRODUCERS))
    if not read_only_by(graph, bn.inputs[0], bn):
        return consumer_miss(graph, bn.inputs[0])
    found = output_channels(node)
    if isinstance(found, Miss):
        return found
    params = [constant(t) for t in bn.inputs[1:5]]
    missing = [name for name, p in zip(("scale", "B", "mean", "var"), params, strict=True) if p is None]
    if missing:
        return Miss(f"{missing[0]} is not a constant")
    gamma, beta, mean, var = (np.asarray(p, np.float64) for p in params)
    if not all(p.shape == (found[0],) for p in (gamma, beta, mean, var)):
        return Miss(f"the parameters are not vectors of the {node.op}'s {found[0]} output channels")
    scale = gamma / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-5)))
    return fold_channel_affine(graph, node, bn, scale, beta - mean * scale)


class BatchNormFolding(RewritePass):
    name = "batchnorm-folding"
    description = "Fold inference BatchNormalization into the preceding Conv/ConvTranspose/Gemm/MatMul weights."
    rules = (("batchnorm", ("BatchNormalization",), _fold_batchnorm),)
