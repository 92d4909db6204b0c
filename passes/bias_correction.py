"""Bias correction: give back the mean output shift INT8 rounding puts on each quantized layer.

Rounding weights and inputs is not zero-mean per output channel: a layer's INT8 output is on average off
by a per-channel constant (NNCF's fast bias correction; Nagel et al., 2019). Each quantized layer's INT8 twin
(its Q/DQ and rounded weights) runs beside it in one session of the fp32 model on the calibration samples,
reading the same fp32 input; the mean of fp32 output - INT8 output per channel, reduced in the session, is
added to the layer's bias (Conv's B, Gemm's C, or the constant Add after a MatMul). Each layer is corrected on
fp32 inputs, so the corrections do not depend on one another and hold whichever layers end up in INT8 (the
accuracy fallback may return some to fp32).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace

import numpy as np
import onnx_graphsurgeon as gs

from infer_compile.calibration.collect import calibration_session, run_in_batches, run_on_samples
from infer_compile.core.capabilities import Capability
from infer_compile.core.ir import Model
from infer_compile.core.numerics import Feeds
from infer_compile.passes.autotune import dequantize_constant, quantized_layers
from infer_compile.passes.base import Pass, PassContext, PassResult
from infer_compile.passes.graph_utils import constant, constant_bias_add, name_allocator, new_constant, producer, rank
from infer_compile.passes.options import BIAS_CORRECTION
from infer_compile.passes.precision_state import PrecisionState

CONVOLUTIONS = frozenset({"Conv", "ConvTranspose"})
# The correction is a per-channel mean over every position of every sample, and each sample costs a run of the
# model with a twin of every layer: samples are read until every layer's mean covers MIN_POSITIONS positions (at
# least MIN_SAMPLES samples, at most MAX_SAMPLES). MobileNetV2 at 224x224 (its last layers: 7x7 per image) uses all
# 8, and 4 gave a worse held-out cosine (0.999917 vs 0.999927); a 640x640 detector (20x20 at stride 32) uses 3
# (cosine 0.999955 as with 8, 0.6 s less CPU).
MAX_SAMPLES = 8
MIN_SAMPLES = 2
MIN_POSITIONS = 1024


def _bias(node: gs.Node) -> tuple[gs.Node, int] | None:
    """(node holding the bias, input index) of a layer: Conv's B, Gemm's C, or a MatMul's lone constant Add."""
    if node.op in ("Conv", "ConvTranspose", "Gemm") and len(node.inputs) > 2 and constant(node.inputs[2]) is not None:
        return node, 2
    return constant_bias_add(node) if node.op == "MatMul" else None


def bias_corrections(quantized: Model, reference: Model, samples: Iterable[Feeds],
                     ops: frozenset[str] | None = None, min_positions: int | None = MIN_POSITIONS
                     ) -> dict[str, np.ndarray]:
    """Per quantized layer with a bias (by node name; of the op types ``ops``, default all): the mean
    fp32 - INT8 output per channel over ``samples``, measured in one session (see ``_with_int8_twins``). Reads
    ``samples`` only until every layer's mean covers ``min_positions`` (see ``_until_covered``; None: all of them)."""
    measuring = reference.copy_sharing_weights()
    outputs = _with_int8_twins(measuring, quantized, ops)
    if not outputs:
        return {}
    names = [name for layer in outputs.values() for name in layer]
    # Unoptimized: ORT's blocked conv layout would also reorder every twin's input (a 3-channel 640x640 image padded to
    # 16 channels): the detector-sized build's peak RSS 413 -> 361 MiB, for 0.2 s more CPU over 8 samples.
    session = calibration_session(measuring, optimize=False)
    sums: dict[str, np.ndarray] = {}
    counts = dict.fromkeys(outputs, 0)

    def run(feeds: Feeds) -> int:
        values = dict(zip(names, run_on_samples(session, names, feeds), strict=True))
        for layer, (fp32, int8, size) in outputs.items():
            channels = values[fp32].shape[0 if values[fp32].ndim == 1 else 1]
            count = int(values[size]) // max(channels, 1)  # positions (every axis but the channel's) in this batch
            shift = (values[fp32].astype(np.float64) - values[int8]).reshape(-1, channels).mean(axis=0)  # GAP: per item
            sums[layer] = sums.get(layer, 0) + shift * count
            counts[layer] += count
        return 4 * sum(int(values[size]) for *_, size in outputs.values())

    run_in_batches(measuring, samples if min_positions is None else _until_covered(samples, counts, min_positions), run)
    return {name: (sums[name] / counts[name]).astype(np.float32) for name in sums if counts[name]}


def _until_covered(samples: Iterable[Feeds], positions: dict[str, int], needed: int) -> Iterator[Feeds]:
    """``samples`` until, after MIN_SAMPLES of them, each layer's count in ``positions`` (updated by the runs as they
    happen; samples batched into one run are all read first) is at least ``needed``; no sample is read beyond."""
    for index, sample in enumerate(samples, 1):
        yield sample
        if index >= MIN_SAMPLES and min(positions.values(), default=needed) >= needed:
            return


def _with_int8_twins(model: Model, quantized: Model, ops: frozenset[str] | None) -> dict[str, tuple[str, str, str]]:
    """Beside each fp32 layer of ``model`` (a copy of the fp32 graph) that ``quantized`` runs in INT8 with a bias,
    its INT8 twin: the same layer with that graph's input quantizers (on the fp32 input) and rounded weights,
    without its output quantizer (it may clamp like an absorbed ReLU the fp32 output has not had yet). The graph's
    outputs become the per-channel means of both layers' outputs, reduced in the session, and the element count.
    Returns {layer name: (fp32 mean, INT8 mean, count)}; the twins follow their layers in the node order, which the
    session runs (``calibration_session``): each fp32 input can be freed as soon as its layer and twin ran."""
    graph = model.graph
    tensors, fp32_nodes, fresh = graph.tensors(), {node.name: node for node in graph.nodes}, name_allocator(graph)

    def variable(hint: str, dtype: type[np.generic] | None = None) -> gs.Variable:
        return gs.Variable(fresh(hint), dtype=dtype)

    twins: dict[str, list[gs.Node]] = {}
    outputs: dict[str, tuple[str, str, str]] = {}
    for index in quantized_layers(quantized.graph):
        node = quantized.graph.nodes[index]
        fp32 = fp32_nodes.get(node.name)
        if (ops is not None and node.op not in ops) or _bias(node) is None or fp32 is None or fp32.op != node.op:
            continue
        nodes: list[gs.Node] = []
        inputs = _twin_inputs(node, fp32, tensors, nodes, variable, fresh)
        channel_rank = None if node.op in CONVOLUTIONS else rank(fp32.outputs[0])
        if inputs is None or (node.op not in CONVOLUTIONS and not channel_rank):
            continue
        twin_out = variable(f"{node.name}@int8")
        nodes.append(gs.Node(node.op, fresh(f"{node.name}@int8"), dict(node.attrs), inputs=inputs, outputs=[twin_out]))
        means = (variable(f"{node.name}@mean", np.float32), variable(f"{twin_out.name}@mean", np.float32))
        size = variable(f"{node.name}@size", np.int64)
        nodes += [*(_channel_mean(t, mean, channel_rank, fresh, model.opset)
                    for t, mean in zip((fp32.outputs[0], twin_out), means, strict=True)),
                  gs.Node("Size", fresh(f"{node.name}@size"), inputs=[twin_out], outputs=[size])]
        twins[fp32.name] = nodes
        outputs[node.name] = (means[0].name, means[1].name, size.name)
    graph.nodes = [n for node in graph.nodes for n in [node, *twins.get(node.name, [])]]
    measured = {name for layer in outputs.values() for name in layer}
    graph.outputs = [t for node in graph.nodes for t in node.outputs if t.name in measured]
    return outputs


def _twin_inputs(node: gs.Node, fp32: gs.Node, tensors: dict[str, gs.Tensor], nodes: list[gs.Node],
                 variable: Callable[[str], gs.Variable], fresh: Callable[[str], str]) -> list[gs.Tensor] | None:
    """The INT8 layer ``node``'s inputs rebuilt over the fp32 graph's tensors (appending the Q/DQ nodes to
    ``nodes``): a rounded weight as its dequantized fp32 values, a quantized activation through copies of its
    QuantizeLinear/DequantizeLinear, anything else as the fp32 layer reads it. None when one cannot be rebuilt."""
    inputs: list[gs.Tensor] = []
    for position, tensor in enumerate(node.inputs):
        dq = producer(tensor)
        if dq is None or dq.op != "DequantizeLinear":
            inputs.append(fp32.inputs[position])
            continue
        q = producer(dq.inputs[0])
        if q is None:  # a weight: its rounded values, in fp32 (computes what DequantizeLinear gives)
            weight = dequantize_constant(dq)
            if weight is None:
                return None
            inputs.append(gs.Constant(fresh(f"{tensor.name}@rounded"), weight))
            continue
        source = tensors.get(q.inputs[0].name)
        if q.op != "QuantizeLinear" or source is None or not all(isinstance(t, gs.Constant) or not t.name
                                                                  for t in [*q.inputs[1:], *dq.inputs[1:]]):
            return None
        quantized, dequantized = variable(f"{tensor.name}@q"), variable(f"{tensor.name}@dq")
        nodes += [gs.Node("QuantizeLinear", fresh(f"{q.name}@twin"), dict(q.attrs), inputs=[source, *q.inputs[1:]],
                          outputs=[quantized]),
                  gs.Node("DequantizeLinear", fresh(f"{dq.name}@twin"), dict(dq.attrs),
                          inputs=[quantized, *dq.inputs[1:]], outputs=[dequantized])]
        inputs.append(dequantized)
    return inputs


def _channel_mean(tensor: gs.Variable, out: gs.Variable, tensor_rank: int | None, fresh: Callable[[str], str],
                  opset: int) -> gs.Node:
    """The mean per channel of ``tensor``: per item over the positions (GlobalAveragePool, [N, C, 1, ...]) for a
    convolution's output (``tensor_rank`` None), over every axis but the last for a linear layer's ([C])."""
    if tensor_rank is None:
        return gs.Node("GlobalAveragePool", fresh(f"{out.name}"), inputs=[tensor], outputs=[out])
    axes = list(range(tensor_rank - 1))
    if opset < 18:
        return gs.Node("ReduceMean", fresh(f"{out.name}"), {"axes": axes, "keepdims": 0}, inputs=[tensor],
                       outputs=[out])
    return gs.Node("ReduceMean", fresh(f"{out.name}"), {"keepdims": 0},
                   inputs=[tensor, gs.Constant(fresh(f"{out.name}@axes"), np.array(axes, np.int64))], outputs=[out])


def apply_bias_corrections(graph: gs.Graph, corrections: dict[str, np.ndarray]) -> int:
    """Add each correction to its layer's bias (a new constant: the old one may be shared); returns how many."""
    applied = 0
    for node in graph.nodes:
        correction = corrections.get(node.name)
        found = _bias(node)
        if correction is None or found is None:
            continue
        holder, index = found
        bias = constant(holder.inputs[index])
        if bias is None or bias.shape != correction.shape:
            continue
        holder.inputs[index] = new_constant(graph, f"{holder.inputs[index].name}_corrected", bias + correction)
        applied += 1
    return applied


class BiasCorrection(Pass):
    name = "bias-correction"
    description = "Add each INT8 layer's mean output shift (fp32 - INT8, per channel, on calibration data) to its bias."
    requires = frozenset({Capability.CALIBRATION})
    options = (BIAS_CORRECTION,)
    precision = "int8"

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        state = ctx.handed(PrecisionState)
        setting = ctx.option(BIAS_CORRECTION)
        if state is None or state.precision != "int8" or setting is False:
            return PassResult()
        samples = itertools.islice(ctx.calibration.split()[0], MAX_SAMPLES)
        corrections = bias_corrections(model, state.reference, samples, None if setting else CONVOLUTIONS)
        applied = apply_bias_corrections(model.graph, corrections)

        def build(excluded: frozenset[str]) -> Model:
            # The accuracy fallback's variants: only their INT8 layers are corrected. A layer back in fp32 has no
            # rounding shift to give back (corrected anyway, the PP-OCRv4 detector with all 64 layers in fp32
            # gave cosine 0.03 vs fp32: its probability map saturated).
            candidate = state.build(excluded)
            apply_bias_corrections(candidate.graph, {k: v for k, v in corrections.items() if k not in excluded})
            return candidate

        return PassResult({"biases_corrected": applied}, handoff=replace(state, build=build))
