"""Pad folding: a zero constant Pad over spatial dims becomes the pads of the Conv or AveragePool after it."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from infer_compile.passes.base import PassContext
from infer_compile.passes.graph_utils import bypass_node, constant, produced_by, rank, sole_consumer
from infer_compile.passes.rewrite import RewritePass


def _zero_pads(pad: gs.Node) -> np.ndarray | None:
    """Pad amounts [begin..., end...] when the Pad is constant-mode, pads zeros, and all is constant."""
    if pad.attrs.get("mode", "constant") != "constant":
        return None
    if "pads" in pad.attrs:  # opset < 11
        pads, value = np.array(pad.attrs["pads"]), float(pad.attrs.get("value", 0.0))
    else:
        pads = constant(pad.inputs[1])
        value: float | None = 0.0
        if len(pad.inputs) > 2 and pad.inputs[2].name:
            fill = constant(pad.inputs[2])
            value = None if fill is None or fill.size != 1 else float(fill.reshape(-1)[0])
        if len(pad.inputs) > 3 and pad.inputs[3].name:  # explicit axes (opset 18): not handled
            return None
    if pads is None or value != 0.0 or np.any(pads < 0):
        return None
    return pads.astype(np.int64)


def _fold_pad(graph: gs.Graph, node: gs.Node, ctx: PassContext) -> bool:
    pad = produced_by(node.inputs[0], "Pad")
    if pad is None or sole_consumer(graph, node.inputs[0]) is not node:
        return False
    if node.attrs.get("auto_pad", "NOTSET") != "NOTSET":
        return False
    # Averaging must count the padded zeros, as the explicit Pad made it do.
    if node.op == "AveragePool" and not node.attrs.get("count_include_pad", 0):
        return False
    pads, r = _zero_pads(pad), rank(pad.inputs[0])
    if pads is None or r is None or len(pads) != 2 * r or pads[[0, 1, r, r + 1]].any():
        return False
    spatial = r - 2
    own = np.array(node.attrs.get("pads", [0] * 2 * spatial), np.int64)
    merged = own + np.concatenate([pads[2:r], pads[r + 2:]])
    if not bypass_node(graph, pad):
        return False
    node.attrs["pads"] = [int(p) for p in merged]
    return True


class PadFolding(RewritePass):
    name = "pad-folding"
    description = "Fold a zero-valued constant Pad over spatial dims into the following Conv/AveragePool pads."
    rules = (("pad", ("Conv", "AveragePool"), _fold_pad),)
