"""``--precision auto``: build every precision the target runs, keep the fastest that is accurate enough.

Each candidate (fp32, bf16, fp16, int8 where the target takes it; int8 only with calibration data) is built
into a private folder beside the output, with its final check; the ones that build are loaded and timed
interleaved on this machine (round-robin blocks, as autotuning times), and judged by their final check's
figures vs the source on held-out samples. The fastest whose figures meet ``--accuracy-budget`` (without
one: that passes its precision's tolerance) is built again to the output, and its manifest records the
whole table (``precision_choice``). A candidate never wins on noise: it must beat fp32 by the margin that
changes precision in autotuning, in most interleaved blocks.
"""

from __future__ import annotations

import shutil
import statistics
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

from infer_compile.app.build import BuildOptions, BuildResult, compile_model, resolve_target
from infer_compile.app.verification import for_runner
from infer_compile.core.artifacts import atomic_write_text, owned_tempname
from infer_compile.core.budget import parse_budget
from infer_compile.core.errors import AccuracyError, UnsupportedError, UserInputError
from infer_compile.core.manifest import manifest_path, manifest_text, written_manifest
from infer_compile.core.numerics import random_inputs
from infer_compile.passes.autotune import PRECISION_MARGIN, consistent_winner, measure
from infer_compile.targets import load_artifact

ORDER = ("fp32", "bf16", "fp16", "int8")
# Options that only some precisions read: given with auto, they go to those candidates only.
PRECISION_ONLY = ("accuracy_budget", "fallback_limit")
TIMING_SECONDS = 5.0


def candidates(options: BuildOptions) -> list[str]:
    target, _ = resolve_target(options.target)
    return [p for p in ORDER if p in target.precisions and (p != "int8" or options.calibration is not None)]


def compile_auto(source: Path, options: BuildOptions) -> BuildResult:
    """Build ``source`` at the fastest accurate precision; its manifest holds the table it was chosen from."""
    if not options.final_check:  # its figures are how each candidate's accuracy is known
        raise UserInputError("--precision auto judges each precision by its final check, which is off",
                             hint="drop --no-final-check, or choose a precision yourself")
    budget_text = options.pass_options.get("accuracy_budget")
    budget = parse_budget(budget_text) if budget_text else None
    output = Path(options.output) if options.output else source.parent
    scratch = owned_tempname(output.parent if output.suffix else output, ".precision-auto-")
    scratch.mkdir(parents=True)
    rows: list[dict[str, Any]] = []
    try:
        built = {}
        for precision in candidates(options):
            row: dict[str, Any] = {"precision": precision}
            rows.append(row)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # a candidate's warnings are for its own build, not this one
                    result = compile_model(source, _candidate(options, precision, scratch / precision))
            except (AccuracyError, UnsupportedError) as exc:
                row["refused"] = str(exc).splitlines()[0]
                continue
            figures = (result.manifest.final_check or {}).get("figures") or {}
            row.update({k: figures.get(k) for k in ("cosine", "max_abs", "top1_agreement")})
            row["meets_budget"] = not budget.check(figures) if budget and figures else True
            built[precision] = result.artifact  # not the result: it holds the loaded source model
        timed = [r for r in rows if r["precision"] in built and r["meets_budget"]]
        _time(timed, built, options.tune_time or TIMING_SECONDS)
        chosen = _choose(timed)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for row in rows:
        row["chosen"] = row["precision"] == chosen
    if chosen is None:
        raise AccuracyError("--precision auto: no precision builds within the accuracy budget",
                            hint="relax --accuracy-budget, or give more representative --calib data")
    return _recorded(compile_model(source, _candidate(options, chosen, options.output)), rows)


def _candidate(options: BuildOptions, precision: str, output: Path | str | None) -> BuildOptions:
    """``options`` for one candidate: options only other precisions read are dropped; no cache for scratch builds."""
    keep = precision in ("int8", "fp16") and options.calibration is not None  # the fallback needs samples
    passes = {k: v for k, v in options.pass_options.items() if keep or k not in PRECISION_ONLY}
    scratch = output is not None and output != options.output
    return replace(options, precision=precision, pass_options=passes, tune_time=0.0 if scratch else options.tune_time,
                   output=f"{output}/" if scratch else output, cache_dir=None if scratch else options.cache_dir)


def _time(rows: list[dict[str, Any]], built: dict[str, Path], seconds: float) -> None:
    """Median ms per candidate, timed round-robin; the per-block wins decide (``consistent_winner``)."""
    if not rows:
        return
    runners = [load_artifact(built[r["precision"]]) for r in rows]
    feeds = random_inputs(runners[0].inputs, seed=0)
    calls = [lambda runner=runner: runner.run(for_runner(runner, feeds)) for runner in runners]
    times = measure(calls, seconds)
    for row, latencies in zip(rows, times, strict=True):
        row["median_ms"] = round(statistics.median(latencies) * 1000, 4)
        row["latencies"] = latencies
    for runner in runners:
        runner.close()


def _choose(rows: list[dict[str, Any]]) -> str | None:
    """The first timed row (the most accurate precision) unless a faster one consistently beats it."""
    if not rows:
        return None
    winner = consistent_winner([r.pop("latencies") for r in rows], PRECISION_MARGIN)
    return str(rows[winner]["precision"])


def _recorded(result: BuildResult, rows: list[dict[str, Any]]) -> BuildResult:
    """``result`` with the decision table added to its manifest, also the one written beside the artifact."""
    manifest = replace(written_manifest(result.artifact), precision_choice=rows)
    atomic_write_text(manifest_path(result.artifact), manifest_text(manifest))
    return replace(result, manifest=manifest)
