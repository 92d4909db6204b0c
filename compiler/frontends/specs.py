"""Parsing the command line's input specifications and `module:callable` entry points.

Kept free of numpy, onnx, torch and tensorflow imports: the CLI parses these before any of them loads (a cache hit
needs none).
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from infer_compile.core.errors import UserInputError
from infer_compile.core.options import Option, read
from infer_compile.core.shapes import ShapeRange, shape_ranges_from
from infer_compile.frontends.base import SourceOptions, first_line

if TYPE_CHECKING:
    from infer_compile.core.ir import TensorSpec

T = TypeVar("T")


def _split_pair(value: str, flag: str, sep: str, example: str) -> tuple[str, str]:
    left, found, right = value.partition(sep)
    if not found or not left or not right:
        raise UserInputError(f"{flag} '{value}' is not in the expected form", hint=f"write it like {example}")
    return left, right


POSITIONAL = "#"  # the key prefix of a shape given without a name: "#0" is the model's first input


def parse_input_shapes(values: list[str]) -> dict[str, tuple[int, ...]]:
    """`name:1x3x224x224` (repeatable) -> {name: (1, 3, 224, 224)}; a shape without a name (`1x3x224x224`, as
    trtexec and Ultralytics users type it) is the next input's in input order, keyed "#0", "#1", ..."""
    shapes: dict[str, tuple[int, ...]] = {}
    for value in values:
        name, sep, dims = value.rpartition(":")
        try:
            shape = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            shape = ()
        if (sep and not name) or not shape or any(d <= 0 for d in shape):
            raise UserInputError(f"--input-shape '{value}' is not NAME:DIMS or DIMS",
                                 hint="write it like input:1x3x224x224, or 1x3x224x224 for the inputs in order")
        shapes[name if sep else f"{POSITIONAL}{sum(k.startswith(POSITIONAL) for k in shapes)}"] = shape
    return shapes


def shapes_by_name(shapes: dict[str, tuple[int, ...]], names: list[str]) -> dict[str, tuple[int, ...]]:
    """``shapes`` keyed by input name: those given without a name go to ``names`` (the model's inputs) in order."""
    positional = [shape for key, shape in shapes.items() if key.startswith(POSITIONAL)]
    if not positional:
        return shapes
    if len(positional) < len(shapes):
        raise UserInputError("--input-shape given both with and without input names",
                             hint="name every input (NAME:DIMS), or give the shapes of the inputs in order")
    if len(positional) > len(names):
        raise UserInputError(f"{len(positional)} --input-shape given, the model takes {len(names)} input(s)",
                             hint=f"the model's inputs, in order: {', '.join(names) or 'none'}")
    return dict(zip(names, positional, strict=False))


def parse_input_dtypes(values: list[str]) -> dict[str, str]:
    """`name:float16` (repeatable) -> {name: "float16"}; the dtype must be a numpy dtype name."""
    import numpy as np  # only when dtypes are given: the source options are read on every start

    dtypes: dict[str, str] = {}
    for value in values:
        name, dtype = _split_pair(value, "--input-dtype", ":", "input_ids:int64")
        try:
            dtypes[name] = np.dtype(dtype).name
        except TypeError as exc:
            raise UserInputError(f"--input-dtype '{value}': unknown dtype '{dtype}'",
                                 hint="use a numpy dtype name such as float32, float16, int64, bool") from exc
    return dtypes


def parse_dynamic_dims(values: list[str]) -> dict[str, dict[int, str]]:
    """`name:0=batch` (repeatable) -> {name: {0: "batch"}}: axis 0 of input `name` is the dim `batch`."""
    dynamic: dict[str, dict[int, str]] = {}
    for value in values:
        match = re.fullmatch(r"(.+):(\d+)=([A-Za-z_]\w*)", value)
        if match is None:
            raise UserInputError(f"--dynamic '{value}' is not NAME:AXIS=DIM with a non-negative axis",
                                 hint="write it like input:0=batch")
        name, axis, dim = match.groups()
        dynamic.setdefault(name, {})[int(axis)] = dim
    return dynamic


def parse_shape_ranges(values: list[str]) -> dict[str, ShapeRange]:
    """`batch=1:8:32` (repeatable) -> {"batch": ShapeRange(1, 8, 32)}."""
    return dict(ShapeRange.parse(value) for value in values)


def _flags_or_table(parse: Callable[[list[str]], T], as_flags: Callable[[Any, Any], list[str]],
                    ) -> Callable[[Any], T]:
    """A parser taking the flags' form (``["image:1x3x224x224"]``) or a table by input name (config files, the
    API: ``{"image": [1, 3, 224, 224]}``), read through the flags' parser so both are checked alike."""
    def parse_any(value: Any) -> T:
        if isinstance(value, dict):
            value = [flag for name, item in value.items() for flag in as_flags(name, item)]
        elif isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise TypeError(f"expected a table by input name or a list of strings, got {value!r}")
        return parse(list(value))
    return parse_any


def _dims_flag(name: Any, dims: Any) -> list[str]:
    if not isinstance(dims, list | tuple) or not all(isinstance(d, int) and not isinstance(d, bool) for d in dims):
        raise TypeError(f"{name}: expected a list of positive ints, got {dims!r}")
    return [f"{name}:{'x'.join(map(str, dims))}"]


INPUT_SHAPES: Option[dict[str, tuple[int, ...]]] = Option(
    "input_shapes", list, {}, "Pin an input's shape, NAME:1x3x224x224, or 1x3x224x224 for the inputs in order "
    "(repeatable).", flag="--input-shape",
    parse=_flags_or_table(parse_input_shapes, _dims_flag))
INPUT_DTYPES: Option[dict[str, str]] = Option(
    "input_dtypes", list, {}, "An input's dtype for PyTorch example inputs, NAME:float16 (repeatable).",
    flag="--input-dtype", parse=_flags_or_table(parse_input_dtypes, lambda name, dtype: [f"{name}:{dtype}"]))
DYNAMIC_DIMS: Option[dict[str, dict[int, str]]] = Option(
    "dynamic_dims", list, {}, "Make an input axis dynamic, NAME:AXIS=DIM, e.g. input:0=batch (repeatable).",
    flag="--dynamic", parse=_flags_or_table(parse_dynamic_dims, lambda name, axes: [
        f"{name}:{axis}={dim}" for axis, dim in dict(axes).items()]))
TRUST_PICKLE = Option("trust_pickle", bool, False, "Allow unpickling PyTorch files (runs code from the file: "
                      "trusted files only).")
ARCH: Option[str | None] = Option(
    "arch", str, None, "pkg.mod:factory building the nn.Module a state_dict's weights belong to.")
PYTHON_ENTRY: Option[str | None] = Option(
    "python_entry", str, None, "pkg.mod:build (or file.py:build) returning (module, example_inputs).",
    flag="--from-python")
EXPORTER: Option[str | None] = Option(
    "exporter", str, None, "PyTorch exporter: dynamo (default) or legacy (TorchScript-based).",
    choices=("dynamo", "legacy"))
SIGNATURE: Option[str | None] = Option(
    "signature", str, None, "TensorFlow SavedModel signature (default: serving_default).")
SOURCE_OPTIONS = (INPUT_SHAPES, INPUT_DTYPES, DYNAMIC_DIMS, TRUST_PICKLE, ARCH, PYTHON_ENTRY, EXPORTER, SIGNATURE)


def source_options(values: Mapping[str, Any]) -> SourceOptions:
    """The source options (checked values by key) as SourceOptions."""
    # The tables are copied: an option's default is one shared object.
    return SourceOptions(input_shapes=read(values, INPUT_SHAPES).copy(),
                         input_dtypes=read(values, INPUT_DTYPES).copy(),
                         dynamic_dims=read(values, DYNAMIC_DIMS).copy(), trust_pickle=read(values, TRUST_PICKLE),
                         arch=read(values, ARCH), python_entry=read(values, PYTHON_ENTRY),
                         exporter=read(values, EXPORTER), signature=read(values, SIGNATURE))


def check_shape_ranges(ranges: Mapping[str, Any], inputs: list[TensorSpec] | None = None) -> dict[str, ShapeRange]:
    """Ranges in any of their forms as ShapeRanges, refusing unusable bounds and, given the model's ``inputs``,
    ranges for dims no input has: a typo in a dim name would otherwise be ignored (the dim built at a default
    size)."""
    checked = shape_ranges_from(ranges)
    if inputs is None:
        return checked
    named = {d for spec in inputs for d in spec.shape or () if isinstance(d, str)}
    if unknown := sorted(set(ranges) - named):
        described = ", ".join(spec.describe() for spec in inputs)
        raise UserInputError(f"shape range for {', '.join(map(repr, unknown))}: no model input has a dynamic "
                             f"dimension of that name", hint=f"the model's inputs: {described}")
    return checked


def _split_entry(spec: str, flag: str) -> tuple[str, str]:
    return _split_pair(spec, flag, ":", "package.module:function")


def entry_point_file(spec: str, flag: str = "--from-python") -> Path:
    """The source file that defines ``spec``'s module (`pkg.mod:fn` or `path/to/file.py:fn`)."""
    module, _ = _split_entry(spec, flag)
    if module.endswith(".py"):
        path = Path(module)
        if not path.is_file():
            raise UserInputError(f"{flag} {spec}: no such file {module}", hint="check the path to the .py file")
        return path
    with _cwd_importable():
        try:
            found = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            found = None
    if found is None or not found.origin or not Path(found.origin).is_file():
        raise UserInputError(f"{flag} {spec}: cannot find module '{module}'",
                             hint="install the package, run from its folder, or pass path/to/file.py:function")
    return Path(found.origin)


def load_entry_point(spec: str, flag: str) -> Callable[..., Any]:
    """Import ``spec`` (`pkg.mod:fn` or `path/to/file.py:fn`) and return the callable it names."""
    module_name, attr = _split_entry(spec, flag)
    try:
        with _cwd_importable():
            if module_name.endswith(".py"):
                module = _import_file(entry_point_file(spec, flag))
            else:
                module = importlib.import_module(module_name)
    except UserInputError:
        raise
    except Exception as exc:  # importing user code can raise anything
        raise UserInputError(f"{flag} {spec}: importing '{module_name}' failed: {first_line(exc)}",
                             hint="fix the module or rerun with --debug for the traceback") from exc
    target = getattr(module, attr, None)
    if not callable(target):
        raise UserInputError(f"{flag} {spec}: '{module_name}' has no callable named '{attr}'",
                             hint="name a function or class defined in that module")
    return target


def _import_file(path: Path) -> Any:
    name = f"_infer_compile_entry_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UserInputError(f"{path}: cannot be imported as a Python module", hint="pass a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # classes defined there must be findable by name (pickling, dataclasses)
    spec.loader.exec_module(module)
    return module


class _cwd_importable:
    """Make modules in the current folder importable, as `python -c` would (console scripts do not)."""

    def __enter__(self) -> None:
        self.added = "" not in sys.path and str(Path.cwd()) not in sys.path
        if self.added:
            sys.path.insert(0, str(Path.cwd()))

    def __exit__(self, *exc: object) -> None:
        if self.added:
            sys.path.remove(str(Path.cwd()))


def model_source(model: Path | None, python_entry: str | None) -> Path:
    """The path a build reads: MODEL, or the file defining the --from-python entry point (exactly one given)."""
    if python_entry is None:
        if model is None:
            raise UserInputError("no model given", hint="pass a MODEL file or folder, or --from-python pkg.mod:build")
        return model
    if model is not None:
        raise UserInputError("MODEL and --from-python exclude each other",
                             hint="--from-python builds the model; drop MODEL (use --arch to load weights into it)")
    return entry_point_file(python_entry)
