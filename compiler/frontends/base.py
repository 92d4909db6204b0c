"""What a frontend is: it recognises a model file by its contents and lowers it to the IR."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from infer_compile.core.errors import UnsupportedError
from infer_compile.core.shapes import ShapeRange

if TYPE_CHECKING:  # the IR (onnx, graphsurgeon) is loaded by the frontends that build it: the source options need none
    from infer_compile.core.ir import Model, TensorSpec


@dataclass
class SourceOptions:
    """How to read the source model (shapes the user pinned, trust decisions, framework extras)."""

    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    input_dtypes: dict[str, str] = field(default_factory=dict)  # input name -> numpy dtype name
    dynamic_dims: dict[str, dict[int, str]] = field(default_factory=dict)  # input name -> {axis: dim name}
    # dim name -> its range; the build copies BuildOptions.shape_ranges here.
    shape_ranges: dict[str, ShapeRange] = field(default_factory=dict)
    trust_pickle: bool = False  # allow full unpickling (runs code from the file)
    arch: str | None = None  # "pkg.mod:factory" building the module a state_dict belongs to
    python_entry: str | None = None  # "pkg.mod:build" returning (module, example_inputs)
    exporter: str | None = None  # PyTorch: "dynamo" or "legacy"; None = the frontend's default
    signature: str | None = None  # TensorFlow SavedModel signature key
    extra: dict[str, Any] = field(default_factory=dict)  # frontend-specific settings
    # Where a frontend appends what its converters print (the build's ARTIFACT.log); None: a temporary file when
    # lowering fails (the error names it). verbose: not captured, shown as it happens (--verbose).
    log_path: Path | None = None
    verbose: bool = False
    # The inputs a build of this source had (verify: from the artifact's manifest); a PyTorch module's example
    # inputs default to their shapes and integer dtypes when no --input-shape is given.
    recorded_inputs: list[TensorSpec] = field(default_factory=list)


@dataclass
class LoweredModel:
    """A source model lowered to the IR, with what the report should say about how."""

    model: Model
    format: str  # e.g. "onnx", "torchscript", "savedmodel"
    details: dict[str, Any] = field(default_factory=dict)  # exporter used, export max error, ...
    # The source as a framework object, for a target that converts it itself: a PyTorch nn.Module (not TorchScript),
    # which the TFLite target hands to litert-torch. In memory only, never in the manifest or the cache key.
    module: Any = None


class Frontend(ABC):
    name: ClassVar[str]
    description: ClassVar[str]

    @abstractmethod
    def accepts(self, path: Path) -> bool:
        """True when ``path``'s contents (not just its suffix) look like this frontend's format."""

    @abstractmethod
    def load(self, path: Path, options: SourceOptions) -> LoweredModel:
        """Lower the model at ``path`` to the IR; raise InferCompileError for bad input."""


def first_line(exc: BaseException, lines: int = 1) -> str:
    """An exception as one line for an error message: its type and the first line(s) of its text."""
    text = " ".join([line.strip() for line in str(exc).splitlines() if line.strip()][:lines])
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def check_converted(model: Model, source: str, converter: str) -> None:
    """Reject a converter's output that is not valid ONNX (e.g. an op it emitted that ONNX does not have)."""
    import onnx

    try:
        onnx.checker.check_model(model.to_proto())
    except onnx.checker.ValidationError as exc:
        raise UnsupportedError(f"{source}: {converter} produced an invalid ONNX model: {first_line(exc)}",
                               hint="the model uses an op the converter cannot express; replace that op") from exc
