"""SmoothQuant: move activation outliers into the weights before INT8 quantization.

Transformer activations that feed linear layers (LayerNorm outputs, GELU outputs) have a few channels
whose values are 10-100x the rest; one per-tensor int8 scale then leaves the other channels a handful of
levels (MiniLM: quantizing only the 24 LayerNorm-fed MatMuls drops cosine to 0.975). Per input channel j,
with s_j = max|X_j|^alpha / max|W_j|^(1 - alpha) (Xiao et al., 2023), X' = X / s and W' = s * W give
the same product in exact arithmetic, and X' has flat channels that quantize well while the weights,
quantized per output channel, absorb the range.

The division by s becomes a Mul in front of the layers (all linear layers reading one tensor share it: the
Q, K and V projections), or is folded into the scale and bias of a LayerNormalization that feeds only them.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from infer_compile.calibration.collect import channel_maxima
from infer_compile.core.capabilities import Capability
from infer_compile.core.ir import Model
from infer_compile.passes.base import Pass, PassContext, PassResult
from infer_compile.passes.graph_utils import add_node, constant, is_float32, new_constant, produced_by
from infer_compile.passes.options import SMOOTHQUANT

# Scales are clamped so that a dead channel (max |x| = 0) or a zero weight row does not divide by zero.
MIN_SCALE = 1e-5


def linear_weight(node: gs.Node) -> tuple[np.ndarray, int] | None:
    """A linear layer's constant 2-D float weight and its axis that meets the activation's last axis."""
    weight = constant(node.inputs[1]) if len(node.inputs) > 1 else None
    if weight is None or weight.ndim != 2 or weight.dtype != np.float32:
        return None
    if node.op == "MatMul":
        return weight, 0
    if node.op == "Gemm" and not node.attrs.get("transA", 0):
        return weight, 1 if node.attrs.get("transB", 0) else 0
    return None


def _linear(node: gs.Node) -> tuple[np.ndarray, int]:
    found = linear_weight(node)
    if found is None:
        raise ValueError(f"{node.name} is not a linear layer with a constant weight")  # smoothable_groups keeps those
    return found


def smoothable_groups(graph: gs.Graph) -> dict[str, list[gs.Node]]:
    """Float activations by name, each with the linear layers (constant 2-D weights) that read it as input 0."""
    groups: dict[str, list[gs.Node]] = {}
    for node in graph.nodes:
        if node.op in ("MatMul", "Gemm") and node.inputs and linear_weight(node) is not None:
            x = node.inputs[0]
            if isinstance(x, gs.Variable) and is_float32(x) and x.shape and isinstance(x.shape[-1], int):
                groups.setdefault(x.name, []).append(node)
    return groups


def smoothing_scales(x_max: np.ndarray, layers: list[gs.Node], alpha: float) -> np.ndarray:
    """s_j = max|X_j|^alpha / max|W_j|^(1 - alpha), the weight maximum taken over every layer reading X."""
    w_max = np.zeros_like(x_max)
    for node in layers:
        weight, axis = _linear(node)
        w_max = np.maximum(w_max, np.abs(weight).max(axis=1 - axis))
    scales = np.power(np.maximum(x_max, MIN_SCALE), alpha) / np.power(np.maximum(w_max, MIN_SCALE), 1 - alpha)
    return np.clip(scales, MIN_SCALE, None).astype(np.float32)


def _scale_weights(graph: gs.Graph, node: gs.Node, scales: np.ndarray) -> None:
    weight, axis = _linear(node)
    shape = [-1, 1] if axis == 0 else [1, -1]
    node.inputs[1] = new_constant(graph, f"{node.inputs[1].name}_smoothed", weight * scales.reshape(shape))


def _fold_into_layernorm(x: gs.Variable, layers: list[gs.Node], scales: np.ndarray) -> bool:
    """Divide a LayerNormalization's scale and bias by ``scales`` when its output feeds only ``layers``."""
    norm = produced_by(x, "LayerNormalization")
    if norm is None or len(x.outputs) != len(layers) or norm.attrs.get("axis", -1) not in (-1, len(x.shape) - 1):
        return False
    params = [constant(t) for t in norm.inputs[1:3]]
    if any(p is None or p.shape != scales.shape for p in params) or any(len(t.outputs) != 1 for t in norm.inputs[1:3]):
        return False
    for t, values in zip(norm.inputs[1:3], params, strict=True):
        t.values = (values / scales).astype(np.float32)
    return True


class SmoothQuant(Pass):
    name = "smooth-quant"
    description = "Move activation outliers of MatMul/Gemm inputs into their weights (SmoothQuant) before INT8."
    requires = frozenset({Capability.CALIBRATION})
    options = (SMOOTHQUANT,)
    precision = "int8"  # exact in fp32; the calibration-dependent scales change float rounding only

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        result = PassResult()
        alpha = ctx.option(SMOOTHQUANT)
        groups = smoothable_groups(model.graph)
        if alpha <= 0 or not groups:
            return result
        maxima = channel_maxima(model, list(groups), ctx.calibration.split()[0])
        tensors = model.graph.tensors()
        for name, layers in groups.items():
            scales = smoothing_scales(maxima[name], layers, alpha)
            x = tensors[name]
            if _fold_into_layernorm(x, layers, scales):
                result.add("folded_into_layernorm")
            else:
                inverse = new_constant(model.graph, f"{name}_smooth_inverse", (1 / scales).astype(np.float32))
                smoothed = gs.Variable(f"{name}_smoothed", dtype=x.dtype, shape=x.shape)
                add_node(model.graph, "Mul", [x, inverse], name=f"{name}_Smooth").outputs.append(smoothed)
                for node in layers:
                    node.inputs[0] = smoothed
                result.add("smoothing_muls")
            for node in layers:
                _scale_weights(model.graph, node, scales)
            result.add("layers_smoothed", len(layers))
        model.graph.cleanup(remove_unused_graph_inputs=False).toposort()
        return result
