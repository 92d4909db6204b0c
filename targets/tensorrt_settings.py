"""What a TensorRT build will do, decided without TensorRT: the seam between options and the builder.

``derive_settings`` turns the optimized model and the user's request into a plain ``BuilderSettings``
(optimization profile, workspace, optimization level, compatibility, timing cache). Everything here
is pure Python, so it is tested on machines without a GPU, written into deferred-build bundles, and
rendered as the equivalent ``trtexec`` command line. ``infer_compile.targets.tensorrt`` applies the
settings to a real builder config.

Precision is not a builder flag: TensorRT 10 deprecated and TensorRT 11 removed the FP16/INT8 flags
and implicit calibration. Our passes write precision into the graph (Q/DQ nodes, float16 casts) and
every network is built strongly typed, so TensorRT runs each tensor in the type the graph gives it.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from infer_compile.errors import TargetUnavailableError, UnsupportedError, UserInputError
from infer_compile.ir import Model, TensorSpec

# TensorRT's own default builder optimization level, and the highest it accepts.
DEFAULT_OPT_LEVEL = 3
MAX_OPT_LEVEL = 5
# --trt-hardware-compat values -> (trt.HardwareCompatibilityLevel member, trtexec spelling).
HARDWARE_COMPAT = {
    "none": ("NONE", "none"),
    "ampere+": ("AMPERE_PLUS", "ampere+"),
    "same-cc": ("SAME_COMPUTE_CAPABILITY", "sameComputeCapability"),  # TensorRT >= 10.9
}
# Ampere is compute capability 8.0; "ampere+" engines run on it and every later GPU.
AMPERE = (8, 0)
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


@dataclass(frozen=True)
class InputProfile:
    """The shapes one dynamic input may take at run time (an optimization profile entry)."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


@dataclass(frozen=True)
class BuilderSettings:
    """Everything the TensorRT builder is told, as plain data (JSON in manifests and bundles)."""

    precision: str
    profiles: tuple[InputProfile, ...] = ()
    # TF32 rounds fp32 matmul inputs to 10-bit mantissas: allowed only when reduced precision was asked for.
    tf32: bool = False
    workspace_mib: int | None = None  # None: TensorRT's default (all device memory)
    opt_level: int = DEFAULT_OPT_LEVEL
    hardware_compat: str = "none"
    version_compat: bool = False
    timing_cache: str | None = None  # path read before and written after the build
    notes: tuple[str, ...] = ()  # defaults the derivation had to choose; shown as warnings

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BuilderSettings:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown or "precision" not in data:
            raise UserInputError(f"builder settings are not readable (unknown keys: {', '.join(sorted(unknown)) or '-'}"
                                 f"{'' if 'precision' in data else '; no precision'})",
                                 hint="the bundle was written by another infer-compile version; write it again")
        profiles = tuple(InputProfile(p["name"], tuple(p["min"]), tuple(p["opt"]), tuple(p["max"]))
                         for p in data.get("profiles", ()))
        return cls(**{**data, "profiles": profiles, "notes": tuple(data.get("notes", ()))})


def derive_settings(model: Model, precision: str, shape_ranges: Mapping[str, tuple[int, int, int]],
                    options: Mapping[str, Any]) -> BuilderSettings:
    """The builder settings for ``model`` at ``precision``; raises UserInputError for bad options."""
    check_graph_precision(model, precision)
    profiles, notes = derive_profiles(model.inputs, shape_ranges)
    opt_level = int(options.get("opt_level", DEFAULT_OPT_LEVEL))
    if not 0 <= opt_level <= MAX_OPT_LEVEL:
        raise UserInputError(f"--trt-opt-level {opt_level} is out of range",
                             hint=f"use 0 (fastest build) to {MAX_OPT_LEVEL} (most tuning); TensorRT's default is 3")
    workspace = options.get("workspace_mib")
    if workspace is not None and int(workspace) <= 0:
        raise UserInputError(f"--trt-workspace {workspace} must be a positive number of MiB", hint="e.g. 4096")
    hardware_compat = str(options.get("hardware_compat", "none"))
    if hardware_compat not in HARDWARE_COMPAT:
        raise UserInputError(f"--trt-hardware-compat '{hardware_compat}' is not a compatibility level",
                             hint=f"use one of: {', '.join(HARDWARE_COMPAT)}")
    cache = options.get("timing_cache")
    return BuilderSettings(
        precision=precision,
        profiles=profiles,
        tf32=precision != "fp32",
        workspace_mib=None if workspace is None else int(workspace),
        opt_level=opt_level,
        hardware_compat=hardware_compat,
        version_compat=bool(options.get("version_compat", False)),
        timing_cache=None if cache is None else str(cache),
        notes=notes,
    )


def check_graph_precision(model: Model, precision: str) -> None:
    """A strongly typed network runs the types in the graph: reduced precision must be written there."""
    if precision == "int8" and not any(node.op in QDQ_OPS for node in model.graph.nodes):
        missing = "QuantizeLinear/DequantizeLinear nodes"
    elif precision == "fp16" and not any(t.dtype is not None and np.dtype(t.dtype) == np.float16
                                         for t in model.graph.tensors().values()):
        missing = "float16 tensors"
    else:
        return
    raise UnsupportedError(
        f"TensorRT builds {precision} from the graph's own types, but the optimized graph has no {missing}",
        hint=f"check the pass table: the {precision} passes must run (do not --skip-pass them)")


def derive_profiles(inputs: list[TensorSpec], shape_ranges: Mapping[str, tuple[int, int, int]]
                    ) -> tuple[tuple[InputProfile, ...], tuple[str, ...]]:
    """One optimization profile: min/opt/max shapes for every input with dynamic dimensions.

    Ranges are given per dimension name (``batch=1:8:32`` sets every input axis named ``batch``).
    A dynamic dimension without a range is built as 1 (what trtexec does), and noted.
    """
    named = {d for spec in inputs for d in spec.shape or () if isinstance(d, str)}
    for dim in sorted(set(shape_ranges) - named):
        is_input = any(spec.name == dim for spec in inputs)
        raise UserInputError(
            f"shape range for '{dim}' names no dynamic dimension of the model inputs",
            hint=("ranges are per dimension name, not input name; " if is_input else "")
            + f"dynamic dimensions: {', '.join(sorted(named)) or 'none (every input is static)'}")
    for dim, bounds in shape_ranges.items():
        low, opt, high = bounds
        if not 1 <= low <= opt <= high:
            raise UserInputError(f"shape range for '{dim}' is {low}:{opt}:{high}",
                                 hint="it needs 1 <= MIN <= OPT <= MAX")
    profiles, notes = [], []
    for spec in inputs:
        if spec.shape is None:
            raise UnsupportedError(f"input '{spec.name}' has unknown rank; TensorRT needs one",
                                   hint=f"pin its shape with --input-shape {spec.name}:1x3x224x224")
        if spec.is_static:
            continue
        picks: list[tuple[int, int, int]] = []
        for axis, dim in enumerate(spec.shape):
            if isinstance(dim, int) and dim >= 0:
                picks.append((dim, dim, dim))
            elif isinstance(dim, str) and dim in shape_ranges:
                picks.append(tuple(shape_ranges[dim]))
            else:
                label = f"'{dim}'" if isinstance(dim, str) else "(unnamed)"
                notes.append(f"input '{spec.name}' axis {axis} {label} has no shape range; the engine takes only 1 "
                             f"(give one with --shape-range)")
                picks.append((1, 1, 1))
        low, opt, high = (tuple(p[i] for p in picks) for i in range(3))
        profiles.append(InputProfile(spec.name, low, opt, high))
    return tuple(profiles), tuple(notes)


def trtexec_command(settings: BuilderSettings, onnx: str, engine: str) -> str:
    """The trtexec command line that builds the same engine (for users who build with NVIDIA's tool)."""
    args = ["trtexec", f"--onnx={onnx}", f"--saveEngine={engine}", "--stronglyTyped", "--skipInference"]
    if not settings.tf32:
        args.append("--noTF32")
    for flag, pick in (("--minShapes", "min"), ("--optShapes", "opt"), ("--maxShapes", "max")):
        if settings.profiles:
            args.append(f"{flag}=" + ",".join(f"{_shape_name(p.name)}:{'x'.join(map(str, getattr(p, pick)))}"
                                              for p in settings.profiles))
    if settings.workspace_mib:
        args.append(f"--memPoolSize=workspace:{settings.workspace_mib}")  # trtexec's unit is MiB
    args.append(f"--builderOptimizationLevel={settings.opt_level}")
    if settings.hardware_compat != "none":
        args.append(f"--hardwareCompatibilityLevel={HARDWARE_COMPAT[settings.hardware_compat][1]}")
    if settings.version_compat:
        args.append("--versionCompatible")
    if settings.timing_cache:
        args.append(f"--timingCacheFile={settings.timing_cache}")
    return shlex.join(args)


def _shape_name(name: str) -> str:
    # trtexec splits shape specs on ':' and ','; names containing them go in single quotes.
    return f"'{name}'" if ":" in name or "," in name else name


@dataclass(frozen=True)
class BuildPlatform:
    """The TensorRT version and GPU an engine is built on or loaded on."""

    tensorrt: str
    gpu: str
    compute_capability: str  # "8.6"

    @property
    def cc(self) -> tuple[int, ...]:
        return _version_tuple(self.compute_capability)


def check_engine_platform(built: BuildPlatform, here: BuildPlatform, settings: BuilderSettings) -> None:
    """Raise TargetUnavailableError when an engine built on ``built`` cannot run ``here``.

    Plain engines need the exact TensorRT version and the GPU's compute capability; version-compatible
    engines run on the same or a later TensorRT of the same major version; ``ampere+`` engines on any
    GPU from Ampere on, ``same-cc`` ones on any GPU of the same compute capability.
    """
    problems = []
    if settings.version_compat:
        old, new = _version_tuple(built.tensorrt), _version_tuple(here.tensorrt)
        if new[:1] != old[:1] or new < old:
            problems.append(f"its version-compatible engine needs TensorRT {old[0]}.x >= {built.tensorrt}")
    elif built.tensorrt != here.tensorrt:
        problems.append(f"it needs exactly TensorRT {built.tensorrt}")
    if settings.hardware_compat == "ampere+":
        if here.cc < AMPERE:
            problems.append("it needs an Ampere or newer GPU (compute capability >= 8.0)")
    elif here.cc != built.cc:
        problems.append(f"it needs a GPU of compute capability {built.compute_capability}")
    if problems:
        raise TargetUnavailableError(
            f"engine built with TensorRT {built.tensorrt} on {built.gpu} (sm {built.compute_capability}) cannot "
            f"run here (TensorRT {here.tensorrt}, {here.gpu}, sm {here.compute_capability}): {'; '.join(problems)}",
            hint="rebuild it here (or run 'infer-compile finalize' on its bundle); "
                 "--trt-version-compat and --trt-hardware-compat ampere+ build portable engines")


def check_feed_shapes(profiles: tuple[InputProfile, ...], feeds: Mapping[str, np.ndarray]) -> None:
    """Reject inputs outside the engine's optimization profile before TensorRT does, with the range."""
    for profile in profiles:
        shape = tuple(np.shape(feeds[profile.name])) if profile.name in feeds else None
        if shape is None:
            continue
        inside = len(shape) == len(profile.min) and all(
            lo <= d <= hi for d, lo, hi in zip(shape, profile.min, profile.max, strict=True))
        if not inside:
            raise UserInputError(
                f"input '{profile.name}' has shape {'x'.join(map(str, shape))}, outside the engine's profile "
                f"{'x'.join(map(str, profile.min))} .. {'x'.join(map(str, profile.max))}",
                hint="rebuild with a wider --shape-range")


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())
