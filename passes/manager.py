"""Runs an ordered list of passes: timing, node counts, optional per-pass numeric verification."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from infer_compile.core.errors import (
    AccuracyError,
    InferCompileError,
    PassError,
    UnsupportedError,
    UserInputError,
    one_line,
)
from infer_compile.core.ir import Model
from infer_compile.core.numerics import (
    TOLERANCES,
    Feeds,
    compare_outputs,
    in_dtypes,
    out_of_tolerance,
    random_inputs,
    run_onnx,
    summarize,
)
from infer_compile.passes.base import Pass, PassContext, PassRecord, PassResult


@dataclass
class PipelineResult:
    """What a pipeline run did: a record per pass, the manifest sections the passes returned (merged in pass
    order), and the target options they chose (autotune's settings)."""

    records: list[PassRecord]
    manifest: dict[str, dict[str, Any]] = field(default_factory=dict)
    target_options: dict[str, Any] = field(default_factory=dict)

    def add(self, result: PassResult) -> None:
        for section, fields in result.manifest.items():
            self.manifest[section] = {**self.manifest.get(section, {}), **fields}
        self.target_options.update(result.target_options)


ProgressHook = Callable[[Pass, int, int], None]


class PassBrokeOutputs(AccuracyError):
    """A pass changed the outputs beyond tolerance, or left a graph that does not run (--verify-passes)."""

    def __init__(self, pass_name: str, message: str, hint: str) -> None:
        super().__init__(message, hint=hint)
        self.pass_name = pass_name


class PassManager:
    """Runs ``passes`` in order on a model.

    With ``verify=True``, after each pass that changed the graph, the graph before and after
    are run on the same inputs (``feeds``, else seeded random ones) with onnxruntime (optimizations
    off); the first pass whose outputs differ beyond its precision's tolerance stops the build (exit
    code 3). With ``against_source`` (a precision), every pass is judged instead against the graph
    before the first pass, by that precision's tolerance: the first pass after which the model no
    longer matches its source (how the build finds the pass that broke a failed final check).
    """

    def __init__(self, passes: Sequence[Pass], *, verify: bool = False, seed: int = 0,
                 progress: ProgressHook | None = None, feeds: Feeds | None = None,
                 reference: Feeds | None = None, against_source: str | None = None) -> None:
        self.passes = list(passes)
        self.verify = verify or against_source is not None
        self.seed = seed
        self.progress = progress
        self.feeds = feeds
        self.reference = reference
        self.against_source = against_source

    def run(self, model: Model, ctx: PassContext) -> PipelineResult:
        records: list[PassRecord] = []
        outcome = PipelineResult(records)
        earlier: list[PassResult] = []
        ran: list[str] = []
        feeds, reference = self.feeds, self.reference
        if self.verify:
            if feeds is None:
                feeds = random_inputs(model.inputs, seed=self.seed, dims=ctx.shape_overrides)
            if reference is None:
                reference = run_onnx(model, feeds)
        for index, p in enumerate(self.passes):
            if self.progress:
                self.progress(p, index, len(self.passes))
            missing = sorted(p.requires - ctx.provides(model))
            if missing:
                records.append(PassRecord(p.name, "skipped", nodes_before=model.node_count,
                                          nodes_after=model.node_count, reason="needs " + ", ".join(missing)))
                continue
            before = model.node_count
            start = time.perf_counter()
            try:
                # A pass sees the capabilities it declares, no others: an undeclared one it tested for would
                # be silently absent, so tests catch it (and tests/test_capabilities.py checks the vocabulary).
                seen = replace(ctx, earlier=tuple(earlier), capabilities=ctx.capabilities & (p.requires | p.uses))
                result = p.run(model, seen)
            except (KeyboardInterrupt, UserInputError, UnsupportedError, AccuracyError):
                raise  # bad options/data, what a pass refuses and unmet budgets are not a pass failure
            except Exception as exc:
                raise PassError(p.name, ran, exc) from exc
            record = PassRecord(p.name, "applied" if result.modified else "unchanged", dict(result.counts),
                                time.perf_counter() - start, before, model.node_count, misses=result.misses)
            ran.append(p.name)
            earlier.append(result)
            outcome.add(result)
            if self.verify and result.modified:
                assert feeds is not None and reference is not None
                after, record.verification = self._check(p, model, feeds, reference)
                reference = reference if self.against_source else after
            records.append(record)
        return outcome

    def _check(self, p: Pass, model: Model, feeds: Feeds, reference: Feeds) -> tuple[Feeds, dict]:
        try:
            # Precision passes may retype graph inputs (fp16 without --keep-io-types): feed the same
            # values in the dtype the graph now takes.
            # Against the source (finding what broke an artifact), graphs also go through onnxruntime's
            # optimizer, as deployed artifacts do: a graph only the optimizer rejects is broken too.
            after = run_onnx(model, in_dtypes(feeds, model.inputs), optimize=self.against_source is not None)
        except InferCompileError:
            raise
        except Exception as exc:
            raise PassBrokeOutputs(p.name, f"--verify-passes: the graph after pass '{p.name}' does not run: "
                                   f"{one_line(exc)}",
                                   hint=f"skip it with --skip-pass {p.name} and report the model") from exc
        try:
            comparisons = compare_outputs(reference, after)
        except AccuracyError as exc:  # an output gone or reshaped
            raise PassBrokeOutputs(p.name, f"--verify-passes: after pass '{p.name}', {exc.message}",
                                   hint=f"build without it using --skip-pass {p.name}") from exc
        precision = self.against_source or p.precision
        failures = out_of_tolerance(comparisons, TOLERANCES[precision])
        if failures:
            raise PassBrokeOutputs(p.name, f"--verify-passes: pass '{p.name}' changed the outputs beyond {precision} "
                                   f"tolerance ({failures[0]})", hint=f"build without it using --skip-pass {p.name}")
        return after, summarize(comparisons)
