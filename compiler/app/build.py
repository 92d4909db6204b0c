"""One build: source model -> frontend -> pass pipeline -> target artifact + manifest."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from infer_compile import __version__
from infer_compile.app import build_options as declared_build
from infer_compile.app.cache import CacheHit, default_cache_dir, open_cache, source_files
from infer_compile.app.examples import example_inputs, graph_inputs, reference_outputs
from infer_compile.app.outputs import check_output, resolve_output
from infer_compile.app.settings import check_pass_options, check_target_options, sort_options
from infer_compile.app.verification import FinalCheck, FinalCheckFailed
from infer_compile.calibration import CalibrationSettings, load_calibration
from infer_compile.calibration.cache import read_cache_file
from infer_compile.calibration.options import calibration_settings
from infer_compile.core.errors import AccuracyError, InferCompileError, UserInputError
from infer_compile.core.ir import file_digest
from infer_compile.core.manifest import BuildFacts, Manifest, written_manifest
from infer_compile.core.numerics import Feeds
from infer_compile.core.options import Option, checked, read
from infer_compile.core.progress import third_party_output
from infer_compile.core.shapes import ShapeRange, opt_sizes
from infer_compile.frontends import LoweredModel, SourceOptions, load_source
from infer_compile.frontends.specs import check_shape_ranges, source_options
from infer_compile.passes import PassContext, PassManager, PassRecord, build_pipeline, pass_options
from infer_compile.passes.manager import PassBrokeOutputs, ProgressHook
from infer_compile.passes.precision_state import node_precisions, weight_storage
from infer_compile.targets import Target, TargetRequest, auto_target, get_target


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
    return {"infer-compile": __version__, "onnx": onnx.__version__, "onnx-graphsurgeon": gs.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def compile_model(source: Path, options: BuildOptions, progress: ProgressHook | None = None,
                  status: Callable[[str], None] | None = None) -> BuildResult:
    """Build ``source`` as ``options`` say; raises InferCompileError subclasses for user problems."""
    if options.precision == "auto":
        from infer_compile.app.precision_choice import compile_auto  # it builds through this function

        return compile_auto(Path(source), options)
    start = time.perf_counter()
    source = Path(source)
    base, reason = resolve_target(options.target)
    target = base.deferred() if options.defer else base
    request = TargetRequest(options.precision, options=dict(options.target_options))
    # Fail on an unusable target or precision before any expensive work.
    target.require_available()
    target.check_request(request)
    request.options = check_target_options(options.target_options, target)
    pass_values = checked(pass_options().values(), options.pass_options, "pass option")
    options = replace(options, shape_ranges=check_shape_ranges(options.shape_ranges))  # given as tuples, say
    request.shape_ranges = dict(options.shape_ranges)
    if target.needs_calibration(request) and options.calibration is None:
        raise UserInputError("--int8 needs calibration data", hint="give --calib FOLDER or --calib pkg.mod:fn "
                             "(representative inputs); --calib synthetic only for smoke tests")
    pipeline = build_pipeline(options.precision, options.skip_passes, target.passes(options.precision))
    check_pass_options(pass_values, pipeline, options.precision, target, options.calibration is not None)
    suffixes = tuple(dict.fromkeys((*base.output_suffixes, target.suffix)))  # --defer: the bundle's too
    output = resolve_output(options.output, source, base, suffixes)
    if options.defer:  # -o names the final artifact; the bundle is written beside it under the bundle's suffix
        output = output.with_suffix(target.suffix)
    check_output(output, source_files(source))
    if options.calibration and options.calibration.cache:
        read_cache_file(options.calibration.cache)  # refused now, not after calibrating, if not ours
    cache = open_cache(options.cache_dir) if options.cache_dir else None
    if cache:
        key = cache.key(source, options, target, output, {**tool_versions(), **target.tool_versions()})
        if hit := cache.fetch(key, output):
            return BuildResult.from_cache(hit, target.name, reason, time.perf_counter() - start)

    log = None if options.verbose else log_path(output)
    with third_party_output(log):
        lowered = load_source(source, replace(options.source, shape_ranges=dict(options.shape_ranges), log_path=log,
                                              verbose=options.verbose))
    model = lowered.model
    check_shape_ranges(options.shape_ranges, model.inputs)
    nodes_before = model.node_count
    # Synthetic samples are drawn as the example inputs are: integer inputs within what the graph indexes.
    calibration = None if options.calibration is None else load_calibration(
        options.calibration, model.inputs, synthetic=lambda seed: graph_inputs(model, seed=seed))
    request.calibration = calibration.samples if calibration else None
    request.source_module = lowered.module
    shape_overrides = opt_sizes(options.shape_ranges)
    runs_checks = options.final_check or options.verify_passes
    # Only built when something runs the model: the checks, or autotuning.
    examples = example_inputs(model, given=options.inputs, held_out=calibration.split()[1] if calibration else None,
                              dims=shape_overrides) if runs_checks or options.tune_time > 0 else None
    checking = time.perf_counter()
    reference = reference_outputs(model, examples) if examples and runs_checks else None
    check = None
    if options.final_check and examples and reference:
        check = FinalCheck(examples, reference, time.perf_counter() - checking)
    feeds = examples.feeds if examples else []

    def context() -> PassContext:
        return PassContext(target=target.name, capabilities=target.capabilities, calibration=calibration,
                           options=pass_values, tune_time=options.tune_time, shape_overrides=shape_overrides,
                           examples=feeds, example_outputs=reference or [], status=status)

    ctx = context()
    ctx.tuner = target.tuner(request) if options.tune_time > 0 else None
    ran = PassManager(pipeline, verify=options.verify_passes, progress=progress, feeds=feeds[0] if feeds else None,
                      reference=reference[0] if reference else None).run(model, ctx)
    records = ran.records
    if quantization := ran.manifest.get("quantization"):
        # What the artifact computes in, counted on the final graph: autotuning may have returned layers to fp32.
        quantization["nodes"] = node_precisions(model)
        quantization["weights_mib"] = weight_storage(model)
    # The runtime settings autotuning chose reach the target like user options (which win).
    request.options = {**ran.target_options, **request.options}

    build = BuildFacts(
        source={"path": source.name, "format": lowered.format, "sha256": file_digest(source), **lowered.details},
        inputs=[s.to_json() for s in model.inputs], outputs=[s.to_json() for s in model.outputs],
        passes=[r.name for r in records if r.status == "applied"], shape_ranges=options.shape_ranges,
        tool_versions=tool_versions(), pass_sections=dict(ran.manifest), infer_compile=__version__)
    try:
        with third_party_output(log):
            files = target.compile(model, output, request, build, check)
    except FinalCheckFailed as failed:
        assert reference is not None
        culprit = first_breaking_pass(source, options, pipeline, context(), feeds[0], reference[0])
        raise failed_check_error(failed, culprit) from failed
    result = BuildResult(output, files, target.name, reason, lowered, records, nodes_before, model.node_count,
                         time.perf_counter() - start, written_manifest(output))
    if cache:
        try:
            result.cache = cache.store(key, result)
        except KeyboardInterrupt as exc:  # the artifact is in place already: the CLI says so
            exc.written = [result.artifact]  # type: ignore[attr-defined]
            raise
    return result


def log_path(output: Path) -> Path:
    """Where a build's third-party output goes: ARTIFACT.log beside the artifact (see --verbose)."""
    return output.with_name(output.name + ".log")


def failed_check_error(failed: FinalCheckFailed, culprit: PassBrokeOutputs | None) -> AccuracyError:
    """The one-line error of a build whose final check failed: what failed, and the pass (or target) to blame."""
    if culprit is None:
        blame = ("every pass keeps the graph within tolerance in onnxruntime, so the target's conversion or "
                 "runtime changes the results")
        hint = "build for another target, or report the model (--no-final-check writes the artifact unchecked)"
    else:
        blame = f"the first pass that breaks it is '{culprit.pass_name}' ({culprit.message})"
        hint = f"build without it using --skip-pass {culprit.pass_name}, and report the model"
        if culprit.pass_name in ("quantize-int8", "fp16"):  # lost precision, not a broken rewrite
            hint = ("keep the most sensitive layers in fp32 with --accuracy-budget 'cosine>=0.99' (or "
                    "--exclude-nodes), or build at a higher precision")
    return AccuracyError(f"final check failed: {failed.message}; {blame}; nothing was written", hint=hint)


def first_breaking_pass(source: Path, options: BuildOptions, pipeline: list, ctx: PassContext, feeds: Feeds,
                        reference: Feeds) -> PassBrokeOutputs | None:
    """Which pass makes the model stop matching its source: the pipeline rerun (without autotuning) on a fresh
    load of the source, every pass judged against the source's outputs by the build's precision tolerance."""
    model = load_source(source, replace(options.source, shape_ranges=dict(options.shape_ranges))).model
    try:
        PassManager(pipeline, feeds=feeds, reference=reference, against_source=options.precision).run(model, ctx)
    except PassBrokeOutputs as exc:
        exc.message = exc.message.removeprefix("--verify-passes: ")
        return exc
    except InferCompileError:  # e.g. an accuracy budget: the final check's failure is the one to report
        return None
    return None
