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
from typing import TYPE_CHECKING, Any

from infer_compile.core.errors import TargetUnavailableError, UnsupportedError, UserInputError
from infer_compile.core.options import Option, read
from infer_compile.core.shapes import ShapeRange

if TYPE_CHECKING:  # numpy and the IR are imported where they are used (targets/base.py)
    import numpy as np

    from infer_compile.core.ir import Model, TensorSpec

# TensorRT's own default builder optimization level, and the highest it accepts.
DEFAULT_OPT_LEVEL = 3
MAX_OPT_LEVEL = 5
PRECISIONS = ("fp32", "fp16", "int8")
# --trt-workspace upper bound: 1 TiB is more memory than any GPU has; larger values are typos.
MAX_WORKSPACE_MIB = 1 << 20
# Compute capabilities of the first Turing and Ampere GPUs.
TURING, AMPERE = (7, 5), (8, 0)
# TensorRT 11 builds every network strongly typed and made the flag (and trtexec's --stronglyTyped) a no-op.
ALWAYS_STRONGLY_TYPED = 11
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


# The target's options (TensorRtTarget.options): values are checked further by check_settings.
TIMING_CACHE: Option[str | None] = Option(
    "timing_cache", str, None, "TensorRT timing cache file, read and updated (reuse it across builds and CI runs).",
    path=True)
WORKSPACE_MIB: Option[int | None] = Option(
    "workspace_mib", int, None, "TensorRT builder workspace limit in MiB (default: all GPU memory).",
    flag="--trt-workspace")
OPT_LEVEL: Option[int] = Option(
    "opt_level", int, DEFAULT_OPT_LEVEL, "TensorRT builder optimization level 0-5: higher builds longer, runs faster.",
    flag="--trt-opt-level")
HARDWARE_COMPAT_LEVEL: Option[str] = Option(
    "hardware_compat", str, "none", "TensorRT engine also runs on other GPUs: ampere+ (Ampere and newer) or "
    "same-cc (same compute capability).", flag="--trt-hardware-compat")
VERSION_COMPAT: Option[bool] = Option(
    "version_compat", bool, False, "TensorRT engine also runs on later TensorRT versions of its major version.",
    flag="--trt-version-compat")
OPTIONS = (TIMING_CACHE, WORKSPACE_MIB, OPT_LEVEL, HARDWARE_COMPAT_LEVEL, VERSION_COMPAT)


@dataclass(frozen=True)
class HardwareCompat:
    """One --trt-hardware-compat level: its TensorRT names and where it can be built."""

    member: str  # trt.HardwareCompatibilityLevel member
    trtexec: str  # trtexec --hardwareCompatibilityLevel spelling (samples/common/sampleOptions.cpp)
    since: tuple[int, int]  # first TensorRT with it
    build_cc: tuple[int, int]  # oldest GPU it builds on (NvInfer.h: "only supported for engines built on ...")
    build_gpus: str


HARDWARE_COMPAT = {
    "none": HardwareCompat("NONE", "none", (8, 6), (0, 0), "any"),
    "ampere+": HardwareCompat("AMPERE_PLUS", "ampere+", (8, 6), AMPERE, "Ampere"),
    # kSAME_COMPUTE_CAPABILITY first appears in release/10.9 (NvInfer.h, pyCore.cpp): 10.8 has no such member.
    "same-cc": HardwareCompat("SAME_COMPUTE_CAPABILITY", "sameComputeCapability", (10, 9), TURING, "Turing"),
}

# Version-compatible engines (BuilderFlag.VERSION_COMPATIBLE, TensorRT >= 8.6) run on the TensorRT that
# built them and on later ones, never on earlier ones. How much later, as NVIDIA documents it:
# - TensorRT 10.x "Version Compatibility": "engines built with TensorRT 8 work with TensorRT 9 and
#   TensorRT 10 runtimes"; "the plan must be built with a version at least 8.6"
#   (docs.nvidia.com/deeplearning/tensorrt/10.16.1/inference-library/version-compatibility.html)
# - TensorRT 11.x "Engine Compatibility": "engines built with TensorRT 10 work with TensorRT 11", and 11.0
#   engines with 11.1 and later 11.x (docs.nvidia.com/deeplearning/tensorrt/11.1.0/inference-library/
#   engine-compatibility.html)
# Builder major -> the newest runtime major documented to run its version-compatible engines.
VERSION_COMPAT_REACH = {8: 10, 9: 10, 10: 11, 11: 11}


@dataclass(frozen=True)
class InputProfile:
    """The shapes one dynamic input may take at run time (an optimization profile entry)."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    @classmethod
    def of_axes(cls, name: str, axes: list[ShapeRange]) -> InputProfile:
        """The profile whose axis i takes ``axes[i]``."""
        return cls(name, tuple(a.min for a in axes), tuple(a.opt for a in axes), tuple(a.max for a in axes))

    def axes(self) -> list[ShapeRange]:
        return [ShapeRange(*bounds) for bounds in zip(self.min, self.opt, self.max, strict=True)]


@dataclass(frozen=True)
class BuilderSettings:
    """Everything the TensorRT builder is told, as plain data (JSON in manifests and bundles).

    Checked on construction, so options from the command line and settings read back from a bundle
    pass the same rules (``check_settings``).
    """

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

    def __post_init__(self) -> None:
        check_settings(self)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> BuilderSettings:
        """Settings from JSON (a manifest or bundle); UserInputError for anything malformed or out of range."""
        if not isinstance(data, Mapping):
            raise _unreadable(f"an object was expected, not {type(data).__name__}")
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown or "precision" not in data:
            raise _unreadable(f"unknown keys: {', '.join(sorted(unknown)) or '-'}"
                              f"{'' if 'precision' in data else '; no precision'}")
        try:
            profiles = tuple(InputProfile(p["name"], tuple(p["min"]), tuple(p["opt"]), tuple(p["max"]))
                             for p in data.get("profiles", ()))
            notes = tuple(data.get("notes", ()))
        except (KeyError, TypeError) as exc:
            raise _unreadable(f"malformed profiles or notes: {type(exc).__name__}: {exc}") from None
        return cls(**{**data, "profiles": profiles, "notes": notes})


def _unreadable(why: str) -> UserInputError:
    return UserInputError(f"builder settings are not readable ({why})",
                          hint="the bundle was written by another infer-compile version; write it again")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_settings(settings: BuilderSettings) -> None:
    """The rules every BuilderSettings obeys, wherever it comes from; UserInputError names the option."""
    if settings.precision not in PRECISIONS:
        raise UserInputError(f"precision {settings.precision!r} is not one TensorRT builds here",
                             hint=f"use one of: {', '.join(PRECISIONS)}")
    if not _is_int(settings.opt_level):
        raise UserInputError(f"--trt-opt-level must be a whole number, not {settings.opt_level!r}",
                             hint=f"use 0 (fastest build) to {MAX_OPT_LEVEL} (most tuning); TensorRT's default is 3")
    if not 0 <= settings.opt_level <= MAX_OPT_LEVEL:
        raise UserInputError(f"--trt-opt-level {settings.opt_level} is out of range",
                             hint=f"use 0 (fastest build) to {MAX_OPT_LEVEL} (most tuning); TensorRT's default is 3")
    workspace = settings.workspace_mib
    if workspace is not None and (not _is_int(workspace) or not 0 < workspace <= MAX_WORKSPACE_MIB):
        raise UserInputError(f"--trt-workspace {workspace} must be a whole number of MiB from 1 to {MAX_WORKSPACE_MIB}",
                             hint="e.g. 4096")
    if settings.hardware_compat not in HARDWARE_COMPAT:
        raise UserInputError(f"--trt-hardware-compat {settings.hardware_compat!r} is not a compatibility level",
                             hint=f"use one of: {', '.join(HARDWARE_COMPAT)}")
    for flag, value in (("tf32", settings.tf32), ("--trt-version-compat", settings.version_compat)):
        if not isinstance(value, bool):
            raise UserInputError(f"{flag} must be true or false, not {value!r}", hint="write the settings again")
    if settings.timing_cache is not None and not isinstance(settings.timing_cache, str):
        raise UserInputError(f"--timing-cache must be a path, not {settings.timing_cache!r}",
                             hint="write the settings again")
    if not all(isinstance(note, str) for note in settings.notes):
        raise UserInputError("builder notes must be text", hint="write the settings again")
    for profile in settings.profiles:
        check_profile(profile)


def check_range(label: str, shape_range: ShapeRange, floor: int = 1) -> None:
    """One dimension's MIN:OPT:MAX, by the rule `--shape-range` is parsed with."""
    if shape_range.problem(floor):
        raise UserInputError(f"shape range for {label} is {':'.join(map(str, shape_range))}",
                             hint=f"it needs {floor} <= MIN <= OPT <= MAX, whole numbers")


def check_profile(profile: InputProfile) -> None:
    if not isinstance(profile.name, str) or not profile.name:
        raise UserInputError(f"optimization profile input name {profile.name!r} is not a name",
                             hint="write the settings again")
    if not len(profile.min) == len(profile.opt) == len(profile.max):
        raise UserInputError(f"optimization profile of '{profile.name}' mixes ranks "
                             f"{len(profile.min)}/{len(profile.opt)}/{len(profile.max)}",
                             hint="MIN, OPT and MAX shapes need one value per axis")
    for axis, shape_range in enumerate(profile.axes()):
        check_range(f"'{profile.name}' axis {axis}", shape_range, floor=0)


def derive_settings(model: Model, precision: str, shape_ranges: Mapping[str, ShapeRange],
                    options: Mapping[str, Any]) -> BuilderSettings:
    """The builder settings for ``model`` at ``precision``; raises UserInputError for bad options."""
    check_graph_precision(model, precision)
    profiles, notes = derive_profiles(model.inputs, shape_ranges)
    return settings_from_options(precision, options, profiles, notes)


def settings_from_options(precision: str, options: Mapping[str, Any], profiles: tuple[InputProfile, ...] = (),
                          notes: tuple[str, ...] = ()) -> BuilderSettings:
    """The --trt-*/--timing-cache options as settings; the option values are checked (check_settings)."""
    cache = read(options, TIMING_CACHE)
    return BuilderSettings(
        precision=precision,
        profiles=profiles,
        tf32=precision != "fp32",
        workspace_mib=read(options, WORKSPACE_MIB),
        opt_level=read(options, OPT_LEVEL),
        hardware_compat=read(options, HARDWARE_COMPAT_LEVEL),
        version_compat=read(options, VERSION_COMPAT),
        timing_cache=None if cache is None else str(cache),
        notes=notes,
    )


def check_graph_precision(model: Model, precision: str) -> None:
    """A strongly typed network runs the types in the graph: reduced precision must be written there."""
    import numpy as np

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


def derive_profiles(inputs: list[TensorSpec], shape_ranges: Mapping[str, ShapeRange]
                    ) -> tuple[tuple[InputProfile, ...], tuple[str, ...]]:
    """One optimization profile: min/opt/max shapes for every input with dynamic dimensions.

    Ranges are given per dimension name (``batch=1:8:32`` sets every input axis named ``batch``).
    A dynamic dimension without a range is built as 1 (what trtexec does), and noted.
    """
    named = {d for spec in inputs for d in spec.shape or () if isinstance(d, str)}
    for name in sorted(set(shape_ranges) - named):
        is_input = any(spec.name == name for spec in inputs)
        raise UserInputError(
            f"shape range for '{name}' names no dynamic dimension of the model inputs",
            hint=("ranges are per dimension name, not input name; " if is_input else "")
            + f"dynamic dimensions: {', '.join(sorted(named)) or 'none (every input is static)'}")
    for name, shape_range in shape_ranges.items():
        check_range(f"'{name}'", shape_range)
    profiles, notes = [], []
    for spec in inputs:
        if spec.shape is None:
            raise UnsupportedError(f"input '{spec.name}' has unknown rank; TensorRT needs one",
                                   hint=f"pin its shape with --input-shape {spec.name}:1x3x224x224")
        if spec.is_static:
            continue
        picks: list[ShapeRange] = []
        for axis, dim in enumerate(spec.shape):
            if isinstance(dim, int) and dim >= 0:
                picks.append(ShapeRange(dim, dim, dim))
            elif isinstance(dim, str) and dim in shape_ranges:
                picks.append(shape_ranges[dim])
            else:
                label = f"'{dim}'" if isinstance(dim, str) else "(unnamed)"
                notes.append(f"input '{spec.name}' axis {axis} {label} has no shape range; the engine takes only 1 "
                             f"(give one with --shape-range)")
                picks.append(ShapeRange(1, 1, 1))
        profiles.append(InputProfile.of_axes(spec.name, picks))
    return tuple(profiles), tuple(notes)


def trtexec_command(settings: BuilderSettings, onnx: str, engine: str, tensorrt_major: int) -> str:
    """The trtexec command line that builds the same engine with that TensorRT major version.

    10.x needs --stronglyTyped to build the graph's own types (as our builder does); 11.x always does
    and deprecated the flag. Neither is given --int8 or --calib: precision comes from the graph.
    """
    typing = [] if tensorrt_major >= ALWAYS_STRONGLY_TYPED else ["--stronglyTyped"]
    args = ["trtexec", f"--onnx={onnx}", f"--saveEngine={engine}", *typing, "--skipInference"]
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
        args.append(f"--hardwareCompatibilityLevel={HARDWARE_COMPAT[settings.hardware_compat].trtexec}")
    if settings.version_compat:
        args.append("--versionCompatible")
    if settings.timing_cache:
        args.append(f"--timingCacheFile={settings.timing_cache}")
    return shlex.join(args)


def trtexec_commands(settings: BuilderSettings, onnx: str, engine: str) -> dict[str, str]:
    """The trtexec line per TensorRT major version, for bundles (built later by a TensorRT not known yet)."""
    return {"10": trtexec_command(settings, onnx, engine, 10),
            "11": trtexec_command(settings, onnx, engine, ALWAYS_STRONGLY_TYPED)}


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
        return version_tuple(self.compute_capability) or (0,)  # (0,): unreadable, older than any GPU

    @property
    def version(self) -> tuple[int, ...]:
        return version_tuple(self.tensorrt) or (0,)


def check_build_platform(settings: BuilderSettings, here: BuildPlatform) -> None:
    """Refuse, before building, what this TensorRT or GPU cannot build (TensorRT would fail mid-build)."""
    level = HARDWARE_COMPAT[settings.hardware_compat]
    option = f"--trt-hardware-compat {settings.hardware_compat}"
    if here.version[:2] < level.since:
        raise TargetUnavailableError(
            f"{option} needs TensorRT >= {'.'.join(map(str, level.since))}; this is TensorRT {here.tensorrt}",
            hint=f"upgrade TensorRT (pip install 'tensorrt>={'.'.join(map(str, level.since))}') or drop {option}")
    if here.cc < level.build_cc:
        raise TargetUnavailableError(
            f"{option} engines are built on {level.build_gpus} or newer GPUs (compute capability >= "
            f"{'.'.join(map(str, level.build_cc))}); this is {here.gpu} (sm {here.compute_capability})",
            hint=f"build on a newer GPU, or drop {option}")


def check_engine_platform(built: BuildPlatform, here: BuildPlatform, settings: BuilderSettings) -> None:
    """Raise TargetUnavailableError when an engine built on ``built`` cannot run ``here``.

    Plain engines need the exact TensorRT version and the GPU's compute capability (any GPU model of
    that compute capability; TensorRT warns when the model differs). Version-compatible engines follow
    VERSION_COMPAT_REACH; ``ampere+`` engines run on any GPU from Ampere on, ``same-cc`` ones on any GPU
    of the same compute capability.
    """
    problems = []
    if settings.version_compat:
        problems += _version_compat_problems(built, here)
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


def _version_compat_problems(built: BuildPlatform, here: BuildPlatform) -> list[str]:
    """Why a version-compatible engine cannot run on ``here``'s TensorRT (see VERSION_COMPAT_REACH)."""
    reach = VERSION_COMPAT_REACH.get(built.version[0], built.version[0])
    if here.version < built.version:
        return [f"its version-compatible engine needs TensorRT >= {built.tensorrt}"]
    if here.version[0] > reach:
        return [f"TensorRT documents version-compatible {built.version[0]}.x engines running on TensorRT "
                f"{built.version[0]}.x to {reach}.x only"]
    return []


def check_feed_shapes(profiles: tuple[InputProfile, ...], feeds: Mapping[str, np.ndarray]) -> None:
    """Reject inputs outside the engine's optimization profile before TensorRT does, with the range."""
    import numpy as np

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


def version_tuple(version: str) -> tuple[int, ...]:
    """(10, 8, 0, 43) for "10.8.0.43"; stops at the first part that is not a number ("11.0.0rc1" -> (11, 0))."""
    parts = []
    for part in version.split("."):
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts)
