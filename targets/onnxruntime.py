"""ONNX Runtime target: an optimized ``.onnx`` (portable) or ``.ort`` (ORT format, pre-optimized).

The embedded default: onnxruntime is a core dependency, so this target works on any machine.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infer_compile.core.artifacts import StagedOutput
from infer_compile.core.capabilities import Capability
from infer_compile.core.manifest import Manifest, target_field
from infer_compile.core.options import Option
from infer_compile.targets.base import (
    Availability,
    Runner,
    Target,
    TargetRequest,
    Tuner,
    TuningCandidate,
    package_version,
    thread_counts,
)

if TYPE_CHECKING:  # onnxruntime, numpy and the IR are imported where they are used: a cache hit uses none
    import onnxruntime as ort

    from infer_compile.core.ir import Model, TensorSpec
    from infer_compile.core.numerics import Feeds

# Session settings applied when an artifact is loaded; autotuning may replace them in the manifest.
DEFAULT_SESSION = {"graph_optimization_level": "ORT_ENABLE_ALL", "execution_mode": "ORT_SEQUENTIAL",
                   "intra_op_num_threads": 0, "inter_op_num_threads": 0}
# The ORT format bakes in optimizations; "extended" stays valid on any x86/ARM CPU (layout
# transformations from "all" are specific to the build machine's CPU).
ORT_FORMAT_LEVEL = "ORT_ENABLE_EXTENDED"

_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
              "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int16)": "int16", "tensor(int8)": "int8",
              "tensor(uint64)": "uint64", "tensor(uint32)": "uint32", "tensor(uint16)": "uint16",
              "tensor(uint8)": "uint8", "tensor(bool)": "bool", "tensor(string)": "object"}


def session_options(settings: dict[str, Any]) -> ort.SessionOptions:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    merged = {**DEFAULT_SESSION, **settings}
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, merged["graph_optimization_level"])
    options.execution_mode = getattr(ort.ExecutionMode, merged["execution_mode"])
    options.intra_op_num_threads = int(merged["intra_op_num_threads"])
    options.inter_op_num_threads = int(merged["inter_op_num_threads"])
    return options


def _specs(args: list[Any]) -> list[TensorSpec]:
    """ORT's input/output descriptions; a sequence ('seq(tensor(float))') by its element type, without a shape."""
    import numpy as np

    from infer_compile.core.ir import TensorSpec

    return [TensorSpec(a.name, None, np.dtype(_ORT_TYPES.get(a.type[4:-1], "float32")), sequence=True)
            if a.type.startswith("seq(") else
            TensorSpec(a.name, tuple(d if isinstance(d, int) else (d or None) for d in a.shape),
                       np.dtype(_ORT_TYPES.get(a.type, "float32"))) for a in args]


SESSION_OPTIONS: Option[dict[str, Any] | None] = Option(
    "session_options", dict, None, "ONNX Runtime session settings the artifact loads with (intra_op_num_threads, "
    "inter_op_num_threads, execution_mode, graph_optimization_level); autotuning chooses them unless given.",
    cli=False)


class OrtRunner(Runner):
    def __init__(self, path: Path, settings: dict[str, Any]) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(path), session_options(settings),
                                            providers=["CPUExecutionProvider"])
        self.inputs = _specs(self.session.get_inputs())
        self.outputs = _specs(self.session.get_outputs())
        self._names = [o.name for o in self.outputs]

    def run(self, feeds: Feeds) -> Feeds:
        return dict(zip(self._names, self.session.run(self._names, feeds), strict=True))

    def close(self) -> None:
        self.session = None  # ORT frees the session (and its weights) with the last reference
        super().close()


class OrtTuner(Tuner):
    """Session settings to time (one factor at a time from the defaults) and INT8 layer selection:
    ORT runs every Q/DQ'd layer with its INT8 kernel whether or not that is faster here."""

    option_key = "session_options"
    per_layer_precision = True

    def candidates(self, model: Model) -> list[TuningCandidate]:
        threads = thread_counts()
        return [
            TuningCandidate("default", {}),
            *(TuningCandidate(f"intra_op_threads={n}", {"intra_op_num_threads": n}) for n in threads),
            TuningCandidate(f"parallel, inter_op_threads={threads[-1]}",
                            {"execution_mode": "ORT_PARALLEL", "inter_op_num_threads": threads[-1]}),
            TuningCandidate("opt_level=extended", {"graph_optimization_level": "ORT_ENABLE_EXTENDED"}),
            TuningCandidate("opt_level=basic", {"graph_optimization_level": "ORT_ENABLE_BASIC"}),
        ]

    def prepare(self, model: Model, settings: dict[str, Any]) -> Callable[[Feeds], object]:
        from infer_compile.core.numerics import open_session

        session = open_session(model, session_options(settings))
        return lambda feeds: session.run(None, feeds)


class OnnxRuntimeTarget(Target):
    name = "onnxruntime"
    aliases = ("ort", "onnx")
    suffix = ".onnx"
    other_suffixes = (".ort",)
    precisions = frozenset({"fp32", "fp16", "int8"})
    dynamic_shapes = True
    options = (SESSION_OPTIONS,)
    capabilities = frozenset({Capability.QDQ_PLACEMENT_QLINEAR, Capability.QDQ_ASYMMETRIC_ACTIVATIONS,
                              Capability.FUSED_CONV, Capability.FUSED_GEMM, Capability.GELU, Capability.FAST_GELU,
                              Capability.SKIP_LAYER_NORMALIZATION, Capability.MULTI_HEAD_ATTENTION,
                              Capability.MATMUL_INTEGER_TO_FLOAT})
    auto_rank = 0
    description = "Optimized ONNX (or .ort) for ONNX Runtime; runs anywhere."

    def availability(self) -> Availability:
        # Read from the package metadata, not the module: a cache hit builds nothing and imports no runtime.
        return Availability(True, f"onnxruntime {package_version('onnxruntime')} (CPUExecutionProvider)")

    def tool_versions(self) -> dict[str, str]:
        return {"onnxruntime": package_version("onnxruntime") or "unknown"}

    def tuner(self, request: TargetRequest) -> Tuner:
        return OrtTuner()

    def emit(self, model: Model, stage: StagedOutput, request: TargetRequest) -> dict[str, Any]:
        from infer_compile.core.ir import save_onnx

        settings = dict(request.options.get(OrtTuner.option_key, {}))
        if stage.artifact.suffix == ".ort":
            return self._emit_ort_format(model, stage, settings)
        files = save_onnx(model, stage.artifact)
        if len(files) > 1:  # external weights: the data file name is recorded inside the .onnx
            return {"format": "onnx", "session_options": settings, "external_data": files[1].name}
        return {"format": "onnx", "session_options": settings}

    def _emit_ort_format(self, model: Model, stage: StagedOutput, settings: dict[str, Any]) -> dict[str, Any]:
        import onnxruntime as ort

        from infer_compile.core.ir import save_onnx

        source = stage.sibling(".source.onnx")
        save_onnx(model, source)
        settings = {**settings, "graph_optimization_level": ORT_FORMAT_LEVEL}  # baked in: loaded with it too
        options = session_options(settings)
        options.optimized_model_filepath = str(stage.artifact)
        options.add_session_config_entry("session.save_model_format", "ORT")
        ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
        for leftover in stage.dir.glob(".source.onnx*"):
            leftover.unlink()
        return {"format": "ort", "session_options": settings}

    def load(self, artifact: Path, manifest: Manifest | None) -> Runner:
        return OrtRunner(artifact, target_field(manifest, "session_options", {}))
