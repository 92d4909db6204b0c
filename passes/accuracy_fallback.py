"""Accuracy vs fp32 after a precision pass, and the accuracy-aware fallback (``--accuracy-budget``).

The reduced-precision graph and the fp32 graph it came from run on the held-out calibration
samples. When they miss ``--accuracy-budget``, or without one the precision's tolerance (what the build's final
check will require: a plain ``--int8`` build should pass it, not fail after minutes of work), the candidate
layers are ranked by the error each adds (``layer_sensitivity``: one run of both graphs); the most
sensitive layers then return to fp32 in doubling groups (1, 2, 4, ...), and the count is bisected
down to the fewest that pass. If it still fails after
``--fallback-limit`` (default half) of the layers, the build stops with exit code 3 and the best figure;
``--fallback-limit 0`` keeps every layer at the reduced precision (the final check then judges it).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from infer_compile.calibration.collect import first_line, ort_errors, samples_do_not_fit
from infer_compile.calibration.data import CalibrationData
from infer_compile.core.budget import METRICS, Bound, Budget, parse_budget
from infer_compile.core.capabilities import Capability
from infer_compile.core.errors import AccuracyError
from infer_compile.core.ir import Model
from infer_compile.core.numerics import (
    TOLERANCES,
    Feeds,
    OutputComparison,
    compare_outputs,
    in_dtypes,
    is_class_scores,
    ort_session,
    summarize,
    within,
)
from infer_compile.passes.base import Pass, PassContext, PassResult
from infer_compile.passes.layer_sensitivity import rank_layers
from infer_compile.passes.options import ACCURACY_BUDGET, FALLBACK_LIMIT
from infer_compile.passes.precision_state import PrecisionState, node_precisions

if TYPE_CHECKING:
    import onnxruntime as ort



class HeldOutEvaluator:
    """Figures (max abs, cosine, top-1 agreement) of a model vs the fp32 reference on held-out samples, judged
    sample by sample as the build's final check judges the artifact: a fallback that meets the tolerance over all
    samples pooled could still leave one sample the final check refuses. One sample runs at a time (batching the
    held-out samples of a 640x640 detector multiplied its activation memory)."""

    def __init__(self, reference: Model, samples: Iterable[Feeds], precision: str = "int8",
                 known: Iterable[tuple[Feeds, Feeds]] = ()) -> None:
        self.samples = samples  # re-iterable: read again for every model evaluated, not kept
        self.precision = precision
        self.failed_last: int | None = None  # the sample that last failed runs first: it tends to fail again
        self.expected = self._reference_outputs(reference, samples, list(known))

    @classmethod
    def _reference_outputs(cls, reference: Model, samples: Iterable[Feeds], known: list[tuple[Feeds, Feeds]]
                           ) -> list[Feeds]:
        """The fp32 reference's outputs on ``samples``: taken from ``known`` (feeds, outputs) pairs where the
        build already ran the source graph on the same sample in the same place (the final check's reference on
        the first held-out samples: the same fp32 numbers up to reassociation), else computed as numerics.py
        defines the reference: unoptimized (also no pre-packed weight copies)."""
        expected: list[Feeds] = []
        session = None
        try:
            for index, feeds in enumerate(samples):
                if index < len(known) and _same_feeds(known[index][0], feeds):
                    expected.append(known[index][1])
                    continue
                session = session or ort_session(reference, arena=False)
                expected.append(cls._run(session, reference, feeds))
        except ort_errors() as exc:
            raise samples_do_not_fit(exc) from exc
        return expected

    @staticmethod
    def _run(session: ort.InferenceSession, model: Model, feeds: Feeds) -> Feeds:
        names = [o.name for o in session.get_outputs()]
        # fp16 builds may take half-precision inputs
        return dict(zip(names, session.run(names, in_dtypes(feeds, model.inputs)), strict=True))

    def _in_order(self) -> Iterator[tuple[int, Feeds]]:
        first = self.failed_last
        if first is not None:
            yield first, next(itertools.islice(self.samples, first, None))
        yield from ((i, feeds) for i, feeds in enumerate(self.samples) if i != first)

    def figures(self, model: Model, *, until_refused: bool = False) -> dict:
        """The worst sample's figures (top-1 agreement: over all samples, a rate), and ``within_tolerance``: whether
        every output of every sample is inside the precision's tolerance (what the final check will require).

        ``until_refused``: stop at the first sample outside the tolerance (the verdict is known; ``complete`` is
        then False and the figures are that sample's). The model runs optimized like the deployed artifact, so
        int8 figures come from ORT's real int8 kernels."""
        tolerance = TOLERANCES[self.precision]
        got: dict[int, Feeds] = {}
        compared: dict[int, list[OutputComparison]] = {}
        try:
            session = ort_session(model, optimize=True, arena=False)
            for i, feeds in self._in_order():
                got[i] = self._run(session, model, feeds)
                compared[i] = compare_outputs(self.expected[i], got[i])
                if until_refused and not within(compared[i], tolerance):
                    self.failed_last = i
                    return {**summarize(compared[i]), "within_tolerance": False, "complete": False}
        except ort_errors() as exc:  # the fp32 reference ran on these samples: the rewritten graph is at fault
            raise AccuracyError(f"the {self.precision} graph does not run in onnxruntime on the held-out "
                                f"samples ({first_line(exc)})",
                                hint=f"build without --{self.precision} and report the model") from exc
        per_sample = [c for i in range(len(self.expected)) for c in compared[i]]
        top1 = _pooled_top1(self.expected, [got[i] for i in range(len(got))])
        return {**summarize(per_sample), "top1_agreement": top1,
                "within_tolerance": within(per_sample, tolerance), "complete": True}


def _same_feeds(a: Feeds, b: Feeds) -> bool:
    return a.keys() == b.keys() and all(
        isinstance(a[k], np.ndarray) and isinstance(b[k], np.ndarray) and np.array_equal(a[k], b[k]) for k in a)


def _pooled_top1(expected: list[Feeds], got: list[Feeds]) -> float | None:
    """Top-1 agreement of the class-score outputs over the rows of every sample (a rate), None without any. Only
    those outputs are joined (a 640x640 detector's maps on 6 samples would be 2.4M values compared for nothing)."""
    names = [name for name, value in expected[0].items() if isinstance(value, np.ndarray)
             and is_class_scores(name, value)]
    if not names:
        return None
    return summarize(compare_outputs(_joined(expected, names), _joined(got, names)))["top1_agreement"]


def _joined(runs: list[Feeds], names: list[str]) -> Feeds:
    """Each output in ``names`` over all samples: along the batch axis when the samples agree beyond it, else
    flattened (outputs whose shape depends on the values, e.g. NonZero)."""
    joined = {}
    for name in names:
        arrays = [np.atleast_1d(r[name]) for r in runs]
        if all(a.shape[1:] == arrays[0].shape[1:] for a in arrays):
            joined[name] = np.concatenate(arrays)
        else:
            joined[name] = np.concatenate([a.ravel() for a in arrays])
    return joined


def score(figures: dict, budget: Budget | None) -> float:
    """Higher is better: the budget's first metric, negated for upper bounds (max-abs<=...); cosine without one."""
    bound = budget.bounds[0] if budget else Bound("cosine", ">=", 1.0)
    value = figures.get(METRICS[bound.metric])
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return -math.inf
    return float(value) if bound.op.startswith(">") else -float(value)


def describe(figures: dict) -> str:
    parts = [f"cosine {figures['cosine']:.6f}", f"max abs {figures['max_abs']:.4g}"]
    if figures.get("top1_agreement") is not None:
        parts.append(f"top-1 agreement {figures['top1_agreement']:.4f}")
    return ", ".join(parts)


def refuse_nan(figures: dict, evaluator: HeldOutEvaluator, precision: str) -> None:
    """A NaN figure means some output is NaN/Inf: no accuracy is known, so the build must not pass."""
    if not any(isinstance(v, float) and math.isnan(v) for v in figures.values()):
        return
    if all(np.isfinite(v).all() for run in evaluator.expected for v in run.values() if v.dtype.kind in "fc"):
        culprit, hint = (f"the {precision} model gives NaN/Inf outputs where fp32 does not",
                         "keep the overflowing layers in fp32 (--exclude-nodes, --fp16-block)")
    else:
        culprit, hint = ("the fp32 model itself gives NaN/Inf outputs on them",
                         "calibrate with inputs on which the model gives finite outputs")
    raise AccuracyError(f"accuracy vs fp32 on the held-out calibration samples is NaN: {culprit}", hint=hint)


def _meets(figures: dict, budget: Budget | None) -> bool:
    """The user's budget (if any) holds and the outputs are within the precision's tolerance: a graph the build's
    final check would refuse is no fallback result."""
    return figures["within_tolerance"] and not (budget and budget.check(figures))


def _group_sizes(limit: int) -> list[int]:
    """How many of the ranked layers to try in fp32, in order: doubling up to ``limit``."""
    sizes, count = [], 1
    while count < limit:
        sizes.append(count)
        count *= 2
    return [*sizes, limit]


class AccuracyFallback(Pass):
    name = "accuracy-fallback"
    description = ("Measure accuracy vs fp32 on held-out samples; with --accuracy-budget, return the most "
                   "sensitive layers to fp32 until it holds.")
    requires = frozenset({Capability.CALIBRATION})
    options = (ACCURACY_BUDGET, FALLBACK_LIMIT)
    precision = "int8"  # it moves the graph between int8/fp16 and fp32: the loosest tolerance applies

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        data: CalibrationData = ctx.calibration
        state = ctx.handed(PrecisionState)
        if state is None:
            return PassResult()
        record: dict[str, Any] = {}
        result = PassResult(manifest={"quantization": record})
        known = zip(ctx.examples, ctx.example_outputs, strict=False)  # no outputs when no final check runs
        evaluator = HeldOutEvaluator(state.reference, data.split()[1], state.precision, known=known)
        figures = evaluator.figures(model)
        record["accuracy"] = figures
        refuse_nan(figures, evaluator, state.precision)
        text = ctx.option(ACCURACY_BUDGET)
        budget = parse_budget(text) if text else None
        if budget:
            record["fallback"] = {"budget": str(budget), "kept_fp32": []}
        if _meets(figures, budget) or not ctx.option(FALLBACK_LIMIT):
            return result
        record["fallback"] = {"budget": str(budget) if budget else f"the {state.precision} tolerance", "kept_fp32": []}
        kept, figures = self._fall_back(model, ctx, state, evaluator, budget, figures, record["fallback"])
        record["accuracy"] = figures
        record["fallback"]["kept_fp32"] = kept
        record["nodes"] = node_precisions(model)
        result.add("nodes_returned_to_fp32", len(kept))
        return result

    def _fall_back(self, model: Model, ctx: PassContext, state: PrecisionState, evaluator: HeldOutEvaluator,
                   budget: Budget | None, figures: dict, fallback: dict[str, Any]) -> tuple[list[str], dict]:
        ranked, added_error = rank_layers(state.reference, model, state.candidates, evaluator.samples)
        # The error each layer adds in INT8/FP16 (the report shows it per layer; larger = more sensitive).
        fallback["sensitivity"] = added_error
        limit = min(max(1, math.ceil(len(ranked) * ctx.option(FALLBACK_LIMIT))), len(ranked))
        best, best_count = figures, 0  # the best complete figures and how many layers were in fp32 for them

        def attempt(count: int) -> tuple[Model, dict] | None:
            """The graph with the ``count`` most sensitive layers in fp32 and its figures if it passes, else None."""
            nonlocal best, best_count
            candidate = state.build(state.user_excluded | frozenset(ranked[:count]))
            got = evaluator.figures(candidate, until_refused=True)
            if got["complete"] and score(got, budget) > score(best, budget):
                best, best_count = got, count
            return (candidate, got) if _meets(got, budget) else None

        failing = 0  # the most layers known to fail
        passing: tuple[int, Model, dict] | None = None  # count, graph and figures of the fewest known to pass
        for count in _group_sizes(limit):
            if passing is not None and count >= passing[0]:
                break
            if found := attempt(count):
                passing = count, *found
                break
            failing = count
            if count == 1 and limit > 2:
                # One layer was not enough: try the most the fallback may return before the counts in between. When
                # that fails too, fewer will not pass (the PP-OCRv4 detector was refused after 1, 2, 4, ... 32 of 64).
                if not (found := attempt(limit)):
                    break
                passing = limit, *found
        while passing is not None and passing[0] - failing > 1:  # bisect down to the fewest that pass
            count = (failing + passing[0]) // 2
            if found := attempt(count):
                passing = count, *found
            else:
                failing = count
        if passing is not None:
            count, candidate, got = passing
            model.graph = candidate.graph
            return ranked[:count], got
        goal = f"accuracy budget {budget}" if budget else f"the {state.precision} tolerance"
        failed = (budget.check(best) if budget else []) or [f"outputs outside the {state.precision} tolerance"]
        # Failing attempts stop at their first refused sample: the best complete figures are usually the fully
        # reduced graph's, and the message says which graph they are from.
        raise AccuracyError(
            f"{goal} not met with up to {min(limit, len(ranked))} of {len(ranked)} {state.precision} layers back in "
            f"fp32: best {describe(best)} with {best_count} back ({'; '.join(failed)})",
            hint=("relax the budget, " if budget else "build at a higher precision, ")
            + "give more representative --calib data, try another --calib-method, or raise --fallback-limit")
