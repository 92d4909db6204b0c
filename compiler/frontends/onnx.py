"""ONNX frontend: validation, pinned input shapes, and opset upgrade for old models."""

from __future__ import annotations

from pathlib import Path

import onnx
import onnx.version_converter

from infer_compile.errors import UserInputError
from infer_compile.frontends.base import Frontend, LoweredModel, SourceOptions
from infer_compile.ir import Model, load_onnx

# Passes and targets are written against opset >= 13 semantics (e.g. Squeeze axes as inputs).
MIN_OPSET = 13
UPGRADE_OPSET = 17


def apply_input_shapes(model: Model, shapes: dict[str, tuple[int, ...]]) -> None:
    """Pin input shapes given by the user; unknown names are an error, not a silent no-op."""
    by_name = {t.name: t for t in model.graph.inputs}
    unknown = set(shapes) - set(by_name)
    if unknown:
        raise UserInputError(f"--input-shape names unknown input(s): {', '.join(sorted(unknown))}",
                             hint=f"the model's inputs are: {', '.join(by_name)}")
    for name, shape in shapes.items():
        tensor = by_name[name]
        if tensor.shape is not None and len(tensor.shape) != len(shape):
            raise UserInputError(f"--input-shape {name}: rank {len(shape)} given, the model expects "
                                 f"rank {len(tensor.shape)} ({tensor.shape})")
        tensor.shape = list(shape)


class OnnxFrontend(Frontend):
    name = "onnx"
    description = "ONNX models (.onnx, with external data)"

    def accepts(self, path: Path) -> bool:
        if path.is_dir():
            return False
        if path.suffix == ".onnx":
            return True
        with path.open("rb") as fh:
            head = fh.read(2)
        return head[:1] == b"\x08"  # ModelProto starts with field 1 (ir_version) as a varint

    def load(self, path: Path, options: SourceOptions) -> LoweredModel:
        model = load_onnx(path)
        details: dict = {"opset": model.opset}
        if model.opset < MIN_OPSET:
            try:
                proto = onnx.version_converter.convert_version(model.to_proto(), UPGRADE_OPSET)
            except Exception as exc:
                raise UserInputError(f"{path}: opset {model.opset} is too old and could not be upgraded ({exc})",
                                     hint=f"re-export the model with opset >= {MIN_OPSET}") from exc
            model = Model.from_proto(proto)
            details["upgraded_to_opset"] = UPGRADE_OPSET
        apply_input_shapes(model, options.input_shapes)
        try:
            # The file, not model.to_proto(): the checker would hold three more copies of the weights.
            onnx.checker.check_model(str(path))
        except onnx.checker.ValidationError as exc:
            raise UserInputError(f"{path}: invalid ONNX model: {str(exc).splitlines()[0]}",
                                 hint="fix the exporter settings or run onnx.checker.check_model for details") from exc
        return LoweredModel(model, "onnx", details)
