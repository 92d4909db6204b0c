"""Shape inference: annotate every tensor with its shape and dtype so later passes can rely on them."""

from __future__ import annotations

import onnx

from infer_compile.core.errors import UnsupportedError
from infer_compile.core.ir import Model
from infer_compile.passes.base import Pass, PassContext, PassResult


class ShapeInference(Pass):
    name = "shape-inference"
    description = "Infer shapes and dtypes of every tensor (ONNX shape inference with data propagation)."

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        known = _known(model)
        try:
            # Without the weight bytes: shape inference needs their shapes, and copies whatever it is given.
            proto = onnx.shape_inference.infer_shapes(model.to_proto(weights=False), strict_mode=False, data_prop=True)
        except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as exc:
            raise UnsupportedError(f"shape inference failed: {str(exc).splitlines()[0]}",
                                   hint="give static input shapes with --input-shape") from exc
        model.replace_graph(proto)
        return PassResult({"shapes_inferred": _known(model) - known})


def _known(model: Model) -> int:
    return sum(1 for t in model.graph.tensors().values() if t.shape is not None and t.dtype is not None)
