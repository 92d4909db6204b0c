"""Duplicate-initializer dedup: constants with identical dtype, shape and bytes become one tensor."""

from __future__ import annotations

import hashlib

import numpy as np
import onnx_graphsurgeon as gs

from infer_compile.core.ir import Model
from infer_compile.passes.base import Pass, PassContext, PassResult
from infer_compile.passes.graph_utils import is_graph_io, replace_tensor


def _key(values: np.ndarray) -> tuple:
    # Bytes, not values: NaN payloads and -0.0 must not be merged with anything else.
    return values.dtype.str, values.shape, hashlib.sha256(np.ascontiguousarray(values).data).digest()  # no copy


class InitializerDedup(Pass):
    name = "initializer-dedup"
    description = "Merge constants that hold identical bytes (same dtype and shape) into one."

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        graph = model.graph
        kept: dict[tuple, gs.Constant] = {}
        result = PassResult()
        for tensor in list(graph.tensors().values()):
            if not isinstance(tensor, gs.Constant) or is_graph_io(graph, tensor):
                continue
            values = np.asarray(tensor.values)
            first = kept.setdefault(_key(values), tensor)
            if first is not tensor:  # same dtype, shape and sha256 of the bytes
                replace_tensor(tensor, first)
                result.add("initializers_merged")
        if result.modified:
            graph.cleanup(remove_unused_graph_inputs=False)
        return result
