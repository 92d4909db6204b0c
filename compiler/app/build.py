"""One build: source model -> frontend -> pass pipeline -> target artifact + manifest.

This module resolves the build (options, target, output) and asks the build cache; the steps of a fresh build are in
``build_steps``, imported on a miss. A cache hit thus loads no frontend, pass, target runtime, numpy, onnx or
graphsurgeon (tests/test_cache.py checks it).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infer_compile import __version__
from infer_compile.app import build_options as declared_build
from infer_compile.app.cache import CacheHit, default_cache_dir, open_cache, source_files
from infer_compile.app.outputs import check_output, resolve_output
from infer_compile.app.settings import check_target_options, sort_options
from infer_compile.calibration.options import calibration_settings
from infer_compile.core.errors import UserInputError
from infer_compile.core.manifest import Manifest, written_manifest
from infer_compile.core.options import Option, read
from infer_compile.core.shapes import ShapeRange
from infer_compile.frontends import SourceOptions
from infer_compile.frontends.specs import check_shape_ranges, source_options
from infer_compile.passes.base import PassRecord
from infer_compile.targets import Target, TargetRequest, auto_target, get_target
from infer_compile.targets.base import package_version

if TYPE_CHECKING:
    from infer_compile.calibration import CalibrationSettings
    from infer_compile.core.numerics import Feeds
    from infer_compile.frontends import LoweredModel
    from infer_compile.passes.manager import ProgressHook


@dataclass
class BuildOptions:
    """Everything a build depends on; the CLI, the config file and the Python API fill this from the declared
    options (``options_from``). Defaults are the declarations' (``infer_compile.app.build_options``)."""

    target: str = declared_build.TARGET.default
    precision: str = declared_build.PRECISION.default
    # Artifact path, or a folder to write into (a str ending in '/' keeps the slash a Path would drop).
    output: Path | str | None = None
    source: SourceOptions = field(default_factory=SourceOptions)
    verify_passes: bool = declared_build.VERIFY_PASSES.default
    skip_passes: list[str] = field(default_factory=list)
    pass_options: dict[str, Any] = field(default_factory=dict)
    target_options: dict[str, Any] = field(default_factory=dict)
    # Dynamic dimension ranges by dim name (tuples or lists of three also do). Targets that need profiles use
    # them; test runs (e.g. --verify-passes) use the opt value.
    shape_ranges: dict[str, ShapeRange] = field(default_factory=dict)
    # Build cache folder or object store URL (see infer_compile.app.cache); None builds without the cache.
    cache_dir: Path | str | None = None
    # Seconds the autotune pass may spend timing runtime settings on this machine; 0 = no tuning. The default is
    # the declared one ($INFER_COMPILE_TUNE_TIME, else 5 s), as on every surface.
    tune_time: float = field(default_factory=declared_build.TUNE_TIME.fallback)
    # Write a bundle that builds the artifact on another machine (TensorRT without a GPU here).
    defer: bool = declared_build.DEFER.default
    # Calibration data and calibrator settings (--calib ...); required for int8.
    calibration: CalibrationSettings | None = None
    # Load the written artifact with its target's runtime and compare it with the source before committing it.
    final_check: bool = declared_build.FINAL_CHECK.default
    # The example inputs that checks and autotuning run on: --inputs FILE.npz (arrays keyed by input name), or in
    # process the values themselves (sequence inputs as lists of arrays, which no .npz holds).
    inputs: Path | Feeds | None = None
    # Third-party output (TensorFlow, converters) on the terminal instead of in ARTIFACT.log.
    verbose: bool = field(default=declared_build.VERBOSE.default, metadata={"cache_key": False})


def options_from(values: Mapping[str, Any], spelling: Callable[[Option[Any]], str] = lambda option: option.key,
                 ) -> tuple[BuildOptions, dict[str, Any]]:
    """The build options of ``values`` (any declared option by key; None or absent = its default), checked, and
    the checked build-level values (``report``, ``triton_*``: what happens after the build). The one way the
    CLI, config files and the API turn options into a build."""
    given = sort_options(values, spelling)
    build = given.build

    def value(option: Option[Any]) -> Any:
        return read(build, option)

    cache_dir = (value(declared_build.CACHE_DIR) or default_cache_dir()) if value(declared_build.CACHE) else None
    options = BuildOptions(
        target=value(declared_build.TARGET), precision=value(declared_build.PRECISION),
        output=value(declared_build.OUTPUT), source=source_options(given.source),
        verify_passes=value(declared_build.VERIFY_PASSES), skip_passes=list(value(declared_build.SKIP_PASSES)),
        pass_options=given.passes, target_options=given.target,
        shape_ranges=dict(value(declared_build.SHAPE_RANGES)), cache_dir=cache_dir,
        tune_time=value(declared_build.TUNE_TIME), defer=value(declared_build.DEFER),
        calibration=calibration_settings(given.calibration), final_check=value(declared_build.FINAL_CHECK),
        inputs=value(declared_build.INPUTS), verbose=value(declared_build.VERBOSE))
    return options, build


def check_deliveries(options: BuildOptions, build: Mapping[str, Any]) -> None:
    """Refuse, before building, a report path that cannot be written or a Triton repository that cannot serve
    the target (``build``: the checked build-level values of ``options_from``)."""
    if read(build, declared_build.TRITON_REPO) is not None:
        from infer_compile.app.triton import serving_for

        serving_for(resolve_target(options.target)[0].name, "trtbundle" if options.defer else None)
    if (report := read(build, declared_build.REPORT)) is not None:
        from infer_compile.app.report import check_report

        check_report(report)


@dataclass
class Delivered:
    """What a build wrote after the artifact: a Model Explorer overlay beside an HTML report, a Triton version."""

    overlay: Path | None = None
    triton: Path | None = None


def deliver(result: BuildResult, build: Mapping[str, Any]) -> Delivered:
    """After the build: the report written (with its overlay for an HTML report), the artifact put into the
    Triton repository when asked."""
    delivered = Delivered()
    if (report := read(build, declared_build.REPORT)) is not None:
        from infer_compile.app.report import write_report

        delivered.overlay = write_report(result, report)
    if (repo := read(build, declared_build.TRITON_REPO)) is not None:
        from infer_compile.app.triton import write_model

        delivered.triton = write_model(result.artifact, repo, read(build, declared_build.TRITON_NAME),
                                       read(build, declared_build.TRITON_VERSION))
    return delivered


@dataclass
class BuildResult:
    artifact: Path
    files: list[Path]
    target: str
    target_reason: str
    source: LoweredModel | None  # None when the artifact came from the build cache
    records: list[PassRecord]
    nodes_before: int
    nodes_after: int
    seconds: float
    manifest: Manifest
    cache: str = "off"  # "off", "hit" or "miss (...)"

    @classmethod
    def from_cache(cls, hit: CacheHit, target: str, reason: str, seconds: float) -> BuildResult:
        records = [PassRecord(**r) for r in hit.meta["records"]]
        return cls(hit.files[0], hit.files, target, reason, None, records, hit.meta["nodes_before"],
                   hit.meta["nodes_after"], seconds, written_manifest(hit.files[0]), cache="hit")


def resolve_target(name: str) -> tuple[Target, str]:
    if name == "auto":
        return auto_target()
    return get_target(name), "requested"


def tool_versions() -> dict[str, str]:
    # From the package metadata, not the modules: the cache key of a hit is made without importing them.
    return {"infer-compile": __version__, **{dist: package_version(dist) or "unknown"
                                             for dist in ("onnx", "onnx-graphsurgeon", "numpy")},
            "python": platform.python_version()}


@dataclass
class BuildPlan:
    """A build as resolved and checked before the cache is asked: the target (``reason``: why it was chosen), what
    is asked of it, and the artifact path."""

    source: Path
    options: BuildOptions
    target: Target
    reason: str
    request: TargetRequest
    output: Path


def compile_model(source: Path, options: BuildOptions, progress: ProgressHook | None = None,
                  status: Callable[[str], None] | None = None) -> BuildResult:
    """Build ``source`` as ``options`` say; raises InferCompileError subclasses for user problems.

    The cache is asked before anything heavy loads. What a fresh build checks beyond the request and the output
    path (the target is available, the pass options apply to this pipeline) runs on a miss: the cache key holds
    every input of those checks (the options, the target's tool versions and hardware, infer-compile's code), and
    an entry exists only for a build that passed them.
    """
    if options.precision == "auto":
        from infer_compile.app.precision_choice import compile_auto  # it builds through this function

        return compile_auto(Path(source), options)
    start = time.perf_counter()
    plan = plan_build(Path(source), options)
    cache = open_cache(options.cache_dir) if options.cache_dir else None
    if cache:
        key = cache.key(plan.source, plan.options, plan.target, plan.output,
                        {**tool_versions(), **plan.target.tool_versions()})
        if hit := cache.fetch(key, plan.output):
            return BuildResult.from_cache(hit, plan.target.name, plan.reason, time.perf_counter() - start)
    from infer_compile.app.build_steps import build_artifact

    result = build_artifact(plan, start, progress, status)
    if cache:
        try:
            result.cache = cache.store(key, result)
        except KeyboardInterrupt as exc:  # the artifact is in place already: the CLI says so
            exc.written = [result.artifact]  # type: ignore[attr-defined]
            raise
    return result


def plan_build(source: Path, options: BuildOptions) -> BuildPlan:
    """The target, request and output of a build, checked: an unknown target, a precision or setting it does not
    take, missing calibration data or an output path that cannot be written fail here, before any work."""
    base, reason = resolve_target(options.target)
    target = base.deferred() if options.defer else base
    request = TargetRequest(options.precision, options=dict(options.target_options))
    target.check_request(request)
    request.options = check_target_options(options.target_options, target)
    options = replace(options, shape_ranges=check_shape_ranges(options.shape_ranges))  # given as tuples, say
    request.shape_ranges = dict(options.shape_ranges)
    if target.needs_calibration(request) and options.calibration is None:
        raise UserInputError("--int8 needs calibration data", hint="give --calib FOLDER or --calib pkg.mod:fn "
                             "(representative inputs); --calib synthetic only for smoke tests")
    suffixes = tuple(dict.fromkeys((*base.output_suffixes, target.suffix)))  # --defer: the bundle's too
    output = resolve_output(options.output, source, base, suffixes)
    if options.defer:  # -o names the final artifact; the bundle is written beside it under the bundle's suffix
        output = output.with_suffix(target.suffix)
    check_output(output, source_files(source))
    return BuildPlan(source, options, target, reason, request, output)
