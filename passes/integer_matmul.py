"""INT8 MatMuls as ONNX Runtime runs them fastest: ``com.microsoft::MatMulIntegerToFloat``.

ORT picks an integer kernel for a Q/DQ'd MatMul only when its graph optimizer matches the pattern, and on
transformer graphs it first fuses MatMul + bias Add into a float Gemm (``MatMulAddFusion``), which then
dequantizes the int8 weights on every run: MiniLM's Q/DQ artifact ran 1.8x slower than fp32. Written
explicitly, a MatMul whose activation is quantized and whose weights are constant int8 (per tensor or per
output column) becomes one MatMulIntegerToFloat that reads the int8 tensors and adds the bias itself, the
op ORT's own dynamic quantization emits. It computes ``(A - a_zero) a_scale @ (B - b_zero) b_scale + bias``
exactly as the Q/DQ graph does.

Its activation is stored as uint8 (zero point + 128: the same values): ORT's fast kernels are u8s8, and
MiniLM with int8 activations ran 4.7x slower than with uint8 here. On CPUs without VNNI (AVX2 only) u8s8
products can saturate 16-bit sums (ORT's documented caveat); ``infer-compile verify`` on such a machine shows it.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from infer_compile.core.capabilities import Capability
from infer_compile.passes.base import PassContext
from infer_compile.passes.graph_utils import MS_DOMAIN, constant, constant_bias_add, producer
from infer_compile.passes.rewrite import Miss, Outcome, RewritePass

UINT8_SHIFT = 128


def _dequantized(tensor: gs.Tensor) -> tuple[gs.Node, np.ndarray, np.ndarray] | None:
    """(DequantizeLinear writing ``tensor``, its scale, its zero point) when both are constants."""
    dq = producer(tensor)
    if dq is None or dq.op != "DequantizeLinear" or len(dq.inputs) < 3 or dq.attrs.get("block_size", 0):
        return None
    scale, zero = constant(dq.inputs[1]), constant(dq.inputs[2])
    if scale is None or zero is None or zero.dtype not in (np.int8, np.uint8):
        return None
    return dq, scale, zero


def _column_bias(matmul: gs.Node, columns: int) -> tuple[gs.Node, gs.Tensor] | None:
    """(Add, bias) when the Add of a constant [N] float bias alone reads ``matmul``'s output."""
    found = constant_bias_add(matmul)
    if found is None:
        return None
    add, index = found
    values = constant(add.inputs[index])
    return (add, add.inputs[index]) if values is not None and values.dtype == np.float32 and \
        values.shape == (columns,) else None


def _as_uint8(graph: gs.Graph, activation: gs.Node) -> None:
    """Store a signed quantized activation as uint8: every zero point + 128, so every value is unchanged."""
    quantize = producer(activation.inputs[0])
    zero = constant(quantize.inputs[2]) if quantize is not None and quantize.op == "QuantizeLinear" else None
    if quantize is None or zero is None or zero.dtype != np.int8:
        return
    shifted = gs.Constant(f"{quantize.inputs[2].name}_uint8", np.asarray(zero.astype(np.int16) + UINT8_SHIFT, np.uint8))
    quantize.inputs[2] = shifted
    quantize.outputs[0].dtype = np.uint8
    for dq in quantize.outputs[0].outputs:  # every DequantizeLinear of it reads the same zero point
        dq.inputs[2] = shifted


def _integer_matmul(graph: gs.Graph, node: gs.Node, ctx: PassContext) -> Outcome:
    if len(node.inputs) != 2:
        return Miss("the MatMul does not have two inputs")
    operands = _integer_operands(node)
    if isinstance(operands, Miss):
        return operands
    activation, weight, weights = operands
    bias = _column_bias(node, weights.shape[1])
    output = node.outputs[0]
    if bias:
        output = bias[0].outputs[0]
        bias[0].outputs.clear()
    _replace(graph, node, activation, weight.inputs[:3], bias[1] if bias else None, output)
    return True


def _integer_gemm(graph: gs.Graph, node: gs.Node, ctx: PassContext) -> Outcome:
    """A Gemm whose output stays float (a classifier's logits): ORT's QGemm fusion needs a quantized output,
    so it ran the Gemm in float, dequantizing its int8 weights on every run (MobileNetV2: 1.28M a run)."""
    attrs = node.attrs
    if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
        return Miss("the Gemm scales or transposes its input (alpha, beta, transA)")
    if any(c.op == "QuantizeLinear" for c in node.outputs[0].outputs):
        return Miss("its output is quantized: ORT runs it as QGemm")
    operands = _integer_operands(node, transposed=bool(attrs.get("transB", 0)))
    if isinstance(operands, Miss):
        return operands
    activation, weight, weights = operands
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    values = None if bias is None else constant(bias)
    columns = weights.shape[0] if attrs.get("transB", 0) else weights.shape[1]
    if bias is not None and (values is None or values.dtype != np.float32 or values.size != columns):
        return Miss("the bias is not a constant float32 vector per output column")
    quantized = weight.inputs[:3]
    if attrs.get("transB", 0):  # [N, K] -> [K, N]: its per-row scales become the per-column ones
        quantized[0] = gs.Constant(f"{weight.inputs[0].name}_transposed", np.ascontiguousarray(weights.T))
    if bias is not None and values is not None and values.ndim != 1:
        bias = gs.Constant(f"{bias.name}_vector", values.reshape(-1))
    _replace(graph, node, activation, quantized, bias, node.outputs[0])
    return True


def _integer_operands(node: gs.Node, transposed: bool = False) -> tuple[gs.Node, gs.Node, np.ndarray] | Miss:
    """(activation DequantizeLinear, weight DequantizeLinear, the int8 weights) when ``node`` reads a per-tensor
    quantized activation and constant 2-D int8 weights quantized per tensor or per output column."""
    activation, weight = (_dequantized(t) for t in node.inputs[:2])
    if activation is None or weight is None:
        return Miss("an input is not a DequantizeLinear with constant scale and zero point")
    (a, a_scale, a_zero), (b, b_scale, _) = activation, weight
    weights = constant(b.inputs[0])
    if weights is None or weights.ndim != 2 or weights.dtype != np.int8:
        return Miss("the weight is not a constant 2-D int8 tensor")
    columns, column_axis = (weights.shape[0], 0) if transposed else (weights.shape[1], 1)
    if b_scale.size not in (1, columns) or (b_scale.size > 1 and b.attrs.get("axis", 1) % 2 != column_axis):
        return Miss("the weight is not quantized per tensor or per output column")
    if a_scale.size != 1 or a_zero.size != 1:
        return Miss("the activation is not quantized per tensor")
    return a, b, weights


def _replace(graph: gs.Graph, node: gs.Node, activation: gs.Node, weight: list[gs.Tensor], bias: gs.Tensor | None,
             output: gs.Tensor) -> None:
    """``node`` -> MatMulIntegerToFloat(activation, weight [K, N] int8 with its scale and zero point, bias)."""
    _as_uint8(graph, activation)
    inputs = [activation.inputs[0], weight[0], activation.inputs[1], weight[1], activation.inputs[2], weight[2]]
    node.outputs.clear()
    node.inputs.clear()
    graph.nodes.append(gs.Node("MatMulIntegerToFloat", node.name, domain=MS_DOMAIN,
                               inputs=[*inputs, *([bias] if bias is not None else [])], outputs=[output]))


class IntegerMatMulFusion(RewritePass):
    name = "integer-matmul-fusion"
    description = ("Q/DQ'd MatMuls (+ bias) and float-output Gemms with int8 weights -> com.microsoft "
                   "MatMulIntegerToFloat (ONNX Runtime).")
    requires = frozenset({Capability.MATMUL_INTEGER_TO_FLOAT})
    precision = "int8"  # exact: the integer kernel computes what the Q/DQ graph does
    rules = (("matmul_integer_to_float", ("MatMul",), _integer_matmul),
             ("gemm_integer_to_float", ("Gemm",), _integer_gemm))
