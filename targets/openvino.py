"""OpenVINO target: IR (``.xml`` + ``.bin``) for the OpenVINO CPU plugin.

fp32 keeps fp32 weights; fp16 stores compressed (half) weights; int8 converts our Q/DQ graph, which
OpenVINO runs with real INT8 kernels (checked at build time from the runtime's execution graph).
The precision the CPU computes in is a runtime setting (``INFERENCE_PRECISION_HINT``; CPUs with
bf16 support default to bf16), so the manifest records the one intended and load() asks for it.
openvino is imported lazily: it is an optional extra.
"""

from __future__ import annotations

import functools
import io
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

from infer_compile.core.artifacts import StagedOutput
from infer_compile.core.capabilities import Capability
from infer_compile.core.errors import BuildWarning, UnsupportedError, one_line
from infer_compile.core.manifest import Manifest, target_field
from infer_compile.core.options import Option, read
from infer_compile.targets.base import (
    Availability,
    Runner,
    Target,
    TargetRequest,
    Tuner,
    TuningCandidate,
    cpu_identity,
    package_version,
    thread_counts,
)

if TYPE_CHECKING:  # numpy and the IR are imported where they are used (targets/base.py)
    from infer_compile.core.ir import Model, TensorSpec
    from infer_compile.core.numerics import Feeds

DEVICE = "CPU"
INSTALL_HINT = "pip install 'infer-compile[openvino]'"
PRECISION_HINT = "INFERENCE_PRECISION_HINT"
# Execution-graph layer types that do the heavy lifting; an INT8 build must run them in u8/i8.
COMPUTE_LAYERS = ("Convolution", "FullyConnected", "MatMul")
INT8_TYPES = ("u8", "i8")


# The CPU's capabilities as OpenVINO reports them (OPTIMIZATION_CAPABILITIES) decide the compute precision of
# every build; this variable replaces them (comma-separated, e.g. "FP32,INT8" for a CPU without bf16/f16), so
# tests run both sides of each decision on any CPU and a build can target a CPU other than this one.
CAPABILITIES_ENV = "INFER_COMPILE_OV_CPU_CAPABILITIES"


@functools.cache
def _core() -> Any:
    import openvino as ov

    return ov.Core()


def inference_precisions(precision: str, capabilities: set[str]) -> list[str]:
    """Compute precisions allowed for a build at ``precision``, the intended one first.

    fp32 computes in f32 only. bf16 in bf16 where the CPU has it (AVX512_BF16/AMX), else f32.
    fp16 computes in f16 where the CPU has it, else bf16, else f32.
    int8 runs the layers left in float at the CPU's fast float precision (bf16 where it has it).
    Anything more accurate than the intended one is allowed too (autotuning may pick it).
    """
    if precision == "fp32":
        return ["f32"]
    fast = [p for p, cap in (("f16", "FP16"), ("bf16", "BF16")) if cap in capabilities]
    if precision in ("int8", "bf16"):
        fast = [p for p in fast if p == "bf16"]
    return [*fast[:1], "f32"]


def cpu_capabilities() -> set[str]:
    """What the CPU can compute in (BF16, FP16, INT8, ...): $INFER_COMPILE_OV_CPU_CAPABILITIES, else OpenVINO's."""
    forced = os.environ.get(CAPABILITIES_ENV)
    if forced is not None:
        return {cap.strip().upper() for cap in forced.split(",") if cap.strip()}
    return set(_core().get_property(DEVICE, "OPTIMIZATION_CAPABILITIES"))


def runtime_precisions(compiled: Any) -> dict[str, dict[str, int]]:
    """Per compute layer type, how many layers of the compiled model run at each precision."""
    counts: dict[str, dict[str, int]] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        layer = info["layerType"].astype(str)
        if layer in COMPUTE_LAYERS:
            kind = info["runtimePrecision"].astype(str)
            counts.setdefault(layer, {}).setdefault(kind, 0)
            counts[layer][kind] += 1
    return counts


_OV_LOCATION = re.compile(r"^(Exception from|Check '.*' failed at) src/\S+:\d+:?$")


def _to_ov(model: Model) -> Any:
    import openvino as ov

    from infer_compile.core.ir import serialized

    try:
        return ov.convert_model(io.BytesIO(serialized(model)))
    except Exception as exc:  # OpenVINO's frontend refusing a graph is a limit of the target, not a crash
        raise UnsupportedError(f"OpenVINO cannot convert this model: {_ov_reason(exc)}",
                               hint="build for another target, e.g. --target onnxruntime") from exc


def _ov_reason(exc: Exception) -> str:
    """OpenVINO's message without the C++ source locations it puts on lines of their own."""
    lines = [line for line in str(exc).splitlines() if line.strip() and not _OV_LOCATION.match(line.strip())]
    return one_line(Exception("\n".join(lines)) if lines else exc)


def _spec(port: Any, names: set[str]) -> TensorSpec:
    import numpy as np

    from infer_compile.core.ir import TensorSpec

    known = sorted(port.get_names() & names)
    shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
    return TensorSpec(known[0] if known else port.get_any_name(), shape, np.dtype(port.get_element_type().to_dtype()))


class OvRunner(Runner):
    def __init__(self, compiled: Any, manifest: Manifest | None) -> None:
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        names = set() if manifest is None else {t["name"] for t in manifest.build.inputs + manifest.build.outputs}
        self.inputs = [_spec(p, names) for p in compiled.inputs]
        self.outputs = [_spec(p, names) for p in compiled.outputs]

    def run(self, feeds: Feeds) -> Feeds:
        import numpy as np

        result = self.request.infer({spec.name: feeds[spec.name] for spec in self.inputs})
        return {spec.name: np.array(result[port]) for spec, port in zip(self.outputs, self.compiled.outputs,
                                                                         strict=True)}

    def close(self) -> None:
        self.request = self.compiled = None  # the compiled model's memory goes with the last reference
        super().close()


class OvTuner(Tuner):
    """Performance hint, streams, threads and (where the build allows more than one) compute precision."""

    option_key = "ov_config"

    def __init__(self, precisions: list[str]) -> None:
        self.precisions = precisions
        self._converted: tuple[Model, Any] | None = None

    def candidates(self, model: Model) -> list[TuningCandidate]:
        threads = thread_counts()
        return [
            TuningCandidate("latency (default)", {"PERFORMANCE_HINT": "LATENCY"}),
            TuningCandidate("throughput", {"PERFORMANCE_HINT": "THROUGHPUT"}),
            *(TuningCandidate(f"latency, threads={n}", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": n})
              for n in threads),
            *(TuningCandidate(f"streams={n}", {"NUM_STREAMS": n}) for n in threads if n > 1),
            *(TuningCandidate(f"latency, precision={p}", {"PERFORMANCE_HINT": "LATENCY", PRECISION_HINT: p})
              for p in self.precisions[1:]),
        ]

    def prepare(self, model: Model, settings: dict[str, Any]) -> Callable[[Feeds], object]:
        if self._converted is None or self._converted[0] is not model:
            self._converted = (model, _to_ov(model))
        compiled = _core().compile_model(self._converted[1], DEVICE,
                                         {PRECISION_HINT: self.precisions[0], **settings})
        request = compiled.create_infer_request()
        return request.infer


EXPORT_BLOB = Option("export_blob", bool, False, "OpenVINO: also export a compiled blob for this CPU (zero-compile "
                     "start-up).", flag="--ov-export-blob")
OV_CONFIG: Option[dict[str, Any] | None] = Option(
    "ov_config", dict, None, "OpenVINO compile settings the artifact loads with (e.g. PERFORMANCE_HINT, "
    "INFERENCE_NUM_THREADS); autotuning chooses them unless given.", cli=False)


class OpenVinoTarget(Target):
    name = "openvino"
    aliases = ("ov",)
    suffix = ".xml"
    conversion = "OpenVINO model conversion"
    precisions = frozenset({"fp32", "bf16", "fp16", "int8"})
    dynamic_shapes = True
    options = (EXPORT_BLOB, OV_CONFIG)
    capabilities = frozenset({Capability.QDQ_PLACEMENT_LPT})  # INT8 Q/DQ as NNCF places it: LPT keeps Adds/pools int8
    # Not above onnxruntime: OpenVINO is an optional extra, and being installed on the build machine says
    # nothing about the machine that runs the artifact; `auto` keeps emitting what the core install runs
    # (bench/openvino_int8.py shows what --target openvino gains on this CPU).
    auto_rank = 0
    description = "OpenVINO IR (.xml + .bin) for Intel/AMD CPUs; INT8 from Q/DQ, compiled blob optional."

    def availability(self) -> Availability:
        try:
            import openvino as ov
        except ImportError as exc:
            return Availability(False, f"openvino is not installed ({exc}); {INSTALL_HINT}")
        try:
            devices = _core().available_devices
            name = _core().get_property(DEVICE, "FULL_DEVICE_NAME") if DEVICE in devices else ""
        except Exception as exc:  # the runtime failing to start is a reason, not a crash
            return Availability(False, f"openvino {ov.__version__} cannot start its CPU plugin: {exc}")
        version = package_version("openvino") or ov.__version__
        if DEVICE not in devices:
            return Availability(False, f"openvino {version} sees no CPU device (devices: {devices})")
        return Availability(True, f"openvino {version}, CPU: {name}")

    def tool_versions(self) -> dict[str, str]:
        # From the package metadata, as availability() shows it: the cache key of a hit imports no runtime.
        return {"openvino": package_version("openvino") or "unknown"}

    def hardware_identity(self) -> dict[str, str]:
        # The inference precision follows the CPU's bf16/fp16 support (or the variable forcing it).
        return {**cpu_identity(), "forced_capabilities": os.environ.get(CAPABILITIES_ENV, "")}

    def _precisions(self, request: TargetRequest) -> list[str]:
        return inference_precisions(request.precision, cpu_capabilities())

    def tuner(self, request: TargetRequest) -> Tuner:
        return OvTuner(self._precisions(request))

    def emit(self, model: Model, stage: StagedOutput, request: TargetRequest) -> dict[str, Any]:
        import openvino as ov

        self._compiled = None

        if request.precision == "int8" and not any(n.op == "DequantizeLinear" for n in model.graph.nodes):
            raise UnsupportedError("an OpenVINO INT8 build needs a quantized (Q/DQ) graph, and this one has no "
                                   "DequantizeLinear (was quantize-int8 skipped?)",
                                   hint="build without --skip-pass quantize-int8, or build --bf16, --fp16 or fp32")
        ov.save_model(_to_ov(model), str(stage.artifact), compress_to_fp16=request.precision == "fp16")
        config = dict(request.options.get(OvTuner.option_key, {}))
        precision = config.pop(PRECISION_HINT, self._precisions(request)[0])
        if request.precision == "bf16" and precision != "bf16":
            warnings.warn("bf16: this CPU has no bf16 support (AVX512_BF16 or AMX), so the artifact computes in "
                          "f32 here (the manifest says so); build on the CPU that will run it", BuildWarning,
                          stacklevel=2)
        own: dict[str, Any] = {"format": "openvino-ir", "weights": stage.artifact.with_suffix(".bin").name,
                               "device": DEVICE, "inference_precision": precision, OvTuner.option_key: config}
        export_blob = read(request.options, EXPORT_BLOB)
        if request.precision != "int8" and not export_blob:
            return own
        # Compile the IR as written, as load() will: the execution graph is the truth about INT8.
        compiled = _core().compile_model(str(stage.artifact), DEVICE, {**config, PRECISION_HINT: precision})
        if request.precision == "int8":
            own["kernels"] = self._check_int8(compiled)
        if export_blob:
            own["compiled_blob"] = self._export_blob(compiled, stage)  # the final check loads the blob, as users do
        else:
            self._compiled = (stage.artifact, compiled)  # what load() would compile again (seconds for a big model)
        return own

    _compiled: tuple[Path, Any] | None = None  # the last artifact emit compiled, for the final check

    def check_runner(self, artifact: Path, manifest: Manifest) -> Runner:
        compiled, self._compiled = self._compiled, None
        if compiled is not None and compiled[0] == artifact:  # the same files and runtime config as load()'s
            return OvRunner(compiled[1], manifest)
        return self.load(artifact, manifest)

    def _check_int8(self, compiled: Any) -> dict[str, dict[str, int]]:
        kernels = runtime_precisions(compiled)
        if kernels and not any(k in INT8_TYPES for per_type in kernels.values() for k in per_type):
            raise UnsupportedError(f"OpenVINO runs none of this model's compute layers in INT8 ({kernels})",
                                   hint="check the Q/DQ placement of the INT8 pass, or build --fp16")
        return kernels

    def _export_blob(self, compiled: Any, stage: StagedOutput) -> dict[str, Any]:
        import openvino as ov

        blob = stage.sibling(stage.artifact.stem + ".blob")
        blob.write_bytes(compiled.export_model().getvalue())
        return {"file": blob.name, "device": DEVICE, "device_name": _core().get_property(DEVICE, "FULL_DEVICE_NAME"),
                "openvino": ov.__version__}

    def _blob_valid_here(self, blob: dict[str, Any] | None, artifact: Path) -> TypeGuard[dict[str, Any]]:
        import openvino as ov

        return (blob is not None and (artifact.parent / blob["file"]).is_file()
                and blob.get("openvino") == ov.__version__
                and blob.get("device_name") == _core().get_property(DEVICE, "FULL_DEVICE_NAME"))

    def check_precision(self, manifest: Manifest) -> str:
        # The CPU computes in the manifest's inference precision (load() asks for it), e.g. bf16 for --fp16
        # where the CPU has bf16 but no f16: judge by that precision's tolerance, never a looser one.
        computes_in = {"f16": "fp16", "bf16": "bf16"}.get(target_field(manifest, "inference_precision", "f32"))
        return computes_in if computes_in and manifest.precision != "int8" else manifest.precision

    def load(self, artifact: Path, manifest: Manifest | None) -> Runner:
        blob = target_field(manifest, "compiled_blob")
        config = {**target_field(manifest, OvTuner.option_key, {}),
                  PRECISION_HINT: target_field(manifest, "inference_precision", "f32")}
        if self._blob_valid_here(blob, artifact):
            # Zero-compile start-up: the blob holds the kernels compiled for this CPU. It does not carry the
            # runtime config: without it, an import runs at the CPU's default precision (bf16 where it has it).
            compiled = _core().import_model((artifact.parent / blob["file"]).read_bytes(), DEVICE, config)
        else:
            compiled = _core().compile_model(str(artifact), DEVICE, config)
        return OvRunner(compiled, manifest)
