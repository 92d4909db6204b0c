"""Frontend registry: pick the frontend by file contents and lower the model to the IR."""

from __future__ import annotations

from pathlib import Path

from infer_compile.core.errors import UserInputError
from infer_compile.frontends.base import Frontend, LoweredModel, SourceOptions
from infer_compile.frontends.onnx import OnnxFrontend
from infer_compile.frontends.tensorflow import TensorFlowFrontend
from infer_compile.frontends.torch import TorchFrontend

# Most specific first: the ONNX frontend's content check is the loosest.
FRONTENDS: list[Frontend] = [TorchFrontend(), TensorFlowFrontend(), OnnxFrontend()]


def load_source(path: Path, options: SourceOptions | None = None) -> LoweredModel:
    options = options or SourceOptions()
    if options.python_entry:  # the model is built by user code; `path` is that code's file
        return TorchFrontend().load_python_entry(options)
    if not path.exists():
        raise UserInputError(f"{path}: no such file or folder", hint="check the model path")
    for frontend in FRONTENDS:
        if frontend.accepts(path):
            return frontend.load(path, options)
    kinds = "; ".join(f.description for f in FRONTENDS)
    raise UserInputError(f"{path}: not a model format infer-compile recognises", hint=f"supported: {kinds}")


__all__ = ["FRONTENDS", "Frontend", "LoweredModel", "SourceOptions", "load_source"]
