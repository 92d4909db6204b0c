"""A Triton Inference Server model repository from an artifact: ``REPO/NAME/VERSION/model.*`` + ``config.pbtxt``.

Every fact Triton's model config needs is in the manifest: the backend from the target, inputs and outputs
(names, dtypes, dims), the batch dimension and its shape range, and the runtime settings autotune chose.
The config is protobuf text written by hand (no Triton dependency); its first line marks it as ours, so a
config.pbtxt someone else wrote is never replaced.

Writes are atomic and additive: a version is staged in a hidden folder inside ``REPO/NAME`` and renamed into
place (an existing version is never overwritten), and config.pbtxt is replaced in one rename. Nothing else
in the repository is touched.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infer_compile.core.artifacts import atomic_write_text
from infer_compile.core.errors import UserInputError
from infer_compile.core.manifest import Manifest, read_manifest

CONFIG_NAME = "config.pbtxt"
MARKER = "# written by infer-compile (`infer-compile triton`); edits are lost when it writes this model again"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

# numpy dtype name -> Triton data_type (model_config.proto's DataType).
_TRITON_TYPES = {
    "bool": "TYPE_BOOL", "uint8": "TYPE_UINT8", "uint16": "TYPE_UINT16", "uint32": "TYPE_UINT32",
    "uint64": "TYPE_UINT64", "int8": "TYPE_INT8", "int16": "TYPE_INT16", "int32": "TYPE_INT32", "int64": "TYPE_INT64",
    "float16": "TYPE_FP16", "float32": "TYPE_FP32", "float64": "TYPE_FP64", "bfloat16": "TYPE_BF16",
    "object": "TYPE_STRING",
}
# ORT session setting -> onnxruntime_backend model-config parameter (its README, "Model Config Options":
# intra_op_thread_count, inter_op_thread_count, execution_mode 0 sequential / 1 parallel).
_ORT_PARAMETERS = {"intra_op_num_threads": "intra_op_thread_count", "inter_op_num_threads": "inter_op_thread_count"}
_ORT_EXECUTION_MODES = {"ORT_SEQUENTIAL": "0", "ORT_PARALLEL": "1"}
# onnxruntime_backend's `optimization { graph { level } }`: -1 basic, 1 extended; absent = all (the default).
_ORT_GRAPH_LEVELS = {"ORT_ENABLE_BASIC": -1, "ORT_ENABLE_EXTENDED": 1}
# OpenVINO compile settings openvino_backend takes as parameters (its README, "Parameters": PERFORMANCE_HINT,
# INFERENCE_NUM_THREADS, NUM_STREAMS; HINT_BF16 YES for bf16). It has no f32 precision hint: on a CPU with bf16
# the server computes an fp32 IR in bf16 (OpenVINO's default), which the README's serving section says.
_OV_PARAMETERS = ("PERFORMANCE_HINT", "INFERENCE_NUM_THREADS", "NUM_STREAMS")


@dataclass(frozen=True)
class Serving:
    """How Triton serves one target's artifacts: the config's platform/backend line, the file names in a
    version folder (the artifact's main file first), and the instance kind."""

    backend_line: str
    files: tuple[str, ...]
    kind: str


def serving_for(target: str, fmt: str | None = None) -> Serving:
    """How Triton serves what ``target`` writes in format ``fmt`` (the manifest's ``format``, "trtbundle" for
    --defer); refuses what Triton cannot serve."""
    if target == "trt" and fmt == "trtbundle":
        raise UserInputError("a deferred TensorRT bundle holds no engine for Triton to serve",
                             hint="build the engine first (infer-compile finalize BUNDLE), then serve the .engine")
    if target == "trt":
        return Serving('platform: "tensorrt_plan"', ("model.plan",), "KIND_GPU")
    if target == "onnxruntime" and fmt == "ort":
        raise UserInputError("Triton's onnxruntime backend loads model.onnx, not the .ort format",
                             hint="build with an .onnx output (-o model.onnx) to serve it with Triton")
    if target == "onnxruntime":
        return Serving('platform: "onnxruntime_onnx"', ("model.onnx",), "KIND_CPU")
    if target == "openvino":
        return Serving('backend: "openvino"', ("model.xml", "model.bin"), "KIND_CPU")
    raise UserInputError(f"Triton has no standard backend for {target} artifacts",
                         hint="build for onnxruntime, openvino or trt to serve the model with Triton")


def _serving(manifest: Manifest) -> Serving:
    return serving_for(manifest.target, manifest.target_fields.get("format"))


def batch_dim(manifest: Manifest) -> str | None:
    """The dynamic dimension every input and output starts with, when they all share one and its range is known
    (Triton then batches: max_batch_size > 0 and dims leave it out); else None."""
    tensors = manifest.build.inputs + manifest.build.outputs
    firsts = {t["shape"][0] if t.get("shape") else None for t in tensors}
    dim = firsts.pop() if len(firsts) == 1 else None
    return dim if isinstance(dim, str) and dim in manifest.build.shape_ranges else None


def _dims(tensor: dict[str, Any], batched: bool) -> str:
    shape = tensor.get("shape")
    if shape is None or tensor.get("sequence"):
        raise UserInputError(f"tensor '{tensor['name']}' has no fixed rank, which Triton's config needs",
                             hint="export the model with a known rank for every input and output")
    dims = [d if isinstance(d, int) and d >= 0 else -1 for d in shape[1 if batched else 0:]]
    return "[ " + ", ".join(map(str, dims)) + " ]" if dims else "[ ]"


def _tensor_block(kind: str, tensors: list[dict[str, Any]], batched: bool) -> list[str]:
    entries = []
    for t in tensors:
        data_type = _TRITON_TYPES.get(t["dtype"])
        if data_type is None:
            raise UserInputError(f"tensor '{t['name']}' is {t['dtype']}, a type Triton's config cannot name",
                                 hint="build a model whose inputs and outputs are numeric, bool or string")
        entries.append(f"  {{\n    name: {_quoted(t['name'])}\n    data_type: {data_type}\n"
                       f"    dims: {_dims(t, batched)}\n  }}")
    return [f"{kind} [", ",\n".join(entries), "]"]


def interface_text(manifest: Manifest, serving: Serving) -> str:
    """The part of config.pbtxt every version of the model must share: backend, batching and I/O."""
    dim = batch_dim(manifest)
    max_batch = manifest.build.shape_ranges[dim].max if dim else 0
    lines = [serving.backend_line, f"max_batch_size: {max_batch}",
             *_tensor_block("input", manifest.build.inputs, dim is not None),
             *_tensor_block("output", manifest.build.outputs, dim is not None)]
    return "\n".join(lines) + "\n"


def _quoted(text: str) -> str:
    """A protobuf-text string literal (JSON's escapes \\" \\\\ \\n are protobuf's too)."""
    return json.dumps(text, ensure_ascii=False)


def _parameters(settings: dict[str, str]) -> list[str]:
    return [f"parameters {{ key: {_quoted(key)} value: {{ string_value: {_quoted(value)} }} }}"
            for key, value in settings.items()]


def runtime_text(manifest: Manifest) -> str:
    """The runtime settings the build chose (autotune or given), as the backend's own config entries."""
    fields = manifest.target_fields
    lines: list[str] = []
    if manifest.target == "onnxruntime":
        session = fields.get("session_options", {})
        params = {_ORT_PARAMETERS[k]: str(v) for k, v in session.items() if k in _ORT_PARAMETERS and v}
        if session.get("execution_mode") in _ORT_EXECUTION_MODES:
            params["execution_mode"] = _ORT_EXECUTION_MODES[session["execution_mode"]]
        if (level := _ORT_GRAPH_LEVELS.get(session.get("graph_optimization_level", ""))) is not None:
            lines.append(f"optimization {{ graph {{ level: {level} }} }}")
        lines += _parameters(params)
    elif manifest.target == "openvino":
        config = fields.get("ov_config", {})
        params = {key: str(config[key]) for key in _OV_PARAMETERS if key in config}
        if fields.get("inference_precision") == "bf16":
            params["HINT_BF16"] = "YES"
        lines += _parameters(params)
    return "".join(line + "\n" for line in lines)


def config_text(manifest: Manifest, name: str) -> str:
    """The whole config.pbtxt for ``manifest``'s artifact served as model ``name``."""
    serving = _serving(manifest)
    dim = batch_dim(manifest)
    batching = ""
    if dim:
        shape_range = manifest.build.shape_ranges[dim]
        preferred = sorted({shape_range.opt, shape_range.max})
        batching = f"dynamic_batching {{\n  preferred_batch_size: [ {', '.join(map(str, preferred))} ]\n}}\n"
    return (f"{MARKER}\nname: {_quoted(name)}\n{interface_text(manifest, serving)}"
            f"instance_group [ {{ kind: {serving.kind} }} ]\n{batching}{runtime_text(manifest)}")


def default_name(artifact: Path) -> str:
    """The model name when none is given: the artifact's file name without its suffixes, Triton-safe."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", artifact.name.split(".")[0]) or "model"


def existing_versions(model_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()) \
        if model_dir.is_dir() else []


def _check_config(config: Path, interface: str, name: str) -> None:
    """An existing config.pbtxt may be replaced only when we wrote it for a model of the same interface."""
    if not config.exists():
        return
    text = config.read_text(errors="replace")
    if not text.startswith(MARKER):
        raise UserInputError(f"{config} was not written by infer-compile; it is left as it is",
                             hint="give the model another name (--name / --triton-name), or move that file away")
    if interface not in text:
        raise UserInputError(f"{config}: model '{name}' has other inputs, outputs or backend than this artifact",
                             hint="serve this artifact under another name (--name / --triton-name)")


def write_model(artifact: Path, repo: Path, name: str | None = None, version: int | None = None) -> Path:
    """Put ``artifact`` into Triton repository ``repo`` as model ``name``, version ``version`` (default: the
    highest there + 1); returns the version folder. UserInputError for anything Triton cannot serve or that
    would replace files."""
    manifest = read_manifest(artifact)
    if manifest is None or manifest.artifact is None:
        raise UserInputError(f"{artifact}: no infer-compile manifest beside it; Triton's config is made from it",
                             hint="keep the .manifest.json that infer-compile wrote next to the artifact")
    name = name or default_name(artifact)
    if not _NAME.match(name):
        raise UserInputError(f"model name '{name}' is not a folder name Triton accepts",
                             hint="use letters, digits, '_', '-' and '.'")
    if version is not None and version < 1:
        raise UserInputError(f"version {version}: Triton versions are positive integers", hint="give 1 or more")
    serving = _serving(manifest)
    text = config_text(manifest, name)
    model_dir = repo / name
    config = model_dir / CONFIG_NAME
    _check_config(config, interface_text(manifest, serving), name)
    versions = existing_versions(model_dir)
    version = version or (versions[-1] + 1 if versions else 1)
    final = model_dir / str(version)
    if final.exists():
        raise UserInputError(f"{final} exists; a version is never overwritten",
                             hint=f"omit --version for the next one ({versions[-1] + 1}), or pass another "
                                  "--version / --triton-version")
    sources = [artifact, *_companions(artifact, manifest, serving)]
    try:
        _commit_version(sources, serving, model_dir, final)
        atomic_write_text(config, text)
    except OSError as exc:
        raise UserInputError(f"cannot write into {model_dir}: {exc.strerror or exc}",
                             hint="check the repository path and its permissions") from None
    return final


def _commit_version(sources: list[Path], serving: Serving, model_dir: Path, final: Path) -> None:
    """Copy the artifact's files into a hidden staging folder of ``model_dir`` and rename it to ``final``."""
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".infer-compile-", dir=model_dir))
    try:
        for source, target_name in zip(sources, serving.files, strict=False):
            shutil.copy2(source, staging / target_name)
        for extra in sources[len(serving.files):]:  # external ONNX weights: the .onnx names them by file name
            shutil.copy2(extra, staging / extra.name)
        os.chmod(staging, 0o755)  # mkdtemp makes it 0700; the server may run as another user
        if final.exists():  # a concurrent writer took this version meanwhile
            raise UserInputError(f"{final} appeared while writing", hint="run again for the next version")
        staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _companions(artifact: Path, manifest: Manifest, serving: Serving) -> list[Path]:
    """The artifact's other files a Triton version needs: OpenVINO's weights, ONNX external data."""
    fields = manifest.target_fields
    names = [fields["weights"]] if serving.files[-1] == "model.bin" else \
        [fields["external_data"]] if fields.get("external_data") else []
    missing = [n for n in names if not (artifact.parent / n).is_file()]
    if missing:
        raise UserInputError(f"{artifact}: its file {missing[0]} is missing", hint="rebuild the artifact")
    return [artifact.parent / n for n in names]
