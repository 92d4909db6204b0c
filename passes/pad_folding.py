"""Pad folding: a zero constant Pad over spatial dims becomes the pads of the Conv or AveragePool after it."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from infer_compile.passes.base import PassContext
from infer_compile.passes.graph_utils import constant, produced_by, rank, read_only_by
from infer_compile.passes.rewrite import Miss, Outcome, RewritePass, bypass, consumer_miss


def _zero_pads(pad: gs.Node) -> np.ndarray | Miss:
    """Pad amounts [begin..., end...] when the Pad is constant-mode, pads zeros, and all is constant."""
    mode = pad.attrs.get("mode", "constant")
    if mode != "constant":
        return Miss(f"the Pad mode is {mode}")
    pads: np.ndarray | None
    value: float | None
    if "pads" in pad.attrs:  # opset < 11
        pads, value = np.array(pad.attrs["pads"]), float(pad.attrs.get("value", 0.0))
    else:
        pads, value = constant(pad.inputs[1]), 0.0
        if len(pad.inputs) > 2 and pad.inputs[2].name:
            fill = constant(pad.inputs[2])
            value = None if fill is None or fill.size != 1 else float(fill.reshape(-1)[0])
        if len(pad.inputs) > 3 and pad.inputs[3].name:  # explicit axes (opset 18): not handled
            return Miss("the Pad has explicit axes")
    if pads is None:
        return Miss("the pads are not a constant")
    if value is None:
        return Miss("the pad value is not a scalar constant")
    if value != 0.0:
        return Miss("the pad value is not 0")
    if np.any(pads < 0):
        return Miss("the Pad crops (negative pads)")
    return pads.astype(np.int64)


def _fold_pad(graph: gs.Graph, node: gs.Node, ctx: PassContext) -> Outcome:
    pad = produced_by(node.inputs[0], "Pad")
    if pad is None:
        return Miss("the input is not produced by a Pad")
    if not read_only_by(graph, node.inputs[0], node):
        return consumer_miss(graph, node.inputs[0])
    if node.attrs.get("auto_pad", "NOTSET") != "NOTSET":
        return Miss(f"the {node.op} uses auto_pad")
    # Averaging must count the padded zeros, as the explicit Pad made it do.
    if node.op == "AveragePool" and not node.attrs.get("count_include_pad", 0):
        return Miss("the AveragePool does not count padded zeros (count_include_pad=0)")
    pads, r = _zero_pads(pad), rank(pad.inputs[0])
    if isinstance(pads, Miss):
        return pads
    if r is None:
        return Miss("the Pad input rank is not known")
    if len(pads) != 2 * r:
        return Miss("the pads do not cover every axis")
    if pads[[0, 1, r, r + 1]].any():
        return Miss("the Pad pads the batch or channel axis")
    spatial = r - 2
    own = np.array(node.attrs.get("pads", [0] * 2 * spatial), np.int64)
    merged = own + np.concatenate([pads[2:r], pads[r + 2:]])
    bypassed = bypass(graph, pad)
    if bypassed is True:
        node.attrs["pads"] = [int(p) for p in merged]
    return bypassed


class PadFolding(RewritePass):
    name = "pad-folding"
    description = "Fold a zero-valued constant Pad over spatial dims into the following Conv/AveragePool pads."
    rules = (("pad", ("Conv", "AveragePool"), _fold_pad),)
