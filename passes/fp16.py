"""FP16 conversion: float32 compute, tensors and weights become float16, with Casts at the borders.

- Blocked nodes stay fp32: ops that are unsafe or index-like in half precision (DEFAULT_BLOCKED_OPS),
  ops whose schema does not take float16 where they read or write float32 (LayerNormalization's Mean and
  InvStdDev, DynamicQuantizeLinear, QuantizeLinear before opset 19, ai.onnx.ml ops) or that ONNX does not
  define (custom domains, model-local functions: their bodies keep their own types), what the user lists
  with ``--fp16-block OP/NODE``, and, when calibration data is given, every node producing or reading a
  tensor whose values come near the fp16 range (found by running the model).
- Only float32 tensors change; every other element type (float64, bfloat16, float8, ints) is left alone.
- Values If/Loop/Scan bodies read from the enclosing graph reach them in float32 (the bodies are not
  converted), and a graph input only fp32 nodes read stays float32.
- Weights are clamped safely: finite values beyond +-65504 saturate instead of becoming inf, and
  tiny non-zero values keep their sign at the smallest subnormal instead of flushing to zero.
- ``--keep-io-types`` keeps graph inputs and outputs float32 (Casts inside the graph).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from infer_compile.calibration.collect import value_maxima
from infer_compile.core.ir import Model
from infer_compile.core.numerics import Feeds
from infer_compile.passes.base import Pass, PassContext, PassResult
from infer_compile.passes.graph_utils import is_float32, numpy_dtype
from infer_compile.passes.options import FP16_BLOCK, KEEP_IO_TYPES
from infer_compile.passes.precision_state import PrecisionState, name_unnamed_nodes, node_precisions

# As onnxconverter-common's float16 converter blocks them (index-like, or with outputs whose precision matters
# beyond fp16's), plus Softmax/LogSoftmax: exp() of inputs that fp16 rounds (steps of 8 at 10000) is far off;
# and MeanVarianceNormalization, which onnxruntime runs as its ONNX function body, with a float32 epsilon.
DEFAULT_BLOCKED_OPS = frozenset({
    "Range", "NonMaxSuppression", "TopK", "RoiAlign", "Resize", "Upsample", "CumSum", "RandomNormal",
    "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "If", "Loop", "Scan",
    "Softmax", "LogSoftmax", "MeanVarianceNormalization"})
# Ops whose output type is an attribute, not their inputs' type (BitCast also reinterprets its input's bits).
_TYPED_BY_ATTRIBUTE = frozenset({"Constant", "ConstantOfShape", "EyeLike", "BitCast", "MelWeightMatrix"})
# Scatters with a reduction: onnxruntime's CPU kernels have no float16 version of them.
_REDUCING_SCATTERS = frozenset({"ScatterND", "ScatterElements"})
_HALF = "tensor(float16)"
# Layers the accuracy fallback may return to fp32: where half precision loses accuracy.
FALLBACK_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "Softmax", "LayerNormalization",
                          "BatchNormalization", "InstanceNormalization", "ReduceMean", "ReduceSum", "Pow",
                          "Exp", "Log", "Div", "Sqrt", "Erf"})
FP16_MAX = float(np.finfo(np.float16).max)
# Tensors whose max |x| on calibration data exceeds this stay fp32 (2x headroom for unseen inputs).
OVERFLOW_LIMIT = FP16_MAX / 2
_SMALLEST_SUBNORMAL = float(np.finfo(np.float16).smallest_subnormal)


def to_fp16(values: np.ndarray) -> np.ndarray:
    """float32 -> float16 with saturation and sign-preserving underflow (inf/nan stay as they are)."""
    finite = np.isfinite(values)
    clamped = np.where(finite, np.clip(values, -FP16_MAX, FP16_MAX), values)
    tiny = finite & (values != 0) & (np.abs(values) < _SMALLEST_SUBNORMAL)
    clamped = np.where(tiny, np.sign(values) * _SMALLEST_SUBNORMAL, clamped)
    return clamped.astype(np.float16)


def _formal_types(schema: onnx.defs.OpSchema, params: Sequence[onnx.defs.OpSchema.FormalParameter], index: int
                  ) -> list[str] | None:
    """The types the schema allows at input/output ``index`` (the last formal parameter may repeat)."""
    if not params:
        return None
    param = params[min(index, len(params) - 1)]
    if index >= len(params) and param.option != onnx.defs.OpSchema.FormalParameterOption.Variadic:
        return None
    constraints = {c.type_param_str: list(c.allowed_type_strs) for c in schema.type_constraints}
    return constraints.get(param.type_str, [param.type_str])


def takes_half(node: gs.Node, opset: int, float_names: set[str]) -> bool:
    """Whether ``node``'s op computes in float16 wherever it now reads or writes float32 (per its ONNX schema,
    less what onnxruntime lacks)."""
    if node.op in _REDUCING_SCATTERS and node.attrs.get("reduction", "none") != "none":
        return False
    try:
        schema = onnx.defs.get_schema(node.op, opset if node.domain in (None, "", "ai.onnx") else 1 << 30,
                                      node.domain or "")
    except onnx.defs.SchemaError:
        return False  # a custom or model-local op: nothing says what its body does with half inputs
    for params, tensors in ((schema.inputs, node.inputs), (schema.outputs, node.outputs)):
        for index, t in enumerate(tensors):
            allowed = _formal_types(schema, params, index) if t.name in float_names else [_HALF]
            if allowed is None or _HALF not in allowed:
                return False
    return True


class _Converter:
    """One conversion of a graph with a given set of fp32 node names."""

    def __init__(self, graph: gs.Graph, keep_io_types: bool) -> None:
        self.graph = graph
        self.keep_io_types = keep_io_types
        self.float_names = {name for name, t in graph.tensors().items() if is_float32(t)}
        self.casts: dict[tuple[str, int], gs.Variable] = {}
        self.constants: dict[str, gs.Constant] = {}

    def involves_float(self, node: gs.Node) -> bool:
        return any(t.name in self.float_names for t in [*node.inputs, *node.outputs])

    def run(self, fp32_nodes: frozenset[str]) -> list[gs.Node]:
        opset = int(self.graph.opset)
        half = [n for n in self.graph.nodes if n.name not in fp32_nodes and n.op not in DEFAULT_BLOCKED_OPS
                and n.op not in _TYPED_BY_ATTRIBUTE and self.involves_float(n)
                and takes_half(n, opset, self.float_names)]
        half_ids = {id(n) for n in half}
        for node in half:
            for out in node.outputs:
                if out.name in self.float_names:
                    out.dtype = np.float16
            if node.op == "Cast" and node.attrs.get("to") == onnx.TensorProto.FLOAT:
                node.attrs["to"] = onnx.TensorProto.FLOAT16
        if not self.keep_io_types:
            for t in self.graph.inputs:
                if t.name in self.float_names and any(id(n) in half_ids for n in t.outputs):
                    t.dtype = np.float16
        for node in list(self.graph.nodes):
            if node.op != "Cast":  # a Cast reads any type
                self._fix_inputs(node, np.float16 if id(node) in half_ids else np.float32)
        self._keep_captured_fp32()
        if self.keep_io_types:
            self._restore_outputs()
        self.graph.cleanup(remove_unused_graph_inputs=False).toposort()
        return half

    def _fix_inputs(self, node: gs.Node, want: type) -> None:
        for i, t in enumerate(node.inputs):
            if t.name not in self.float_names:
                continue
            if isinstance(t, gs.Constant):
                node.inputs[i] = self._constant(t) if want is np.float16 else t
            elif numpy_dtype(t) != np.dtype(want):
                node.inputs[i] = self._cast(t, want)

    def _keep_captured_fp32(self) -> None:
        """Nodes inside If/Loop/Scan bodies (not converted) read the outer values they capture in float32."""
        outer = {id(t) for t in self.graph.tensors().values()}
        for subgraph in self.graph.subgraphs(recursive=True):
            for node in subgraph.nodes:
                for i, t in enumerate(node.inputs):
                    if id(t) in outer and t.name in self.float_names and numpy_dtype(t) == np.float16:
                        node.inputs[i] = self._cast(t, np.float32)

    def _constant(self, t: gs.Constant) -> gs.Constant:
        if t.name not in self.constants:
            self.constants[t.name] = gs.Constant(f"{t.name}_fp16", to_fp16(t.values))
        return self.constants[t.name]

    def _cast(self, t: gs.Variable, want: type) -> gs.Variable:
        to = onnx.TensorProto.FLOAT16 if want is np.float16 else onnx.TensorProto.FLOAT
        key = (t.name, to)
        if key not in self.casts:
            suffix = "fp16" if want is np.float16 else "fp32"
            out = gs.Variable(f"{t.name}_{suffix}", dtype=want, shape=t.shape)
            self.graph.nodes.append(gs.Node("Cast", f"{t.name}_cast_{suffix}", {"to": to}, [t], [out]))
            self.casts[key] = out
        return self.casts[key]

    def _restore_outputs(self) -> None:
        """Graph outputs stay float32 under their names: the fp16 value is renamed and cast."""
        for out in self.graph.outputs:
            if out.name not in self.float_names or numpy_dtype(out) != np.float16 or not out.inputs:
                continue
            half = gs.Variable(f"{out.name}_fp16", dtype=np.float16, shape=out.shape)
            source = out.inputs[0]
            source.outputs[source.outputs.index(out)] = half
            for consumer in list(out.outputs):
                consumer.inputs[consumer.inputs.index(out)] = half
            out.dtype = np.float32
            self.graph.nodes.append(gs.Node("Cast", f"{out.name}_cast_fp32", {"to": onnx.TensorProto.FLOAT},
                                            [half], [out]))


def convert_fp16(model: Model, fp32_nodes: frozenset[str], keep_io_types: bool) -> list[gs.Node]:
    """Convert ``model`` in place; returns the nodes now computing in fp16."""
    return _Converter(model.graph, keep_io_types).run(fp32_nodes)


def overflowing_nodes(model: Model, samples: Iterable[Feeds]) -> frozenset[str]:
    """Producers and consumers of tensors whose values exceed OVERFLOW_LIMIT on ``samples``."""
    graph = model.graph
    names = [name for name, t in graph.tensors().items() if isinstance(t, gs.Variable) and is_float32(t)]
    maxima = value_maxima(model, names, samples)
    tensors = graph.tensors()
    hot: set[str] = set()
    for name, amax in maxima.items():
        if amax > OVERFLOW_LIMIT:
            tensor = tensors[name]
            hot.update(n.name for n in [*tensor.inputs, *tensor.outputs])
    return frozenset(hot)


class Fp16Conversion(Pass):
    name = "fp16"
    description = "Convert float32 compute to float16; blocklist, overflow fallback (with calibration data)."
    precision = "fp16"
    options = (KEEP_IO_TYPES, FP16_BLOCK)

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        name_unnamed_nodes(model.graph)
        keep_io = ctx.option(KEEP_IO_TYPES)
        block = set(ctx.option(FP16_BLOCK))
        blocked = frozenset(n.name for n in model.graph.nodes if n.name in block or n.op in block)
        data = ctx.calibration
        overflow = overflowing_nodes(model, data.split()[0]) if data is not None else frozenset()
        reference = model.copy()
        fp32_nodes = blocked | overflow
        half = convert_fp16(model, fp32_nodes, keep_io)

        def build(excluded: frozenset[str]) -> Model:
            candidate = reference.copy()
            convert_fp16(candidate, excluded, keep_io)
            return candidate

        record = {**({} if data is None else {"overflow_check_samples": data.count}), "fp16_blocked": sorted(blocked),
                  "fp16_overflow_fp32": sorted(overflow), "nodes": node_precisions(model)}
        state = PrecisionState(precision="fp16", reference=reference, build=build, user_excluded=fp32_nodes,
                               candidates=[n.name for n in half if n.op in FALLBACK_OPS])
        return PassResult({"fp16_nodes": len(half), "overflow_fp32_nodes": len(overflow)},
                          manifest={"quantization": record}, handoff=state)
