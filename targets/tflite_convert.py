"""ONNX -> Keras model (onnx2tf) -> ``.tflite`` bytes (TensorFlow's TFLiteConverter), offline.

onnx2tf is installed without its dependencies (it pins old numpy/onnx/protobuf); on our stack it works
once these hazards are contained, all of them here:
- it rewrites its input ONNX in place: it only ever sees a copy written into a temporary folder;
- it runs ``onnxsim`` as a subprocess: this interpreter's ``bin/`` goes first on PATH while it runs;
- it fetches a sample-image file from the internet for 4-D 3-channel inputs (read from the working
  directory when present) and for its own INT8 calibration: we run it inside the temporary folder
  holding that file filled with our sample, give it our sample per input
  (``custom_input_op_name_np_data_path``) and never use its quantization (``-oiqt``);
- it calls ``sys.exit`` on errors and prints to stdout: both are captured and become one clear error.

onnx2tf stops at the Keras model (``disable_model_save``: no SavedModel, none of its own .tflite
files); precision is applied by TFLiteConverter on that model, with builtin TFLite ops only (no Flex
ops: ai-edge-litert's interpreter cannot run them).
"""

from __future__ import annotations

import collections
import contextlib
import io
import os
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx_graphsurgeon as gs

from infer_compile.core import progress
from infer_compile.core.errors import UnsupportedError, one_line
from infer_compile.core.ir import Model, save_onnx
from infer_compile.core.numerics import Feeds
from infer_compile.passes.precision_state import name_unnamed_nodes

# onnx2tf looks for this file in the working directory before downloading it.
ONNX2TF_SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"
# Erf has no builtin TFLite kernel: onnx2tf's polynomial form (error < 2e-7) keeps the graph builtin-only.
# (The erf GELU pattern itself becomes TFLite's GELU op.)
PSEUDO_OPS = ["erf"]
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def channels_last(rank: int) -> list[int]:
    """The permutation onnx2tf applies to channel-first tensors: NCW->NWC, NCHW->NHWC, NCDHW->NDHWC."""
    return [0, *range(2, rank), 1]


# Ops whose first input is a channel-first (NC...) feature map.
_SPATIAL_OPS = frozenset({"Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "FusedConv", "MaxPool", "AveragePool",
                          "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "BatchNormalization",
                          "InstanceNormalization", "SpaceToDepth", "DepthToSpace"})
# Ops that keep their input's layout: preprocessing inside the graph ((x - mean) / std, a cast, a clip).
_LAYOUT_KEEPING = frozenset({"Add", "Sub", "Mul", "Div", "Cast", "Identity", "Relu", "Clip"})


def feeds_channel_first_op(tensor: gs.Tensor) -> bool:
    """Whether ``tensor`` (a graph input) reaches a spatial op's data input through layout-keeping ops only:
    an image or feature map laid out channel-first. A channel-last (Keras) image reaches its Conv through a
    Transpose, a token or feature sequence no spatial op at all."""
    seen: set[int] = set()
    frontier = [tensor]
    while frontier:
        current = frontier.pop()
        for node in current.outputs:
            if node.op in _SPATIAL_OPS and node.inputs and node.inputs[0] is current:
                return True
            if node.op in _LAYOUT_KEEPING and id(node) not in seen:
                seen.add(id(node))
                frontier.extend(node.outputs)
    return False


def input_perm(tensor: gs.Tensor, rank: int, keep_nchw: bool) -> tuple[int, ...] | None:
    """How the .tflite lays out a graph input: channel-last (NHWC, what TFLite users feed) for a channel-first
    image or feature map unless ``keep_nchw``; every other input as in the source (None)."""
    if keep_nchw or not 3 <= rank <= 5 or not feeds_channel_first_op(tensor):
        return None
    return tuple(channels_last(rank))


def _tensorflow() -> Any:
    """tensorflow, imported lazily (3-5 s) and without its C++ info/warning lines, which are noise here."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


@contextlib.contextmanager
def _onnx2tf_process_state(workdir: Path) -> Iterator[io.StringIO]:
    """Working directory, PATH and stdout as onnx2tf needs them, restored afterwards."""
    log = io.StringIO()
    path = os.environ.get("PATH", "")
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), path])
    try:
        with contextlib.chdir(workdir), contextlib.redirect_stdout(log):
            yield log
    finally:
        os.environ["PATH"] = path


# A run of numbers in brackets: TensorFlow errors print whole tensors ("Tensor [1. 1. 1. ...").
_ARRAY = re.compile(r"\[[\d\s.,eE+-]{24,}\]?")  # shapes such as [1, 3, 224, 224] stay


def _readable(message: str) -> str:
    """An onnx2tf/TensorFlow message as one line, printed tensors cut to [...]."""
    return one_line(ValueError(_ARRAY.sub("[...]", message)), limit=240)


def _last_error(log: str) -> str:
    lines = [_ANSI.sub("", line).strip() for line in log.splitlines()]
    errors = [line for line in lines if "ERROR" in line or "Error" in line]
    return _readable((errors or [line for line in lines if line] or ["no message"])[-1])


def rewrite_for_onnx2tf(model: Model) -> dict[str, int]:
    """Rewrite, in place, the ops onnx2tf 1.29 mishandles into equivalent ones it converts; returns how many
    of each op were rewritten (recorded in the manifest).

    - ReduceL2 (an L2 norm: sentence encoders' normalize): onnx2tf's axis search calls tf.norm with a numpy
      int64 axis, which tf.norm refuses; Sqrt(ReduceSumSquare) is the same norm (ReduceSumSquare takes
      ReduceL2's inputs and attributes in every opset).
    """
    graph = model.graph
    rewritten: collections.Counter[str] = collections.Counter()
    for node in list(graph.nodes):
        if node.op != "ReduceL2" or node.domain not in (None, "", "ai.onnx"):
            continue
        norm = node.outputs[0]
        squares = gs.Variable(f"{norm.name}_sum_squares", dtype=norm.dtype, shape=norm.shape)
        node.op, node.outputs = "ReduceSumSquare", [squares]
        graph.nodes.append(gs.Node("Sqrt", inputs=[squares], outputs=[norm]))  # named by to_keras
        rewritten["ReduceL2"] += 1
    if rewritten:
        graph.toposort()
    return dict(rewritten)


def to_keras(model: Model, workdir: Path, probe: Feeds, perms: dict[str, tuple[int, ...] | None],
             pinned_shapes: dict[str, tuple[int, ...]]) -> Any:
    """Run onnx2tf on a copy of ``model`` written into ``workdir``; returns the (tf_keras) Keras model.

    ``probe`` holds one sample per input in the source layout (onnx2tf checks its conversion with it);
    ``perms`` says how each input is laid out on the TensorFlow side (None: as in the source; onnx2tf would
    make every 3-5-D input channel-last, a Keras NHWC image [1,224,224,3] too); ``pinned_shapes`` fixes the
    inputs that have symbolic dimensions.
    """
    _tensorflow()  # before onnx2tf imports it
    import onnx2tf

    onnx_path = workdir / "model.onnx"
    name_unnamed_nodes(model.graph)  # onnx2tf's own naming step is off (below): it names layers after nodes
    save_onnx(model, onnx_path)
    tf_probe = {name: array.transpose(perms[name]) if perms[name] else array for name, array in probe.items()}
    custom_data = []
    for index, (name, array) in enumerate(tf_probe.items()):
        np.save(workdir / f"probe_{index}.npy", array)
        custom_data.append([name, str(workdir / f"probe_{index}.npy")])
    first = next(iter(tf_probe.values()), None)
    if first is not None and first.ndim == 4:  # the case where onnx2tf would download its sample images
        np.save(workdir / ONNX2TF_SAMPLE_FILE, first.astype(np.float32))
    overwrite = [f"{name}:{','.join(map(str, shape))}" for name, shape in pinned_shapes.items()]
    progress.stage("tflite: onnx2tf converting the ONNX graph to a Keras model")
    with _onnx2tf_process_state(workdir) as log:
        try:
            keras_model = onnx2tf.convert(
                input_onnx_file_path=str(onnx_path), disable_model_save=True, non_verbose=True,
                custom_input_op_name_np_data_path=custom_data or None, overwrite_input_shape=overwrite or None,
                keep_ncw_or_nchw_or_ncdhw_input_names=[name for name, array in probe.items()
                                                       if perms[name] is None and 3 <= array.ndim <= 5] or None,
                replace_to_pseudo_operators=PSEUDO_OPS,
                # Its op-name step (sng4onnx 2.0.1) rewrites every node and drops node domains: our
                # com.microsoft::Gelu became an ONNX Gelu opset 18 lacks, shape inference lost every shape after
                # it, and LayerNormalization then failed on a transposed axis (ViT, MiniLM, ConvNeXt; issue 17).
                not_use_opname_auto_generate=True,
                # Its onnxsim runs (3, as subprocesses) merge the q/k/v MatMuls into one MatMul + Split, whose axis
                # onnx2tf then maps wrongly (ViT: "Dimension size must be evenly divisible by 3 but is 17"). Our
                # passes have folded constants and shapes already.
                not_use_onnxsim=True)
        except SystemExit:
            raise UnsupportedError(f"onnx2tf could not convert the model: {_last_error(log.getvalue())}",
                                   hint="rerun with --debug; --keep-nchw or pinning shapes with --input-shape "
                                        "sometimes helps") from None
        except Exception as exc:
            raise UnsupportedError(f"onnx2tf could not convert the model: {type(exc).__name__}: {_readable(str(exc))}",
                                   hint="rerun with --debug for the traceback") from exc
    if keras_model is None:
        raise UnsupportedError(f"onnx2tf returned no model: {_last_error(log.getvalue())}",
                               hint="rerun with --debug for the traceback")
    return keras_model


def _serving_function(tf: Any, keras_model: Any) -> tuple[Any, Any]:
    """The Keras model as one concrete function (inputs and outputs named as in the model) and an object
    tracking every variable it captures.

    TFLiteConverter writes the ``serving_default`` signature only when it can save its input as a SavedModel,
    and silently drops the signature when it cannot: onnx2tf creates some variables (e.g. the kernels of
    grouped/depthwise convolutions such as ConvNeXt's) outside any layer, and saving refuses such "untracked"
    variables. Tracking them on one holder keeps the signature for every model."""
    specs = [tf.TensorSpec(t.shape, t.dtype, name=name) for t, name in zip(keras_model.inputs,
                                                                          keras_model.input_names, strict=True)]

    def serve(*args: Any) -> dict[str, Any]:
        outputs = keras_model(list(args) if len(args) > 1 else args[0], training=False)
        outputs = outputs if isinstance(outputs, list | tuple) else [outputs]
        return dict(zip(keras_model.output_names, outputs, strict=True))

    function = tf.function(serve, input_signature=specs).get_concrete_function()
    holder = tf.Module()
    holder.model = keras_model
    holder.captured = list(function.graph.variables)
    return function, holder


def tflite_bytes(keras_model: Any, precision: str, int8_mode: str, int8_io: bool,
                 samples: Iterable[Feeds] | None, sample_count: int | None = None) -> bytes:
    """Convert the Keras model at ``precision``; ``samples`` (full INT8; ``sample_count`` of them, for the
    progress display) are keyed by signature input name and already in the TensorFlow layout."""
    tf = _tensorflow()
    function, holder = _serving_function(tf, keras_model)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], holder)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if precision == "fp16":  # half-precision weights, dequantized to float32 at load (or run in fp16 by GPUs)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif precision == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # alone: dynamic range (int8 weights)
        if int8_mode == "full":
            # TFLiteConverter pulls the samples one by one while it calibrates: each one reports progress.
            converter.representative_dataset = lambda: progress.counted(
                samples or [], "tflite: TFLiteConverter int8 calibration", sample_count)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            if int8_io:
                converter.inference_input_type = tf.int8
                converter.inference_output_type = tf.int8
    full_int8 = precision == "int8" and int8_mode == "full"
    progress.stage(f"tflite: TFLiteConverter writing the {precision}{' (calibrating)' if full_int8 else ''} flatbuffer")
    try:
        return converter.convert()
    except Exception as exc:
        first = next((line for line in str(exc).splitlines() if "error" in line.lower()), str(exc))
        hint = ("an op without an INT8 kernel: try --tflite-int8-mode dynamic" if int8_mode == "full"
                and precision == "int8" else "the model uses an op TFLite has no builtin kernel for")
        raise UnsupportedError(f"TFLiteConverter failed: {first[:300]}", hint=hint) from exc
