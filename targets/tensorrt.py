"""TensorRT target: a serialized engine (``.engine``) built from the optimized ONNX on this machine's GPU.

The optimized graph carries its precision (Q/DQ nodes for INT8, float16 casts), so the network is
parsed with ``trt.OnnxParser`` and built strongly typed; ``tensorrt_settings`` decides everything
else without TensorRT. Engines are specific to the TensorRT version and GPU they were built with:
the manifest records both and loading checks them. Machines without a GPU (CI) write a bundle with
``--defer`` instead (``tensorrt_bundle``). ``tensorrt`` is imported only when a build or load needs it.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infer_compile.core.artifacts import StagedOutput, atomic_write_bytes
from infer_compile.core.errors import TargetUnavailableError, UnsupportedError, UserInputError
from infer_compile.core.manifest import Manifest, target_field
from infer_compile.targets.base import Availability, Runner, Target, TargetRequest
from infer_compile.targets.tensorrt_settings import (
    ALWAYS_STRONGLY_TYPED,
    HARDWARE_COMPAT,
    OPTIONS,
    BuilderSettings,
    BuildPlatform,
    check_build_platform,
    derive_settings,
    settings_from_options,
    version_tuple,
)

if TYPE_CHECKING:  # annotations only: tensorrt and the IR are imported where a build or load needs them
    import tensorrt as trt

    from infer_compile.core.ir import Model

log = logging.getLogger(__name__)

# request.options keys from finalize: finished BuilderSettings JSON (it builds exactly what the bundle says),
# and a timing cache to start from that is read, never written (the bundle's own).
PRESET_SETTINGS = "builder_settings"
CACHE_SEED = "timing_cache_seed"
INSTALL_HINT = "pip install 'infer-compile[tensorrt]'"
_CUDA_DRIVER_LIBRARIES = ("libcuda.so.1", "libcuda.so", "nvcuda.dll")
# cuDeviceGetAttribute ids (CUdevice_attribute in cuda.h).
_CC_MAJOR, _CC_MINOR = 75, 76


@dataclass(frozen=True)
class Gpu:
    name: str
    compute_capability: str  # "8.6"
    driver: str  # CUDA version the driver supports, "12.4"


@functools.cache
def probe_gpu() -> Gpu | str:
    """The first visible CUDA GPU, asked of the driver library itself (no CUDA toolkit), or why there is none."""
    for library in _CUDA_DRIVER_LIBRARIES:
        try:
            cuda = ctypes.CDLL(library)
            break
        except OSError:
            continue
    else:
        return "no NVIDIA driver (libcuda not found)"
    try:
        count, device, major, minor, driver = (ctypes.c_int() for _ in range(5))
        if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
            return "the NVIDIA driver sees no usable GPU"
        name = ctypes.create_string_buffer(256)
        cuda.cuDeviceGet(ctypes.byref(device), 0)
        cuda.cuDeviceGetName(name, len(name), device)
        cuda.cuDeviceGetAttribute(ctypes.byref(major), _CC_MAJOR, device)
        cuda.cuDeviceGetAttribute(ctypes.byref(minor), _CC_MINOR, device)
        cuda.cuDriverGetVersion(ctypes.byref(driver))
    except (AttributeError, OSError) as exc:
        return f"the NVIDIA driver could not be queried ({exc})"
    return Gpu(name.value.decode(errors="replace"), f"{major.value}.{minor.value}",
               f"{driver.value // 1000}.{driver.value % 1000 // 10}")


@functools.cache
def tensorrt_version() -> str | None:
    """The installed TensorRT Python package's version; None when it is absent or cannot load its libraries."""
    try:
        import tensorrt
    except Exception:  # ImportError, or OSError from the wheel's missing shared libraries
        return None
    return str(tensorrt.__version__)


@functools.cache
def trt_logger() -> trt.Logger:
    """The one TensorRT logger of this process (TensorRT keeps a pointer to it in every builder and runtime)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    # Register TensorRT's own plugins once, as Polygraphy does before parsing and before deserializing:
    # the ONNX parser maps some ops to them and engines that use them do not load without.
    trt.init_libnvinfer_plugins(logger, "")
    return logger


def this_platform() -> BuildPlatform:
    """TensorRT and GPU here; call only when the target is available."""
    gpu = probe_gpu()
    version = tensorrt_version()
    if isinstance(gpu, str) or version is None:
        raise TargetUnavailableError(f"TensorRT cannot run here: {TensorRtTarget().availability().detail}")
    return BuildPlatform(version, gpu.name, gpu.compute_capability)


def apply_settings(builder: trt.Builder, config: trt.IBuilderConfig, settings: BuilderSettings) -> None:
    """Configure a real ``trt.IBuilderConfig`` from ``settings`` (everything except the timing cache)."""
    import tensorrt as trt

    if settings.workspace_mib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mib << 20)
    config.builder_optimization_level = settings.opt_level
    if not settings.tf32:
        config.clear_flag(trt.BuilderFlag.TF32)  # on by default in TensorRT
    if settings.version_compat:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel,
                                                  HARDWARE_COMPAT[settings.hardware_compat].member)
    if settings.profiles:
        profile = builder.create_optimization_profile()
        for p in settings.profiles:
            profile.set_shape(p.name, trt.Dims(list(p.min)), trt.Dims(list(p.opt)), trt.Dims(list(p.max)))
        config.add_optimization_profile(profile)


def attach_timing_cache(config: trt.IBuilderConfig, serialized: bytes | None, source: str) -> trt.ITimingCache:
    """Give the builder the persisted timing cache; one from another TensorRT/GPU is dropped with a warning."""
    if serialized:
        try:
            cache = config.create_timing_cache(serialized)
            # ignore_mismatch=False: TensorRT refuses (returns False) a cache recorded on another device.
            if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
                return cache
        except Exception as exc:  # a truncated or foreign file: TensorRT raises instead of returning False
            log.debug("timing cache rejected: %s", exc)
        log.warning("timing cache %s does not fit this TensorRT version or GPU; starting a new one", source)
    cache = config.create_timing_cache(b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    return cache


def build_plan(onnx_path: Path, settings: BuilderSettings, cache_seed: Path | None = None) -> bytes:
    """Parse ``onnx_path`` into a strongly typed network and build the serialized engine.

    The timing cache is read from ``settings.timing_cache`` (else from ``cache_seed``) and written back to
    ``settings.timing_cache``.
    """
    import tensorrt as trt

    logger = trt_logger()
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags())
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        raise _parser_error(parser)
    config = builder.create_builder_config()
    apply_settings(builder, config, settings)
    cache_path = Path(settings.timing_cache) if settings.timing_cache else None
    source = next((p for p in (cache_path, cache_seed) if p is not None and p.is_file()), None)
    cache = attach_timing_cache(config, source.read_bytes() if source else None, str(source))
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise UnsupportedError("TensorRT could not build the engine (its log above says why)",
                               hint="try --trt-workspace with more memory, or --debug for details")
    if cache_path is not None:
        _save_timing_cache(cache_path, bytes(cache.serialize()))
    return bytes(plan)


def network_flags() -> int:
    """STRONGLY_TYPED on TensorRT 10 (EXPLICIT_BATCH is implied there, its flag deprecated); nothing on 11+,
    where every network is strongly typed and the flag is deprecated and ignored."""
    import tensorrt as trt

    if version_tuple(trt.__version__)[0] >= ALWAYS_STRONGLY_TYPED:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def _save_timing_cache(path: Path, data: bytes) -> None:
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:  # a read-only shared cache must not fail the build
        log.warning("timing cache not saved to %s: %s", path, exc)


def _parser_error(parser: trt.OnnxParser) -> UnsupportedError:
    errors = [parser.get_error(i) for i in range(parser.num_errors)]
    if not errors:
        return UnsupportedError("TensorRT's ONNX parser rejected the model without saying why",
                                hint="rerun with --debug and read the TensorRT log")
    first = errors[0]
    where = f"node '{first.node_name()}' ({first.node_operator()})" if first.node_name() else "the graph"
    more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
    return UnsupportedError(f"TensorRT's ONNX parser rejected {where}: {first.desc()}{more}",
                            hint="leave the pass that produced it out with --skip-pass, or use another target")


class TensorRtTarget(Target):
    name = "trt"
    aliases = ("tensorrt",)
    suffix = ".engine"
    conversion = "TensorRT engine build"
    precisions = frozenset({"fp32", "fp16", "int8"})
    dynamic_shapes = True
    options = OPTIONS
    auto_rank = 30
    builds_here = True  # False for the --defer bundle, built on another machine
    description = "TensorRT engine for this machine's NVIDIA GPU; --defer writes a bundle to build elsewhere."

    def availability(self) -> Availability:
        version = tensorrt_version()
        gpu = probe_gpu()
        missing = [f"the tensorrt package is not installed ({INSTALL_HINT})"] if version is None else []
        if isinstance(gpu, str):
            missing.append(gpu)
        if version is None or isinstance(gpu, str):
            return Availability(False, "; ".join(missing))
        return Availability(True, f"TensorRT {version} on {gpu.name} (sm {gpu.compute_capability}, "
                                  f"CUDA driver {gpu.driver})")

    def require_available(self) -> None:
        status = self.availability()
        if not status.available:
            raise TargetUnavailableError(
                f"target 'trt' is not available here: {status.detail}",
                hint="run on a machine with an NVIDIA GPU, or add --defer to write a bundle that "
                     "'infer-compile finalize' builds there")

    def tool_versions(self) -> dict[str, str]:
        version = tensorrt_version()
        return {"tensorrt": version} if version else {}

    def hardware_identity(self) -> dict[str, str]:
        gpu = probe_gpu()
        return {} if isinstance(gpu, str) else {"gpu": gpu.name, "compute_capability": gpu.compute_capability}

    def check_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Also the option values and, where TensorRT can build (the build checks that later, after the cache),
        whether this TensorRT and GPU can build them, before the pipeline runs."""
        checked = super().check_options(options)
        settings = settings_from_options("fp32", checked)
        if self.builds_here and self.availability().available:
            check_build_platform(settings, this_platform())
        return checked

    def deferred(self) -> Target:
        from infer_compile.targets.tensorrt_bundle import TensorRtBundleTarget

        return TensorRtBundleTarget()

    def settings(self, model: Model, request: TargetRequest) -> BuilderSettings:
        preset = request.options.get(PRESET_SETTINGS)
        if preset is not None:
            return BuilderSettings.from_json(preset)
        settings = derive_settings(model, request.precision, request.shape_ranges, request.options)
        for note in settings.notes:
            log.warning("warning: %s", note)
        return settings

    def emit(self, model: Model, stage: StagedOutput, request: TargetRequest) -> dict[str, Any]:
        from infer_compile.core.ir import save_onnx

        settings = self.settings(model, request)
        platform = this_platform()
        check_build_platform(settings, platform)
        with tempfile.TemporaryDirectory(prefix="infer-compile-trt-") as tmp:
            onnx_path = Path(tmp) / "model.onnx"
            save_onnx(model, onnx_path)
            seed = request.options.get(CACHE_SEED)
            stage.artifact.write_bytes(build_plan(onnx_path, settings, None if seed is None else Path(seed)))
        return {"format": "engine", "builder_settings": settings.to_json(),
                "tensorrt": {"version": platform.tensorrt, "gpu": platform.gpu,
                             "compute_capability": platform.compute_capability}}

    def load(self, artifact: Path, manifest: Manifest | None) -> Runner:
        if target_field(manifest, "format") == "trtbundle":
            raise UserInputError(f"{artifact} is a deferred TensorRT build bundle, not an engine",
                                 hint=f"build the engine from it here: infer-compile finalize {artifact}")
        from infer_compile.targets.tensorrt_runner import TrtRunner

        return TrtRunner(artifact, manifest)
