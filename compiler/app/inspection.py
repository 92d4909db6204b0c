"""What a model or artifact holds (`infer-compile inspect`).

Anything a frontend reads (source models, and ONNX artifacts) is described from its graph: inputs,
outputs, op histogram, parameter count, precision breakdown. Other artifacts (OpenVINO IR, TFLite,
engines) are described by their manifest and by the inputs/outputs their target's runner reports.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from infer_compile.core.errors import UserInputError
from infer_compile.core.ir import Model, TensorSpec
from infer_compile.core.manifest import Manifest, manifest_path
from infer_compile.frontends import load_source
from infer_compile.targets import load_artifact, target_for_artifact

INSPECT_SCHEMA = "infer-compile.inspect/1"
# Ops that carry quantized arithmetic (Q/DQ pairs, or integer kernels).
_QUANT_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
                        "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeLinear"})


def inspect_path(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise UserInputError(f"{path}: no such file or folder", hint="check the path")
    manifest = _manifest(path)
    info: dict[str, Any] = {"schema": INSPECT_SCHEMA, "path": str(path),
                            "kind": "artifact" if manifest is not None else "model"}
    try:
        info.update(describe_model(load_source(path).model))
    except UserInputError:
        if manifest is None:
            raise
        runner = load_artifact(path)  # not a graph a frontend reads: ask the artifact's runner
        info.update(inputs=_specs(runner.inputs), outputs=_specs(runner.outputs))
    if manifest is not None:
        info["manifest"] = manifest.to_json()
    return info


def _manifest(path: Path) -> Manifest | None:
    if not manifest_path(path).is_file():
        return None
    return target_for_artifact(path)[1]  # reads and validates it (JSON intact, target known)


def _specs(specs: list[TensorSpec]) -> list[dict]:
    return [s.to_json() for s in specs]


def describe_model(model: Model) -> dict[str, Any]:
    ops = model.op_histogram()
    by_dtype: Counter[str] = Counter()
    for constant in model.constants():
        by_dtype[constant.values.dtype.name] += int(constant.values.size)
    return {
        "inputs": _specs(model.inputs),
        "outputs": _specs(model.outputs),
        "opset": model.opset,
        "nodes": model.node_count,
        "ops": dict(ops.most_common()),
        "parameters": model.parameter_count,
        "precision": {"parameters_by_dtype": dict(by_dtype.most_common()),
                      "quantized_ops": sum(n for op, n in ops.items() if op in _QUANT_OPS)},
    }
