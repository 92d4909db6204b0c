"""TensorFlow frontend: SavedModel folders and Keras `.keras` / `.h5` files -> ONNX with tf2onnx.

Keras models are exported to a SavedModel first (tf2onnx's `from_keras` fails on Keras 3), so
both kinds take one path: the chosen signature is frozen and converted, then the ONNX model is
run against the TensorFlow signature on the same inputs and the difference is reported.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from infer_compile.core.errors import AccuracyError, UnsupportedError, UserInputError
from infer_compile.core.ir import Model
from infer_compile.core.numerics import TOLERANCES, compare_outputs, random_inputs, run_onnx, summarize, within
from infer_compile.core.shapes import opt_sizes
from infer_compile.frontends.base import Frontend, LoweredModel, SourceOptions, check_converted, first_line
from infer_compile.frontends.onnx import apply_input_shapes

SAVED_MODEL = "savedmodel"
KERAS = "keras"
KERAS_H5 = "keras-h5"
CORRUPT_KERAS = "corrupt keras"

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
KERAS_ENTRIES = frozenset({"config.json", "metadata.json"})
DEFAULT_SIGNATURES = ("serving_default", "serve")
OPSET = 17


def sniff_tensorflow(path: Path) -> str | None:
    """The kind of TensorFlow model at ``path``, or None when it is not one."""
    if path.is_dir():
        return SAVED_MODEL if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file() else None
    if not path.is_file():
        return None
    with path.open("rb") as fh:
        head = fh.read(len(HDF5_MAGIC))
    if head == HDF5_MAGIC:
        return KERAS_H5
    if not head.startswith(b"PK"):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return CORRUPT_KERAS if path.suffix == ".keras" else None
    return KERAS if names >= KERAS_ENTRIES else None


class TensorFlowFrontend(Frontend):
    name = "tensorflow"
    description = "TensorFlow SavedModel folders and Keras .keras/.h5 files (--signature)"

    def accepts(self, path: Path) -> bool:
        return sniff_tensorflow(path) is not None

    def load(self, path: Path, options: SourceOptions) -> LoweredModel:
        kind = sniff_tensorflow(path)
        if kind is None:  # load() follows accepts(); a path that changed in between lands here
            raise UserInputError(f"{path}: not a TensorFlow SavedModel folder or Keras .keras/.h5 file",
                                 hint="give a SavedModel folder (saved_model.pb inside) or a .keras/.h5 file")
        if kind == CORRUPT_KERAS:
            raise UserInputError(f"{path}: is a truncated or corrupt .keras archive",
                                 hint="copy the model file again or re-save it with model.save()")
        tf = _import_tensorflow()
        if kind == SAVED_MODEL:
            return _lower_saved_model(tf, path, path, kind, options)
        with tempfile.TemporaryDirectory(prefix="infer-compile-tf-") as tmp:
            saved = Path(tmp) / "saved_model"
            _keras_to_saved_model(path, saved)
            return _lower_saved_model(tf, saved, path, kind, options)


def _import_tensorflow() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before the import: TF's C++ logging is read once
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise UnsupportedError("TensorFlow is not installed", hint='pip install "infer-compile[tf]"') from exc
    tf.get_logger().setLevel(logging.ERROR)
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    return tf


def _keras_to_saved_model(path: Path, saved: Path) -> None:
    import keras

    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as exc:  # keras raises many types for unreadable files
        raise UserInputError(f"{path}: cannot load the Keras model ({first_line(exc)})",
                             hint="the file may be truncated, not a Keras model, or need custom layers") from exc
    try:
        model.export(str(saved), format="tf_saved_model", verbose=False)
    except Exception as exc:
        raise UnsupportedError(f"{path}: Keras cannot export this model to a SavedModel ({first_line(exc)})",
                               hint="export it yourself with model.export(dir) and pass the folder") from exc


def _signature(tf: Any, saved: Path, source: Path, requested: str | None) -> tuple[str, Any]:
    """The signature key to convert and the loaded SavedModel holding it (which owns its variables)."""
    try:
        loaded = tf.saved_model.load(str(saved))
    except Exception as exc:
        raise UserInputError(f"{source}: cannot load the SavedModel ({first_line(exc)})",
                             hint="the folder may be incomplete (saved_model.pb plus variables/)") from exc
    available = sorted(loaded.signatures.keys())
    if requested is None:
        defaults = [s for s in DEFAULT_SIGNATURES if s in available]
        requested = defaults[0] if defaults else available[0] if len(available) == 1 else None
        if requested is None:
            raise UserInputError(f"{source}: has no default signature",
                                 hint=f"choose one with --signature: {', '.join(available) or 'none saved'}")
    if requested not in available:
        raise UserInputError(f"{source}: no signature '{requested}'",
                             hint=f"available: {', '.join(available) or 'none (re-save with signatures)'}")
    return requested, loaded


def _convert(saved: Path, signature: str, source: Path) -> Model:
    from tf2onnx import convert, tf_loader

    try:
        graph_def, inputs, outputs, renames = tf_loader.from_saved_model(
            str(saved), None, None, signatures=[signature], return_tensors_to_rename=True)
        proto, _ = convert.from_graph_def(graph_def, name=source.stem, input_names=inputs, output_names=outputs,
                                          tensors_to_rename=renames, opset=OPSET)
    except Exception as exc:  # tf2onnx raises many types for ops it cannot convert
        raise UnsupportedError(f"{source}: tf2onnx cannot convert signature '{signature}': {first_line(exc)}",
                               hint="rerun with --debug for the converter's full message") from exc
    return Model.from_proto(proto)


def _lower_saved_model(tf: Any, saved: Path, source: Path, kind: str, options: SourceOptions) -> LoweredModel:
    signature, loaded = _signature(tf, saved, source, options.signature)
    model = _convert(saved, signature, source)
    check_converted(model, str(source), "tf2onnx")
    readable_dims(model)
    apply_input_shapes(model, options.input_shapes)
    name_dynamic_dims(model, options.dynamic_dims)
    details = {"kind": kind, "signature": signature, "exporter": "tf2onnx", "tensorflow": tf.__version__,
               "opset": model.opset}
    details.update(_check_conversion(tf, model, loaded.signatures[signature], options, source))
    return LoweredModel(model, "tensorflow", details)


def readable_dims(model: Model) -> None:
    """tf2onnx names unknown dims `unk__398`: a leading one becomes `batch` (Keras's None batch dim), others
    `<tensor>_dim<axis>`, on the graph's inputs and outputs (--dynamic still renames them)."""
    for tensor in [*model.graph.inputs, *model.graph.outputs]:
        if tensor.shape is not None:
            tensor.shape = [("batch" if axis == 0 else f"{tensor.name}_dim{axis}")
                            if isinstance(dim, str) and re.fullmatch(r"unk__\d+", dim) else dim
                            for axis, dim in enumerate(tensor.shape)]


def name_dynamic_dims(model: Model, dynamic: dict[str, dict[int, str]]) -> None:
    """--dynamic name:0=batch: give the converter's anonymous dims (`unk__7`) the user's names."""
    by_name = {t.name: t for t in model.graph.inputs}
    for name, axes in dynamic.items():
        tensor = by_name.get(name)
        if tensor is None or tensor.shape is None:
            raise UserInputError(f"--dynamic names unknown input '{name}'",
                                 hint=f"the model's inputs are: {', '.join(by_name)}")
        shape = list(tensor.shape)
        for axis, dim in axes.items():
            if axis >= len(shape) or (isinstance(shape[axis], int) and shape[axis] > 0):
                raise UserInputError(f"--dynamic {name}:{axis}={dim}: axis {axis} of {name} is not dynamic "
                                     f"in the SavedModel (shape {tensor.shape})", hint="save the model with None there")
            shape[axis] = dim
        tensor.shape = shape


def _check_conversion(tf: Any, model: Model, function: Any, options: SourceOptions,
                      source: Path) -> dict[str, Any]:
    """Run the ONNX model and the TF signature on the same seeded inputs; fail beyond fp32 tolerance."""
    feeds = random_inputs(model.inputs, seed=0, dims=opt_sizes(options.shape_ranges))
    try:
        result = function(**{name: tf.constant(value) for name, value in feeds.items()})
    except Exception as exc:
        raise UserInputError(f"{source}: the TensorFlow model fails on inputs "
                             f"{', '.join(f'{n}:{v.shape}' for n, v in feeds.items())}: {first_line(exc)}",
                             hint="pin the input shapes with --input-shape") from exc
    reference = {name: value.numpy() for name, value in result.items()}
    got = run_onnx(model, feeds)
    comparisons = compare_outputs(reference, got)
    summary = summarize(comparisons)
    if not within(comparisons, TOLERANCES["fp32"]):
        raise AccuracyError(f"{source}: the converted ONNX differs from TensorFlow (max abs {summary['max_abs']:.3g}, "
                            f"cosine {summary['cosine']:.6f})", hint="report the model; try another --signature")
    return {"export_max_abs": summary["max_abs"], "export_cosine": summary["cosine"]}
