"""Runs an ordered list of passes: timing, node counts, optional per-pass numeric verification."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from infer_compile.errors import AccuracyError, InferCompileError, PassError, UserInputError
from infer_compile.ir import Model
from infer_compile.numerics import (
    TOLERANCES,
    Feeds,
    compare_outputs,
    random_inputs,
    run_onnx,
    summarize,
    within,
)
from infer_compile.passes.base import Pass, PassContext


@dataclass
class PassRecord:
    """One line of the build table / report."""

    name: str
    status: str  # "applied", "unchanged" or "skipped"
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    nodes_before: int = 0
    nodes_after: int = 0
    reason: str = ""  # why it was skipped
    verification: dict | None = None  # worst-case figures vs the graph before this pass

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v not in (None, "")}


ProgressHook = Callable[[Pass, int, int], None]


class PassManager:
    """Runs ``passes`` in order on a model.

    With ``verify=True``, after each pass that changed the graph, the graph before and after
    are run on the same seeded inputs with onnxruntime (optimizations off); the first pass
    whose outputs differ beyond its precision's tolerance stops the build (exit code 3).
    """

    def __init__(self, passes: Sequence[Pass], *, verify: bool = False, seed: int = 0,
                 progress: ProgressHook | None = None) -> None:
        self.passes = list(passes)
        self.verify = verify
        self.seed = seed
        self.progress = progress

    def run(self, model: Model, ctx: PassContext) -> list[PassRecord]:
        records: list[PassRecord] = []
        ran: list[str] = []
        feeds: Feeds | None = None
        reference: Feeds | None = None
        if self.verify:
            feeds = random_inputs(model.inputs, seed=self.seed, dims=ctx.shape_overrides)
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
                result = p.run(model, ctx)
            except (KeyboardInterrupt, UserInputError, AccuracyError):
                raise  # bad options/data and unmet accuracy budgets are the user's to fix, not a pass failure
            except Exception as exc:
                raise PassError(p.name, ran, exc) from exc
            record = PassRecord(p.name, "applied" if result.modified else "unchanged", dict(result.counts),
                                time.perf_counter() - start, before, model.node_count)
            ran.append(p.name)
            if self.verify and result.modified:
                assert feeds is not None and reference is not None
                reference, record.verification = self._check(p, model, feeds, reference)
            records.append(record)
        return records

    def _check(self, p: Pass, model: Model, feeds: Feeds, reference: Feeds) -> tuple[Feeds, dict]:
        try:
            # Precision passes may retype graph inputs (fp16 without --keep-io-types): feed the same
            # values in the dtype the graph now takes.
            dtypes = {spec.name: spec.dtype for spec in model.inputs}
            retyped = {name: value.astype(dtypes.get(name, value.dtype)) for name, value in feeds.items()}
            after = run_onnx(model, retyped)
        except InferCompileError:
            raise
        except Exception as exc:
            raise AccuracyError(f"--verify-passes: the graph after pass '{p.name}' does not run: {exc}",
                                hint=f"skip it with --skip-pass {p.name} and report the model") from exc
        comparisons = compare_outputs(reference, after)
        figures = summarize(comparisons)
        if not within(reference, comparisons, TOLERANCES[p.precision]):
            worst = max(comparisons, key=lambda c: c.max_abs)
            raise AccuracyError(
                f"--verify-passes: pass '{p.name}' changed output '{worst.name}' beyond {p.precision} "
                f"tolerance (max abs {worst.max_abs:.3g}, cosine {worst.cosine:.6f})",
                hint=f"build without it using --skip-pass {p.name}",
            )
        return after, figures
