"""An artifact against its source model on the same inputs (`infer-compile verify`).

The source, lowered by its frontend, runs as the reference (``numerics.run_onnx``); the
artifact runs through its target's runner. Outputs of all samples are stacked before comparing,
so max-abs/max-rel are the worst over every sample and top-1 agreement (class-score outputs only) is the
fraction of rows whose arg-max matches.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from infer_compile.app.examples import Examples, graph_inputs
from infer_compile.core.errors import AccuracyError, InferCompileError, TargetUnavailableError, UserInputError, one_line
from infer_compile.core.feeds import conform
from infer_compile.core.ir import Model, TensorSpec
from infer_compile.core.manifest import Manifest
from infer_compile.core.numerics import (
    TOLERANCES,
    Feeds,
    OutputComparison,
    compare_outputs,
    out_of_tolerance,
    run_onnx,
    summarize,
)
from infer_compile.frontends import SourceOptions
from infer_compile.frontends.specs import source_options
from infer_compile.targets import Runner

RECORDED_EXPORTERS = ("dynamo", "legacy")  # a manifest's exporter verify reuses (tf2onnx is not a choice)


@dataclass
class Verification:
    samples: int
    comparisons: list[OutputComparison]
    reference: Feeds  # stacked over samples

    @property
    def figures(self) -> dict:
        return summarize(self.comparisons)

    def to_json(self) -> dict:
        return {"samples": self.samples, "figures": self.figures, "outputs": [c.to_json() for c in self.comparisons]}


def verify(source: Model, runner: Runner, *, samples: int, seed: int, given: list[Feeds] | None = None
           ) -> Verification:
    """Run the lowered source model and ``runner`` on ``given`` feeds, or on ``samples`` seeded random ones
    (shaped by what the graph does with its inputs, see ``examples.graph_inputs``)."""
    check_same_interface(source, runner)
    feed_list = given or [graph_inputs(source, seed=seed + i) for i in range(samples)]
    refs = [run_onnx(source, feeds) for feeds in feed_list]
    gots = [runner.run(for_runner(runner, feeds)) for feeds in feed_list]
    reference = _stack(refs)
    comparisons = compare_outputs(reference, _stack(gots))
    return Verification(len(feed_list), comparisons, reference)


def source_options_for(given: dict[str, Any], manifest: Manifest | None) -> SourceOptions:
    """The source options ``verify`` lowers the source with: those given, else what the artifact's build
    recorded (the exporter; the inputs, which a PyTorch module's example inputs default to) so the source is
    lowered as the build lowered it."""
    options = source_options(given)
    if manifest is None:
        return options
    options.shape_ranges = dict(manifest.build.shape_ranges)
    exporter = manifest.build.source.get("exporter")
    if options.exporter is None and exporter in RECORDED_EXPORTERS:
        options.exporter = exporter
    options.recorded_inputs = [TensorSpec(spec["name"], None if spec.get("shape") is None else tuple(spec["shape"]),
                                          np.dtype(spec.get("dtype", "float32"))) for spec in manifest.build.inputs]
    return options


def check_same_interface(source: Model, runner: Runner) -> None:
    """Refuse to compare an artifact with a model it was not built from (its inputs/outputs differ)."""
    for kind, ours, theirs in (("inputs", source.inputs, runner.inputs), ("outputs", source.outputs, runner.outputs)):
        if sorted(s.name for s in ours) != sorted(s.name for s in theirs):
            raise UserInputError(f"the artifact does not match the source model: source {kind} "
                                 f"{', '.join(s.describe() for s in ours)}; artifact {kind} "
                                 f"{', '.join(s.describe() for s in theirs)}",
                                 hint="give the source model the artifact was built from")


def for_runner(runner: Runner, feeds: Feeds) -> Feeds:
    """The source's feeds in the artifact's input dtypes (an fp16 build may take float16 inputs); sequences
    (lists) pass as they are."""
    specs = {spec.name: spec for spec in runner.inputs}
    return {name: conform(specs[name], value) if name in specs and isinstance(value, np.ndarray) else value
            for name, value in feeds.items()}


def _stack(results: list[Feeds]) -> Feeds:
    """The samples' outputs as one batch (joined along the batch axis: an output keeps its rank, which tells class
    scores from other outputs); scalars stacked."""
    return {name: np.concatenate(values) if values[0].ndim else np.stack(values)
            for name in results[0] for values in [[np.asarray(r[name]) for r in results]]}


class FinalCheckFailed(AccuracyError):
    """The artifact as written does not load, run, or match the source model (the build bisects the passes)."""


@dataclass
class FinalCheck:
    """The check every build ends with: the staged artifact, loaded by its target's own runner, against the
    source graph (before any pass) on the build's examples. Called by ``Target.compile`` before the commit."""

    examples: Examples
    reference: list[Feeds]  # the source graph's outputs on the examples
    reference_seconds: float  # what computing them cost (part of the check's cost)

    def __call__(self, load: Callable[[], Runner], target: str, precision: str) -> dict[str, Any]:
        start = time.perf_counter()
        try:
            runner = load()
            got = [runner.run(for_runner(runner, feeds)) for feeds in self.examples.feeds]
        except TargetUnavailableError as exc:  # the artifact may be fine: what runs it is missing (cuda-python)
            raise TargetUnavailableError(f"the final check cannot run the {target} artifact here: {exc.message}",
                                         hint=f"{exc.hint or 'install what it names'}; or build with "
                                              "--no-final-check") from exc
        except Exception as exc:  # whatever the runtime raises: the artifact is unusable, never exit 0
            raise FinalCheckFailed(f"the {target} artifact does not load or run in its runtime "
                                   f"({one_line(exc)})") from exc
        try:  # per example, not stacked: a sequence output may have another length on each
            comparisons = [c for ref, out in zip(self.reference, got, strict=True) for c in compare_outputs(ref, out)]
        except InferCompileError as exc:  # an output missing or of another shape
            raise FinalCheckFailed(f"the {target} artifact's outputs do not match the source's: {exc.message}") from exc
        failures = out_of_tolerance(comparisons, TOLERANCES[precision])
        if failures:
            raise FinalCheckFailed(f"the {target} artifact differs from the source model beyond the {precision} "
                                   f"tolerance on {self.examples.origin}: {failures[0]}")
        return {"status": "passed", "seconds": round(self.reference_seconds + time.perf_counter() - start, 4),
                "precision": precision, **self.examples.to_json(), "figures": summarize(comparisons)}
