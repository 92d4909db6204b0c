"""MatMul + Add to Gemm, where Gemm's rules allow it: 2-D operands and a bias that broadcasts to [M, N]."""

from __future__ import annotations

import onnx_graphsurgeon as gs

from infer_compile.passes.base import PassContext
from infer_compile.passes.graph_utils import (
    add_node,
    known_shape,
    other_input,
    produced_by,
    read_only_by,
    replace_nodes,
)
from infer_compile.passes.rewrite import Miss, Outcome, RewritePass, consumer_miss


def _unidirectional(bias: tuple[int, ...], out: tuple[int, int]) -> bool:
    """Gemm's C may only broadcast towards the output shape, never widen it."""
    padded = (1,) * (2 - len(bias)) + bias
    return len(bias) <= 2 and all(b in (1, o) for b, o in zip(padded, out, strict=True))


def _matmul_add(graph: gs.Graph, add: gs.Node, ctx: PassContext) -> Outcome:
    misses = []
    for matmul_out in add.inputs:
        matmul = produced_by(matmul_out, "MatMul")
        if matmul is None:
            continue
        outcome = _to_gemm(graph, add, matmul, matmul_out)
        if outcome is True:
            return outcome
        misses.append(outcome)
    return misses[0] if misses else Miss("no input is produced by MatMul")


def _to_gemm(graph: gs.Graph, add: gs.Node, matmul: gs.Node, matmul_out: gs.Tensor) -> Outcome:
    if not read_only_by(graph, matmul_out, add):
        return consumer_miss(graph, matmul_out)
    bias = other_input(add, matmul_out)
    a, b = (known_shape(t) for t in matmul.inputs)
    c = known_shape(bias) if bias is not None else None
    if a is None or b is None or c is None:
        return Miss("a MatMul operand or the bias has no known shape")
    if len(a) != 2 or len(b) != 2:
        return Miss("the MatMul operands are not 2-D")
    if not _unidirectional(c, (a[0], b[1])):
        return Miss("the bias does not broadcast to the MatMul output")
    replace_nodes([matmul, add], add_node(graph, "Gemm", [*matmul.inputs, bias], name=matmul.name))
    return True


class MatMulAddToGemm(RewritePass):
    name = "matmul-add-to-gemm"
    description = "Rewrite 2-D MatMul + Add as one Gemm when the bias broadcasts to the output."
    rules = (("matmul_add", ("Add",), _matmul_add),)
