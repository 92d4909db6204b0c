"""PyTorch module -> ``.tflite`` bytes with Google's litert-torch, without TensorFlow (the [tflite-torch] extra).

litert_torch.convert exports the module with torch.export and lowers it to TFLite builtin ops; precision is
applied afterwards to that float .tflite by ai-edge-quantizer: fp16 = float16 weights (float casting), int8 full =
int8 weights and activations of the ops that carry the compute (fully connected, batch matmul, convolutions), calibrated
on OUR samples, as our ONNX Runtime and OpenVINO INT8 builds quantize MatMul/Conv (softmax, normalizations and GELU
stay float: all quantized, static_wi8_ai8, a tiny ViT's logits fell to cosine 0.990 from 0.999); int8 dynamic = int8
weights with activations quantized at run time (dynamic_wi8_afp32). When full INT8 misses the INT8 tolerance against
the float model on the calibration samples, the next of ``FULL_INT8_CANDIDATES`` is tried (fully connected ops
with dynamic or int16 activations, then one op type left float; see ``tflite._write_litert``). Channel-first image
inputs become NHWC in the graph itself (litert_torch.to_channel_last_io), as on the onnx2tf route. The signature is
``serving_default`` with inputs ``args_0, args_1, ...`` and outputs ``output_0, ...`` in the module's order.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from infer_compile.core import progress
from infer_compile.core.errors import UnsupportedError, one_line
from infer_compile.core.ir import Model
from infer_compile.core.numerics import Feeds

MODULES = ("litert_torch", "ai_edge_quantizer")
DISTRIBUTIONS = ("litert-torch", "ai-edge-quantizer")
INSTALL_HINT = "pip install 'infer-compile[tflite-torch]'"


def signature_names(model: Model) -> dict[str, str]:
    """Source I/O name -> its key in the signature litert-torch writes (positional names)."""
    return {**{s.name: f"args_{i}" for i, s in enumerate(model.inputs)},
            **{s.name: f"output_{i}" for i, s in enumerate(model.outputs)}}


# The ops full INT8 quantizes (weights and activations): those that carry the compute.
QUANTIZED_OPS = ("FULLY_CONNECTED", "BATCH_MATMUL", "CONV_2D", "DEPTHWISE_CONV_2D")


# Full INT8's recipes in the order tried until one is within the INT8 tolerance of the float model: how op types
# deviate from "static" (int8 weights and calibrated int8 activations): "dynamic" (activations quantized at run
# time), "int16" (int16 activations), "float". Transformer FFN activations have outliers a calibrated int8 range
# cannot hold (the real MiniLM's sentence embedding vs the float model: cosine 0.937 all static, 0.996 with dynamic
# and 0.9992 with int16-activation fully connected ops).
FULL_INT8_CANDIDATES: tuple[dict[str, str], ...] = (
    {}, {"FULLY_CONNECTED": "dynamic"}, {"FULLY_CONNECTED": "int16"}, *({op: "float"} for op in QUANTIZED_OPS))


def recipe(precision: str, int8_mode: str, modes: dict[str, str] | None = None) -> Any:
    """ai-edge-quantizer's recipe for a non-fp32 precision; full INT8 quantizes op types as ``modes`` says (see
    FULL_INT8_CANDIDATES; static by default)."""
    from ai_edge_quantizer import recipe as recipes
    from ai_edge_quantizer import recipe_manager
    from ai_edge_quantizer.algorithm_manager import AlgorithmName
    from ai_edge_quantizer.qtyping import TFLOperationName

    if precision == "int8" and int8_mode == "dynamic":
        return recipes.dynamic_wi8_afp32()
    manager = recipe_manager.RecipeManager()
    if precision == "fp16":
        manager.add_weight_only_config(regex=".*", operation_name=TFLOperationName.ALL_SUPPORTED, num_bits=16,
                                       algorithm_key=AlgorithmName.FLOAT_CASTING)
    else:
        for op in QUANTIZED_OPS:
            mode, name = (modes or {}).get(op, "static"), TFLOperationName[op]
            if mode == "dynamic":
                manager.add_dynamic_config(regex=".*", operation_name=name, num_bits=8,
                                           algorithm_key=AlgorithmName.MIN_MAX_UNIFORM_QUANT)
            elif mode != "float":
                manager.add_static_config(regex=".*", operation_name=name, weight_num_bits=8,
                                          activation_num_bits=16 if mode == "int16" else 8,
                                          algorithm_key=AlgorithmName.MIN_MAX_UNIFORM_QUANT)
    return manager.get_quantization_recipe()


def _quiet() -> contextlib.ExitStack:
    """litert-torch's and ai-edge-quantizer's import warnings, progress lines and reports: noise in a build table."""
    stack = contextlib.ExitStack()
    log = io.StringIO()
    stack.enter_context(contextlib.redirect_stdout(log))
    stack.enter_context(contextlib.redirect_stderr(log))
    return stack


def float_model(module: Any, example: list[np.ndarray], channels_last: list[int]) -> bytes:
    """The fp32 .tflite of ``module`` called on ``example`` (positional inputs, source layout); ``channels_last``
    lists the inputs laid out NHWC in the artifact."""
    import torch

    progress.stage("tflite: litert-torch converting the PyTorch module")
    with _quiet():
        import litert_torch
    args = [torch.from_numpy(np.ascontiguousarray(a)) for a in example]
    if channels_last:
        module = litert_torch.to_channel_last_io(module, args=channels_last)
        args = [a.permute(0, *range(2, a.dim()), 1).contiguous() if i in channels_last else a
                for i, a in enumerate(args)]
    with tempfile.TemporaryDirectory(prefix="infer-compile-litert-") as tmp:
        path = Path(tmp) / "model.tflite"
        try:
            with _quiet():
                litert_torch.convert(module, tuple(args)).export(str(path))  # in eval mode (the frontend's)
        except Exception as exc:  # torch.export and the lowering raise many types: each is "cannot convert"
            raise UnsupportedError(f"litert-torch could not convert the module: {one_line(exc, limit=240)}",
                                   hint="build with --tflite-converter onnx2tf") from exc
        return path.read_bytes()


def quantize(model: bytes, quant_recipe: Any, samples: Iterable[Feeds] | None, calibration: Any = None
             ) -> tuple[bytes, Any]:
    """``model`` quantized by ``quant_recipe``; ``samples`` (static recipes) are keyed by signature input name in the
    artifact's layout, or ``calibration`` is an earlier result of theirs (returned for reuse)."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import quantizer

    # litert-torch makes int64 inputs (token ids) int32: the samples take the float model's input dtypes.
    dtypes = {key: detail["dtype"] for key, detail in
              Interpreter(model_content=model).get_signature_runner().get_input_details().items()}
    tool = quantizer.Quantizer(bytearray(model), quant_recipe)
    try:
        with _quiet():
            if calibration is None and samples is not None:
                progress.stage("tflite: ai-edge-quantizer calibrating")
                calibration = tool.calibrate({"serving_default": [
                    {key: value.astype(dtypes[key]) for key, value in sample.items()} for sample in samples]})
            progress.stage("tflite: ai-edge-quantizer quantizing")
            return bytes(tool.quantize(calibration).quantized_model), calibration
    except Exception as exc:
        raise UnsupportedError(f"ai-edge-quantizer could not quantize the model: {one_line(exc, limit=240)}",
                               hint="try --tflite-int8-mode dynamic, or --tflite-converter onnx2tf") from exc
