"""INT8 by explicit QuantizeLinear/DequantizeLinear nodes, placed by TensorRT's rules.

- The inputs of weighted ops (Conv, ConvTranspose, Gemm, MatMul) are quantized: activations
  per-tensor, weights per output channel (stored as int8 initializers behind a DequantizeLinear).
- The skip input of a residual Add fed by a quantized Conv is quantized too, so a backend can fuse
  Conv+Add in int8 (for ONNX Runtime also the Add's output: QLinearAdd).
- Symmetric signed int8 (zero-point 0), scale = amax / 127 from the calibrator; uint8 (amax / 255) only
  where a target's placement below says. Targets advertising ``QDQ_ASYMMETRIC_ACTIVATIONS`` (ONNX Runtime)
  get asymmetric uint8 for signed activations instead: scale = (max - min) / 255 and a zero-point, as
  quantize_static's QUInt8 does; all 256 levels used even when a tensor is skewed (the network input, residual
  sums). uint8, not int8 with a zero-point (the same values): ORT fuses a QLinearConv/QLinearAdd only when its
  input and output share one type, and every activation after a ReLU is uint8 (MobileNetV2: with int8 signed
  activations 15 of its 52 convolutions and all 10 residual Adds ran in float, between DequantizeLinears).
- For ONNX Runtime (targets advertising ``QDQ_PLACEMENT_QLINEAR``), the outputs of Conv/ConvTranspose/Gemm are quantized
  as well: ORT only runs a convolution in int8 (QLinearConv) when its output is quantized; a ReLU
  after them is absorbed into an unsigned quantizer (see QuantizationPlan.absorbed_activations). So is
  the sum of a MatMul and its bias, unless it feeds a residual Add (QGemm, see _bias_add) or the target
  runs MatMulIntegerToFloat (float output).
- For OpenVINO (targets advertising ``QDQ_PLACEMENT_LPT``), as NNCF places them: both inputs of a residual
  Add and the inputs of pooling are quantized, so the CPU plugin fuses the Add into the Conv and pools in u8
  (with one float input, each block's Add runs as a separate float eltwise), and activations that are
  non-negative by construction (after a ReLU) are uint8: twice the resolution, and what LPT expects.

``--exclude-nodes`` / ``--exclude-op-types`` (and the accuracy fallback) keep nodes in float: they
get no Q/DQ on their inputs and read the unquantized tensors.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from infer_compile.calibration.collect import calibrated_ranges, signed_range_names
from infer_compile.calibration.data import CalibrationData
from infer_compile.core.capabilities import Capability
from infer_compile.core.errors import UnsupportedError, UserInputError
from infer_compile.core.ir import Model
from infer_compile.passes.base import Pass, PassContext, PassResult
from infer_compile.passes.graph_utils import bypass_node, clip_bounds, is_float32, is_graph_io, producer
from infer_compile.passes.options import EXCLUDE_NODES, EXCLUDE_OP_TYPES, QUANTIZE_OUTPUTS
from infer_compile.passes.precision_state import (
    PrecisionState,
    name_unnamed_nodes,
    node_precisions,
)

# The layers INT8 quantizes (weights per channel, activations per tensor); autotune chooses per layer among them.
WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
# Ops whose output ORT needs quantized to pick its int8 kernel (QLinearConv, QGemm).
OUTPUT_QUANTIZED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm"})
# Pooling whose input OpenVINO wants quantized. ReduceMean only when it pools non-negative activations: a
# LayerNorm's ReduceMean reads signed values whose int8 error would reach the normalisation.
POOLING_OPS = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"})
# Ops whose output is non-negative when their first input is.
SIGN_KEEPING_OPS = POOLING_OPS | {"ReduceMean", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze"}
MIN_OPSET = 13  # per-channel DequantizeLinear (axis)
INT8_MAX = 127
UINT8_MAX = 255


@dataclass
class QuantizationPlan:
    """Which nodes run in int8 and which activation tensors get a Q/DQ pair."""

    nodes: list[gs.Node] = field(default_factory=list)
    activations: list[str] = field(default_factory=list)
    excluded: frozenset[str] = frozenset()  # node names kept in float
    # ONNX Runtime style: a quantized output read only by a ReLU (or ReLU6) is quantized to uint8
    # (zero-point 0) with the ReLU output's range and the ReLU is dropped: the quantizer clamps itself. Signed
    # post-ReLU values would use half of int8 and, shifted to uint8 by ORT's AVX2 kernels, saturate
    # their 16-bit pair sums; unsigned values keep 8 bits and stay small.
    absorbed_activations: dict[str, gs.Node] = field(default_factory=dict)  # output name -> its ReLU
    unsigned: set[str] = field(default_factory=set)  # activations quantized to uint8 (absorbed ones too)
    asymmetric: bool = False  # activations not in ``unsigned`` get uint8 with a zero-point
    range_of: dict[str, str] = field(default_factory=dict)

    @property
    def calibrated(self) -> list[str]:
        """Tensors whose ranges the plan needs. Asymmetric plans need signed extremes too, also of unsigned
        tensors: with nodes excluded (accuracy fallback) a ReLU may stay and both its sides be quantized signed."""
        amax = [*self.activations, *self.range_of.values()]
        signed = [name for t in amax for name in signed_range_names(t)] if self.asymmetric else []
        return list(dict.fromkeys([*amax, *signed]))


def is_float_variable(tensor: gs.Tensor) -> bool:
    return isinstance(tensor, gs.Variable) and is_float32(tensor)


def is_float_constant(tensor: gs.Tensor) -> bool:
    return isinstance(tensor, gs.Constant) and is_float32(tensor)


def weight_input(node: gs.Node) -> int | None:
    """Index of the constant weight of a weighted op, or None when it has none."""
    if len(node.inputs) > 1 and is_float_constant(node.inputs[1]):
        return 1
    return None


def weight_axis(node: gs.Node, weight: np.ndarray) -> int | None:
    """The output-channel axis of ``node``'s weight (per-channel scales), None for per-tensor."""
    if node.op == "Conv":
        return 0
    if node.op == "ConvTranspose":
        return 1 if node.attrs.get("group", 1) == 1 else None
    if node.op == "Gemm":
        return 0 if node.attrs.get("transB", 0) else 1
    return weight.ndim - 1 if weight.ndim >= 2 else None  # MatMul: [..., K, N]


def activation_inputs(node: gs.Node) -> list[gs.Tensor]:
    """The float activation inputs of a weighted op (MatMul may have two: attention's Q.K^T)."""
    count = 2 if node.op == "MatMul" else 1
    return [t for t in node.inputs[:count] if is_float_variable(t)]


@dataclass(frozen=True)
class Placement:
    """Where Q/DQ go beyond TensorRT's rules, as the target's INT8 kernels want them."""

    quantize_outputs: bool = False  # ONNX Runtime: Conv/Gemm and residual Add outputs (QLinearConv, QLinearAdd)
    # ONNX Runtime without MatMulIntegerToFloat: MatMul+bias sums too (QGemm). With it, integer-matmul-fusion turns
    # the MatMul into one that returns float, and a quantized sum would only add error and two nodes (MiniLM:
    # 24 extra Q/DQ pairs, one before every GELU).
    quantize_bias_sums: bool = False
    lpt: bool = False  # OpenVINO: both residual Add inputs, pooling inputs, uint8 non-negative activations
    asymmetric: bool = False  # ONNX Runtime: signed activations get a zero-point (uint8, (max - min) / 255)

    @classmethod
    def for_context(cls, ctx: PassContext) -> Placement:
        outputs = ctx.option(QUANTIZE_OUTPUTS)
        if outputs is None:
            outputs = Capability.QDQ_PLACEMENT_QLINEAR in ctx.capabilities
        return cls(quantize_outputs=outputs,
                   quantize_bias_sums=outputs and Capability.MATMUL_INTEGER_TO_FLOAT not in ctx.capabilities,
                   lpt=Capability.QDQ_PLACEMENT_LPT in ctx.capabilities,
                   asymmetric=Capability.QDQ_ASYMMETRIC_ACTIVATIONS in ctx.capabilities)


def plan_quantization(graph: gs.Graph, excluded: frozenset[str], placement: Placement) -> QuantizationPlan:
    plan = QuantizationPlan(excluded=excluded)
    chosen: dict[str, None] = {}  # ordered set of activation names
    quantized_ids: set[int] = set()
    for node in graph.nodes:
        if node.op not in WEIGHTED_OPS or node.name in excluded:
            continue
        acts = activation_inputs(node)
        has_weight = weight_input(node) is not None
        if not acts or (not has_weight and node.op != "MatMul") or (node.op == "MatMul" and len(acts) + has_weight < 2):
            continue
        plan.nodes.append(node)
        quantized_ids.add(id(node))
        chosen.update(dict.fromkeys(t.name for t in acts))
        if placement.quantize_outputs and node.op in OUTPUT_QUANTIZED_OPS:
            _quantize_output(graph, plan, chosen, node.outputs[0])
        elif placement.quantize_bias_sums and (add := _bias_add(node)):
            _quantize_output(graph, plan, chosen, add.outputs[0])
    for node in graph.nodes:
        if node.op != "Add" or node.name in excluded or len(node.inputs) != 2:
            continue
        sources = [producer(t) for t in node.inputs]
        for i, src in enumerate(sources):
            other = node.inputs[1 - i]
            if src is not None and id(src) in quantized_ids and src.op == "Conv" and is_float_variable(other):
                chosen[other.name] = None
                if placement.lpt:
                    chosen[node.inputs[i].name] = None
                if placement.quantize_outputs:  # both inputs and the output quantized: ORT runs QLinearAdd
                    _quantize_output(graph, plan, chosen, node.outputs[0])
                break
    if placement.lpt:
        _quantize_pooling_inputs(graph, excluded, chosen)
    dropped = {relu.outputs[0].name for relu in plan.absorbed_activations.values()}  # read the quantized output now
    plan.activations = [name for name in chosen if name not in dropped]
    plan.unsigned = set(plan.absorbed_activations)
    if placement.lpt:
        tensors = graph.tensors()
        plan.unsigned |= {name for name in plan.activations if _non_negative(tensors[name])}
    plan.asymmetric = placement.asymmetric
    return plan


def _quantize_pooling_inputs(graph: gs.Graph, excluded: frozenset[str], chosen: dict[str, None]) -> None:
    for node in graph.nodes:
        pools = node.op in POOLING_OPS or (node.op == "ReduceMean" and _non_negative(node.inputs[0]))
        if pools and node.name not in excluded and is_float_variable(node.inputs[0]):
            chosen[node.inputs[0].name] = None


def _non_negative(tensor: gs.Tensor) -> bool:
    """True when ``tensor`` comes from a ReLU (or ReLU6) through ops that keep signs (pooling, reshapes)."""
    src = producer(tensor)
    while src is not None and src.op in SIGN_KEEPING_OPS:
        src = producer(src.inputs[0])
    return src is not None and _clamps_at_zero(src)


def _quantize_output(graph: gs.Graph, plan: QuantizationPlan, chosen: dict[str, None], out: gs.Tensor) -> None:
    """Quantize a node's output (ORT style), absorbing the ReLU that follows it if it can."""
    if not is_float_variable(out) or is_graph_io(graph, out):
        return
    chosen[out.name] = None
    if relu := _absorbable_relu(graph, out, plan.excluded):
        plan.absorbed_activations[out.name] = relu
        plan.range_of[out.name] = relu.outputs[0].name


def _bias_add(node: gs.Node) -> gs.Node | None:
    """The Add of a constant bias that alone reads a weighted MatMul's output, unless its sum feeds another Add.

    With static shapes ORT fuses MatMul+bias into a Gemm before it fuses Q/DQ, and runs that Gemm in int8
    (QGemm) only when the sum is quantized: else in float, dequantizing its weights on every run (with dynamic
    shapes it keeps MatMul and Add apart, and quantizing the sum would only add error). Sums feeding a residual
    Add stay float: the residual stream's outlier channels lose too much to a per-tensor quantizer (MiniLM's
    cosine 0.94 -> 0.82)."""
    consumers = node.outputs[0].outputs
    if node.op != "MatMul" or weight_input(node) is None or len(consumers) != 1 or consumers[0].op != "Add":
        return None
    if not node.inputs[0].shape or not all(isinstance(d, int) and d >= 0 for d in node.inputs[0].shape):
        return None
    add = consumers[0]
    if len(add.inputs) != 2 or not any(is_float_constant(t) for t in add.inputs):
        return None
    return None if any(c.op == "Add" for c in add.outputs[0].outputs) else add


def _clamps_at_zero(node: gs.Node) -> bool:
    """ReLU, or Clip(0, max) such as ReLU6: an unsigned quantizer with the output's range does the same."""
    return node.op == "Relu" or (node.op == "Clip" and (clip_bounds(node) or (None,))[0] == 0.0)


def _absorbable_relu(graph: gs.Graph, out: gs.Variable, excluded: frozenset[str]) -> gs.Node | None:
    """The ReLU/ReLU6 that alone reads ``out``, when dropping it changes no graph output or excluded node."""
    if len(out.outputs) != 1 or not _clamps_at_zero(out.outputs[0]) or is_graph_io(graph, out):
        return None
    relu = out.outputs[0]
    relu_out = relu.outputs[0]
    if relu.name in excluded or is_graph_io(graph, relu_out) or any(c.name in excluded for c in relu_out.outputs):
        return None
    return relu


def apply_plan(graph: gs.Graph, plan: QuantizationPlan, ranges: dict[str, float]) -> dict[str, int]:
    """Insert the Q/DQ pairs and int8 weights ``plan`` says; returns counts by rule."""
    for relu in plan.absorbed_activations.values():
        bypass_node(graph, relu)
    tensors = graph.tensors()
    for name in plan.activations:
        _quantize_activation(graph, tensors[name], *_activation_quantizer(plan, name, ranges), plan.excluded)
    weights: dict[str, gs.Variable] = {}
    for node in plan.nodes:
        index = weight_input(node)
        if index is None:
            continue
        weight = node.inputs[index]
        if weight.name not in weights:
            weights[weight.name] = _quantize_weight(graph, weight, weight_axis(node, weight.values))
        node.inputs[index] = weights[weight.name]
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    return {"int8_nodes": len(plan.nodes), "activations_quantized": len(plan.activations),
            "weights_quantized": len(weights), "activations_absorbed": len(plan.absorbed_activations)}


def _scale(amax: float, levels: int = INT8_MAX) -> np.float32:
    return np.float32(amax / levels if amax > 0 and np.isfinite(amax) else 1.0)


def _activation_quantizer(plan: QuantizationPlan, name: str, ranges: dict[str, float]) -> tuple[np.float32, np.ndarray]:
    """Scale and zero-point (whose dtype is the quantized type) of the activation ``name``."""
    amax = ranges[plan.range_of.get(name, name)]
    if plan.asymmetric and name not in plan.unsigned:
        low, high = (ranges[n] for n in signed_range_names(name))
        return _asymmetric_quantizer(max(low, -amax), min(high, amax))  # the calibrator's clipping, both ends
    if name in plan.unsigned:
        return _scale(amax, UINT8_MAX), np.array(0, np.uint8)
    return _scale(amax), np.array(0, np.int8)


def _asymmetric_quantizer(low: float, high: float) -> tuple[np.float32, np.ndarray]:
    """uint8 covering [low, high] (0 inside it) with all 256 levels: zero-point = -low / scale."""
    scale = _scale(high - low, UINT8_MAX)
    return scale, np.array(np.clip(np.round(-low / scale), 0, UINT8_MAX), np.uint8)


def _quantize_activation(graph: gs.Graph, tensor: gs.Variable, scale_value: np.float32, zero_point: np.ndarray,
                         excluded: frozenset[str]) -> None:
    dtype = zero_point.dtype
    scale = gs.Constant(f"{tensor.name}_scale", np.array(scale_value, np.float32))
    zero = gs.Constant(f"{tensor.name}_zero_point", zero_point)
    quantized = gs.Variable(f"{tensor.name}_quantized", dtype=dtype, shape=tensor.shape)
    dequantized = gs.Variable(f"{tensor.name}_dequantized", dtype=np.float32, shape=tensor.shape)
    consumers = [n for n in tensor.outputs if n.name not in excluded]
    graph.nodes.append(gs.Node("QuantizeLinear", f"{tensor.name}_QuantizeLinear", inputs=[tensor, scale, zero],
                               outputs=[quantized]))
    graph.nodes.append(gs.Node("DequantizeLinear", f"{tensor.name}_DequantizeLinear",
                               inputs=[quantized, scale, zero], outputs=[dequantized]))
    for consumer in consumers:
        for i, t in enumerate(consumer.inputs):
            if t is tensor:
                consumer.inputs[i] = dequantized


def _quantize_weight(graph: gs.Graph, weight: gs.Constant, axis: int | None) -> gs.Variable:
    values = weight.values.astype(np.float32)
    if axis is None:
        amax = np.array(np.abs(values).max(initial=0.0), np.float32)
    else:
        amax = np.abs(np.moveaxis(values, axis, 0)).reshape(values.shape[axis], -1).max(axis=1, initial=0.0)
    scale = np.where(amax > 0, amax / INT8_MAX, 1.0).astype(np.float32)
    broadcast = scale if axis is None else scale.reshape([-1 if d == axis else 1 for d in range(values.ndim)])
    q = np.clip(np.round(values / broadcast), -INT8_MAX, INT8_MAX).astype(np.int8)
    inputs = [gs.Constant(f"{weight.name}_int8", q), gs.Constant(f"{weight.name}_scale", scale),
              gs.Constant(f"{weight.name}_zero_point", np.zeros(scale.shape, np.int8))]
    out = gs.Variable(f"{weight.name}_dequantized", dtype=np.float32, shape=list(values.shape))
    attrs = {} if axis is None else {"axis": axis}
    graph.nodes.append(gs.Node("DequantizeLinear", f"{weight.name}_DequantizeLinear", attrs=attrs, inputs=inputs,
                               outputs=[out]))
    return out


def check_node_names(graph: gs.Graph, names: Iterable[str]) -> None:
    known = {n.name for n in graph.nodes}
    unknown = sorted(set(names) - known)
    if unknown:
        sample = ", ".join(sorted(n.name for n in graph.nodes if n.op in WEIGHTED_OPS)[:5])
        raise UserInputError(f"--exclude-nodes: no node named {', '.join(unknown)}",
                             hint=f"node names are ONNX node names, e.g. {sample}")


class QuantizeInt8(Pass):
    name = "quantize-int8"
    description = ("Insert INT8 Q/DQ (TensorRT placement, ORT/OpenVINO variants; per-channel weights) from "
                   "calibrated ranges.")
    requires = frozenset({Capability.CALIBRATION})
    uses = frozenset({Capability.QDQ_PLACEMENT_LPT, Capability.QDQ_PLACEMENT_QLINEAR,
                      Capability.QDQ_ASYMMETRIC_ACTIVATIONS, Capability.MATMUL_INTEGER_TO_FLOAT})
    options = (EXCLUDE_NODES, EXCLUDE_OP_TYPES, QUANTIZE_OUTPUTS)
    precision = "int8"

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        if model.opset < MIN_OPSET:
            raise UnsupportedError(f"INT8 Q/DQ needs opset >= {MIN_OPSET}, the model has opset {model.opset}",
                                   hint="re-export the model with a newer opset")
        if any(n.op == "QuantizeLinear" for n in model.graph.nodes):
            return PassResult({"already_quantized": 1})
        data: CalibrationData = ctx.calibration
        name_unnamed_nodes(model.graph)
        exclude_nodes, exclude_ops = set(ctx.option(EXCLUDE_NODES)), set(ctx.option(EXCLUDE_OP_TYPES))
        check_node_names(model.graph, exclude_nodes)
        placement = Placement.for_context(ctx)
        user_excluded = frozenset(exclude_nodes | {n.name for n in model.graph.nodes if n.op in exclude_ops})
        full = plan_quantization(model.graph, frozenset(), placement)
        if not full.nodes:  # refused before calibrating: an "int8" artifact that is all fp32 would misname itself
            raise UnsupportedError("INT8 found nothing to quantize here (no Conv, Gemm or MatMul with constant "
                                   "weights; LSTM/GRU stay float)", hint="build --bf16 or --fp16 for speed, or fp32")
        ranges, cached = calibrated_ranges(model, full.calibrated, data)
        reference = model.copy_sharing_weights()

        def build(excluded: frozenset[str], candidate: Model | None = None) -> tuple[Model, dict[str, int]]:
            candidate = candidate or reference.copy_sharing_weights()
            plan = plan_quantization(candidate.graph, excluded, placement)
            return candidate, apply_plan(candidate.graph, plan, ranges)

        _, counts = build(user_excluded, model)
        state = PrecisionState(
            precision="int8", reference=reference, build=lambda ex: build(ex)[0], user_excluded=user_excluded,
            candidates=[n.name for n in full.nodes if n.name not in user_excluded])
        record = {**data.record(), "ranges_from_cache": cached, "excluded_nodes": sorted(user_excluded),
                  "nodes": node_precisions(model)}
        return PassResult(counts, manifest={"quantization": record}, handoff=state)
