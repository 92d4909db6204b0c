"""ONNX frontend: validation, pinned input shapes, and opset upgrade for old models."""

from __future__ import annotations

from pathlib import Path

import onnx
import onnx.version_converter
import onnx_graphsurgeon as gs

from infer_compile.errors import UserInputError
from infer_compile.frontends.base import Frontend, LoweredModel, SourceOptions
from infer_compile.ir import Dim, Model, load_onnx

# Passes and targets are written against opset >= 13 semantics (e.g. Squeeze axes as inputs).
MIN_OPSET = 13
UPGRADE_OPSET = 17


def apply_input_shapes(model: Model, shapes: dict[str, tuple[int, ...]]) -> None:
    """Pin input shapes given by the user (as trtexec --shapes does): unknown names, other ranks and other
    sizes of a fixed dimension are errors, not silent no-ops; shapes downstream are inferred again."""
    by_name = {t.name: t for t in model.graph.inputs}
    unknown = set(shapes) - set(by_name)
    if unknown:
        raise UserInputError(f"--input-shape names unknown input(s): {', '.join(sorted(unknown))}",
                             hint=f"the model's inputs are: {', '.join(by_name)}")
    for name, shape in shapes.items():
        tensor = by_name[name]
        if tensor.shape is not None:
            _check_pinnable(name, list(tensor.shape), shape)
        tensor.shape = list(shape)
    if shapes:
        _reinfer_shapes(model, ", ".join(f"{n}:{'x'.join(map(str, s))}" for n, s in shapes.items()))


def _check_pinnable(name: str, declared: list[Dim], shape: tuple[int, ...]) -> None:
    described = "x".join("?" if d is None else str(d) for d in declared)
    if len(declared) != len(shape):
        raise UserInputError(f"--input-shape {name}: rank {len(shape)} given, the model expects rank "
                             f"{len(declared)} ({described})", hint="give one size per dimension, e.g. 1x3x224x224")
    for axis, (dim, size) in enumerate(zip(declared, shape, strict=True)):
        if isinstance(dim, int) and dim >= 0 and dim != size:
            raise UserInputError(f"--input-shape {name}: axis {axis} is {size}, but the model fixes it at {dim} "
                                 f"({described})", hint="only dynamic (named or unknown) dimensions can be set")


def _reinfer_shapes(model: Model, given: str) -> None:
    """Forget the shapes inferred for the old input shapes and infer them again; shapes the graph cannot take
    are refused here, before any pass runs."""
    inputs = {t.name for t in model.graph.inputs}
    declared = {t.name: t.shape for t in model.graph.outputs}
    for tensor in model.graph.tensors().values():
        if isinstance(tensor, gs.Variable) and tensor.name not in inputs:
            tensor.shape = None
    try:
        # Without the weight bytes: inference needs only their shapes.
        proto = onnx.shape_inference.infer_shapes(model.to_proto(weights=False), strict_mode=True, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as exc:
        raise UserInputError(f"--input-shape {given}: the model cannot take these shapes "
                             f"({str(exc).strip().splitlines()[0]})",
                             hint="check the sizes against the model's inputs (infer-compile inspect MODEL)") from exc
    model.replace_graph(proto)
    for output in model.graph.outputs:  # behind ops ONNX cannot infer (custom domains): keep what was declared
        if output.shape is None:
            output.shape = declared.get(output.name)


def check_declared_dims(model: Model, path: Path) -> None:
    """Refuse negative dimensions (exporters write -1 for "unknown"; ONNX names dynamic dims instead)."""
    for kind, specs in (("input", model.inputs), ("output", model.outputs)):
        for spec in specs:
            negative = [(axis, d) for axis, d in enumerate(spec.shape or ()) if isinstance(d, int) and d < 0]
            if negative:
                axis, dim = negative[0]
                raise UserInputError(f"{path}: {kind} {spec.describe()} declares dimension {dim} at axis {axis}; "
                                     "dimensions are sizes >= 0 or names (dynamic)",
                                     hint=f"re-export it with a named dynamic axis, or set the input's shape: "
                                          f"--input-shape {spec.name}:DIMS (e.g. 1x3x224x224)")


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
        check_declared_dims(model, path)
        try:
            # The file, not model.to_proto(): the checker would hold three more copies of the weights.
            onnx.checker.check_model(str(path))
        except onnx.checker.ValidationError as exc:
            raise UserInputError(f"{path}: invalid ONNX model: {str(exc).splitlines()[0]}",
                                 hint="fix the exporter settings or run onnx.checker.check_model for details") from exc
        return LoweredModel(model, "onnx", details)
