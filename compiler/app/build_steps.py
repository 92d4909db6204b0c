"""The steps of a build the cache does not have: the target's checks, the source loaded through its frontend,
calibration, the pass pipeline, and the artifact written and checked by its target.

Imported only when a build runs them (``infer_compile.app.build``): they load the frontends, the passes, numpy, onnx
and graphsurgeon, which a cache hit does without.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from infer_compile import __version__
from infer_compile.app.build import BuildOptions, BuildPlan, BuildResult, tool_versions
from infer_compile.app.examples import example_inputs, graph_inputs, reference_outputs
from infer_compile.app.settings import check_pass_options
from infer_compile.app.verification import FinalCheck, FinalCheckFailed
from infer_compile.calibration import load_calibration
from infer_compile.calibration.cache import read_cache_file
from infer_compile.core.artifacts import file_digest
from infer_compile.core.errors import AccuracyError, InferCompileError
from infer_compile.core.manifest import BuildFacts, written_manifest
from infer_compile.core.numerics import Feeds
from infer_compile.core.options import checked
from infer_compile.core.progress import third_party_output
from infer_compile.core.shapes import opt_sizes
from infer_compile.frontends import load_source
from infer_compile.frontends.specs import check_shape_ranges
from infer_compile.passes import PassContext, PassManager, build_pipeline, pass_options
from infer_compile.passes.manager import PassBrokeOutputs, ProgressHook
from infer_compile.passes.precision_state import node_precisions, weight_storage


def build_artifact(plan: BuildPlan, started: float, progress: ProgressHook | None = None,
                   status: Callable[[str], None] | None = None) -> BuildResult:
    """Build what ``plan`` says (``started``: when the build began, perf_counter seconds)."""
    source, options, target, request, output = plan.source, plan.options, plan.target, plan.request, plan.output
    target.require_available()
    pass_values = checked(pass_options().values(), options.pass_options, "pass option")
    pipeline = build_pipeline(options.precision, options.skip_passes, target.passes(options.precision))
    check_pass_options(pass_values, pipeline, options.precision, target, options.calibration is not None)
    if options.calibration and options.calibration.cache:
        read_cache_file(options.calibration.cache)  # refused now, not after calibrating, if not ours
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
    return BuildResult(output, files, target.name, plan.reason, lowered, records, nodes_before, model.node_count,
                       time.perf_counter() - started, written_manifest(output))


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
