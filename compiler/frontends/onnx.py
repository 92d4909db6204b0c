"""ONNX frontend: validation, pinned input shapes, and opset upgrade for old models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import onnx
import onnx.version_converter
import onnx_graphsurgeon as gs

from infer_compile.core.errors import UnsupportedError, UserInputError
from infer_compile.core.ir import Dim, Model, import_proto, read_onnx
from infer_compile.core.numerics import TOLERANCES, compare_outputs, ort_session, random_inputs, run_onnx, within
from infer_compile.frontends.base import Frontend, LoweredModel, SourceOptions, first_line
from infer_compile.frontends.specs import shapes_by_name

# Passes and targets are written against opset >= 13 semantics (e.g. Squeeze axes as inputs).
MIN_OPSET = 13
UPGRADE_OPSET = 17
DEFAULT_DOMAINS = ("", "ai.onnx")
# Operator domains onnxruntime implements; any other domain needs a custom-op library no target here loads.
RUNTIME_DOMAINS = frozenset({*DEFAULT_DOMAINS, "ai.onnx.ml", "ai.onnx.preview", "ai.onnx.preview.training",
                             "com.microsoft", "com.microsoft.nchwc", "com.ms.internal.nhwc"})


def apply_input_shapes(model: Model, shapes: dict[str, tuple[int, ...]]) -> None:
    """Pin input shapes given by the user (as trtexec --shapes does): unknown names, other ranks and other
    sizes of a fixed dimension are errors, not silent no-ops; shapes downstream are inferred again."""
    by_name = {t.name: t for t in model.graph.inputs}
    shapes = shapes_by_name(shapes, list(by_name))
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
        proto, mapped = read_onnx(path)
        check_domains(proto, path)
        opset = default_opset(proto)
        details: dict = {"opset": opset}
        if opset is None:  # only other domains (e.g. ai.onnx.ml): passes may still add standard ops
            proto.opset_import.append(onnx.helper.make_opsetid("", UPGRADE_OPSET))
        elif opset < MIN_OPSET:
            proto, details["upgrade"] = upgrade_opset(proto, path)
        model = import_proto(proto, mapped, path)
        check_round_trip(proto, model, path)
        apply_input_shapes(model, options.input_shapes)
        check_declared_dims(model, path)
        try:
            # The file, not model.to_proto(): the checker would hold three more copies of the weights.
            onnx.checker.check_model(str(path))
        except onnx.checker.ValidationError as exc:
            raise UserInputError(f"{path}: invalid ONNX model: {str(exc).splitlines()[0]}",
                                 hint="fix the exporter settings or run onnx.checker.check_model for details") from exc
        return LoweredModel(model, "onnx", details)


def default_opset(proto: onnx.ModelProto) -> int | None:
    """The model's version of the standard ONNX domain; None when it imports only other domains."""
    return next((o.version for o in proto.opset_import if o.domain in DEFAULT_DOMAINS), None)


def check_domains(proto: onnx.ModelProto, path: Path) -> None:
    """Refuse opsets newer than this onnx knows and ops from domains no runtime here implements: an artifact
    built from them would not load."""
    newest = _newest_opsets()
    for opset in proto.opset_import:
        domain = opset.domain or "ai.onnx"
        if opset.domain in newest and opset.version > newest[opset.domain]:
            raise UserInputError(f"{path}: imports opset {opset.version} of domain '{domain}', newer than onnx "
                                 f"{onnx.__version__} knows (up to {newest[opset.domain]})",
                                 hint="re-export the model with an older opset, or upgrade onnx")
    functions = {(f.domain, f.name) for f in proto.functions}
    for node in _nodes(proto.graph):
        if node.domain not in RUNTIME_DOMAINS and (node.domain, node.op_type) not in functions:
            raise UserInputError(f"{path}: node '{node.name or node.op_type}' uses op {node.op_type} of the custom "
                                 f"domain '{node.domain}', which no target here implements",
                                 hint="replace the custom op with standard ONNX ops, or export it as a model-local "
                                      "function")


def _newest_opsets() -> dict[str, int]:
    newest: dict[str, int] = {}
    for schema in onnx.defs.get_all_schemas_with_history():
        newest[schema.domain] = max(newest.get(schema.domain, 0), schema.since_version)
    return newest


def _nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of ``graph``, including those in If/Loop/Scan bodies."""
    for node in graph.node:
        yield node
        for sub in _subgraphs(node):
            yield from _nodes(sub)


def _subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    for attr in node.attribute:
        yield from [attr.g] if attr.HasField("g") else attr.graphs


def check_round_trip(proto: onnx.ModelProto, model: Model, path: Path) -> None:
    """Refuse a graph the IR does not hold faithfully (graphsurgeon drops TypeProto attributes, as on Optional,
    and optional types inside subgraphs): every node must come back with its op and attributes and every
    (sub)graph input and output with its kind of type, else the artifact would differ from the model."""
    hint = "rewrite that part of the model with other ops, or run it in onnxruntime directly"
    try:
        exported = model.to_proto(weights=False).graph
    except Exception as exc:  # e.g. optional-typed graph inputs: graphsurgeon imports them but cannot export them
        raise UnsupportedError(f"{path}: onnx-graphsurgeon, which the compiler's passes work on, cannot write this "
                               f"graph back ({first_line(exc)})", hint=hint) from exc
    for before, after in zip(_summaries(proto.graph), _summaries(exported), strict=False):
        if before != after:
            raise UnsupportedError(f"{path}: {before[0]} cannot be represented by onnx-graphsurgeon, which the "
                                   "compiler's passes work on", hint=hint)


def _summaries(graph: onnx.GraphProto) -> Iterator[tuple[str, tuple[str, ...]]]:
    """What must survive an import/export: per graph the kinds of its inputs' and outputs' types, per node its
    op and attribute names (nodes of subgraphs included)."""
    initializers = {t.name for t in graph.initializer}  # IR v3 lists them as inputs; graphsurgeon does not
    values = [v for v in graph.input if v.name not in initializers] + list(graph.output)
    yield f"graph '{graph.name}' input/output types", tuple(_kind(v.type) for v in values)
    for node in graph.node:
        yield f"the {node.op_type} node's attributes", tuple(sorted(a.name for a in node.attribute))
        for sub in _subgraphs(node):
            yield from _summaries(sub)


def _kind(type_: onnx.TypeProto) -> str:
    """'optional(sequence(tensor))' and the like: the structure of a type, not its element type or shape."""
    kind = type_.WhichOneof("value")
    if kind in ("sequence_type", "optional_type"):
        return f"{kind.removesuffix('_type')}({_kind(getattr(type_, kind).elem_type)})"
    return (kind or "?").removesuffix("_type")


def upgrade_opset(proto: onnx.ModelProto, path: Path) -> tuple[onnx.ModelProto, str]:
    """``proto`` converted to UPGRADE_OPSET when the conversion keeps its meaning, else ``proto`` as it is
    (passes handle old opsets, or leave what they do not know alone); says which in a short note.

    Converts the file's own proto: a graphsurgeon round trip drops IR-v3 initializers from graph.input,
    which the converter then reports as undefined inputs.
    """
    opset = default_opset(proto)
    try:
        converted = onnx.version_converter.convert_version(proto, UPGRADE_OPSET)
    except Exception as exc:
        reason = first_line(exc)
    else:
        reason = _changed_meaning(proto, converted)
        if not reason:
            return converted, f"opset {opset} -> {UPGRADE_OPSET}"
    _require_runnable(proto, path, f"opset {opset} could not be upgraded to {UPGRADE_OPSET} ({reason})")
    return proto, f"kept opset {opset} (the upgrade to {UPGRADE_OPSET} {reason})"


def _changed_meaning(original: onnx.ModelProto, converted: onnx.ModelProto) -> str:
    """Why ``converted`` is not the same function as ``original`` ("" when it is, as far as can be checked):
    the same inputs and outputs (names, types, ranks) and the same outputs on seeded inputs."""
    if _signature(original.graph) != _signature(converted.graph):
        return "changes the model's input or output types or ranks"
    before, after = Model.from_proto(original), Model.from_proto(converted)
    try:
        feeds = random_inputs(before.inputs)
        reference = run_onnx(before, feeds)
    except Exception:
        return ""  # the original does not run on seeded inputs: the signature check is all there is
    try:
        comparisons = compare_outputs(reference, run_onnx(after, feeds))
    except Exception as exc:
        return f"does not run ({first_line(exc)})"
    return "" if within(comparisons, TOLERANCES["fp32"]) else "changes the model's outputs"


def _signature(graph: onnx.GraphProto) -> list[tuple]:
    initializers = {t.name for t in graph.initializer}
    return [(v.name, v.type.tensor_type.elem_type, len(v.type.tensor_type.shape.dim))
            for v in [*graph.input, *graph.output] if v.name not in initializers]


def _require_runnable(proto: onnx.ModelProto, path: Path, problem: str) -> None:
    """Refuse a model the build cannot bring to a supported opset only when onnxruntime cannot run it either."""
    try:
        ort_session(Model.from_proto(proto))
    except Exception as exc:
        raise UserInputError(f"{path}: {problem}; onnxruntime cannot load it either ({first_line(exc)})",
                             hint=f"re-export the model with opset >= {MIN_OPSET}") from exc
