"""Frontend registry: pick the frontend by file contents and lower the model to the IR."""

from __future__ import annotations

import functools
from pathlib import Path

from infer_compile.core.errors import UserInputError
from infer_compile.frontends.base import Frontend, LoweredModel, SourceOptions


@functools.cache
def frontends() -> tuple[Frontend, ...]:
    """Every frontend, most specific first (the ONNX frontend's content check is the loosest). Imported when a
    model is loaded: the source options (``specs``) and a cache hit need none of them."""
    from infer_compile.frontends.onnx import OnnxFrontend
    from infer_compile.frontends.tensorflow import TensorFlowFrontend
    from infer_compile.frontends.torch import TorchFrontend

    return TorchFrontend(), TensorFlowFrontend(), OnnxFrontend()


def load_source(path: Path, options: SourceOptions | None = None) -> LoweredModel:
    options = options or SourceOptions()
    if options.python_entry:  # the model is built by user code; `path` is that code's file
        from infer_compile.frontends.torch import TorchFrontend

        return TorchFrontend().load_python_entry(options)
    if not path.exists():
        raise UserInputError(f"{path}: no such file or folder", hint="check the model path")
    for frontend in frontends():
        if frontend.accepts(path):
            return frontend.load(path, options)
    kinds = "; ".join(f.description for f in frontends())
    raise UserInputError(f"{path}: not a model format infer-compile recognises", hint=f"supported: {kinds}")


__all__ = ["Frontend", "LoweredModel", "SourceOptions", "frontends", "load_source"]
