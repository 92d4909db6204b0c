"""What the precision passes share: node exclusions, per-precision node counts, and the state the
accuracy fallback needs to rebuild a graph with some nodes returned to higher precision."""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from infer_compile.core.ir import Model
from infer_compile.passes.graph_utils import numpy_dtype

# Bookkeeping nodes that carry precision changes rather than compute.
_PLUMBING = frozenset({"QuantizeLinear", "DequantizeLinear", "Cast"})
# Ops that compute on integer tensors themselves (ONNX Runtime's integer kernels, written by passes).
INTEGER_OPS = frozenset({"MatMulIntegerToFloat", "MatMulInteger", "ConvInteger", "QLinearMatMul", "QLinearConv"})


@dataclass
class PrecisionState:
    """Handed by the precision pass to the accuracy fallback (``PassResult.handoff``)."""

    precision: str  # "int8" or "fp16"
    reference: Model  # the fp32 graph the precision pass started from
    build: Callable[[frozenset[str]], Model]  # the reduced-precision graph with these nodes kept in fp32
    user_excluded: frozenset[str]  # nodes the user already kept in fp32
    candidates: list[str]  # nodes the fallback may return to fp32, by ONNX node name


def name_unnamed_nodes(graph: gs.Graph) -> None:
    """Exclusions and reports address nodes by name: give unnamed nodes stable unique ones."""
    taken = {n.name for n in graph.nodes}
    for index, node in enumerate(graph.nodes):
        if not node.name:
            name = f"{node.op}_{index}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)


def _float_dtype(tensor: gs.Tensor) -> np.dtype | None:
    dtype = numpy_dtype(tensor)
    return dtype if dtype is not None and dtype.kind == "f" else None


def node_precision(node: gs.Node) -> str:
    """int8 when it is an integer op or every float variable input comes from a DequantizeLinear, fp16 when
    it computes in half precision, fp32 otherwise."""
    if node.op in INTEGER_OPS:
        return "int8"
    float_inputs = [t for t in node.inputs if isinstance(t, gs.Variable) and _float_dtype(t) is not None]
    if float_inputs and all(t.inputs and t.inputs[0].op == "DequantizeLinear" for t in float_inputs):
        return "int8"
    if any(_float_dtype(t) == np.float16 for t in [*node.outputs, *node.inputs]):
        return "fp16"
    return "fp32"


def node_precisions(model: Model) -> dict[str, int]:
    """Compute nodes per precision (Q/DQ and Cast nodes are not counted)."""
    counts = collections.Counter(node_precision(n) for n in model.graph.nodes if n.op not in _PLUMBING)
    return {p: counts.get(p, 0) for p in ("int8", "fp16", "fp32")}


def weight_storage(model: Model) -> dict[str, float]:
    """MiB of constants per element type: what the artifact stores (int8 weights, or fp32 ones)."""
    sizes: collections.Counter[str] = collections.Counter()
    for constant in model.constants():
        sizes[constant.values.dtype.name] += constant.values.nbytes
    return {dtype: round(size / 2**20, 3) for dtype, size in sizes.most_common()}
