"""``--precision auto``: build every precision the target runs, keep the fastest that is accurate enough.

Each candidate (fp32, bf16, fp16, int8 where the target takes it; int8 only with calibration data) is built
as an explicit ``--precision`` build would be (tuned, cached, final-checked) into a private folder beside the
output; the ones that build are loaded with their tuned settings and timed interleaved on this machine
(round-robin blocks, as autotuning times), and judged by their final check's figures vs the source on held-out
samples. The fastest whose figures meet ``--accuracy-budget`` (without one: that passes its precision's
tolerance) is moved into place, its manifest recording the whole table (``precision_choice``): the artifact
written is the one that was judged and timed, not a rebuild. A candidate never wins on noise: it must beat
fp32 by the margin that changes precision in autotuning, in most interleaved blocks.
"""

from __future__ import annotations

import os
import shutil
import statistics
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

from infer_compile.app.build import BuildOptions, BuildResult, compile_model, plan_build, resolve_target
from infer_compile.app.verification import for_runner
from infer_compile.core.artifacts import owned_tempname, staged_output
from infer_compile.core.budget import parse_budget
from infer_compile.core.errors import AccuracyError, UnsupportedError, UserInputError
from infer_compile.core.manifest import manifest_path, written_manifest
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
    precisions = candidates(options)
    final = plan_build(source, replace(options, precision=precisions[0])).output  # -o checked before any build
    scratch = owned_tempname(final.parent, ".precision-auto-")
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch.mkdir()
    rows: list[dict[str, Any]] = []
    try:
        built: dict[str, BuildResult] = {}
        said: dict[str, list[warnings.WarningMessage]] = {}  # shown for the candidate kept only
        for precision in precisions:
            row: dict[str, Any] = {"precision": precision}
            rows.append(row)
            try:
                with warnings.catch_warnings(record=True) as said[precision]:
                    warnings.simplefilter("always")
                    result = compile_model(source, _candidate(options, precision, scratch / precision / final.name))
            except (AccuracyError, UnsupportedError) as exc:
                row["refused"] = str(exc).splitlines()[0]
                continue
            figures = (result.manifest.final_check or {}).get("figures") or {}
            row.update({k: figures.get(k) for k in ("cosine", "max_abs", "top1_agreement")})
            row["meets_budget"] = not budget.check(figures) if budget and figures else True
            built[precision] = replace(result, source=None)  # the loaded source model is not kept for the rest
        timed = [r for r in rows if r["precision"] in built and r["meets_budget"]]
        _time(timed, {p: r.artifact for p, r in built.items()}, options.tune_time or TIMING_SECONDS)
        chosen = _choose(timed)
        for row in rows:
            row["chosen"] = row["precision"] == chosen
        if chosen is None:
            raise AccuracyError("--precision auto: no precision builds within the accuracy budget",
                                hint="relax --accuracy-budget, or give more representative --calib data")
        for message in said[chosen]:
            warnings.warn_explicit(message.message, message.category, message.filename, message.lineno)
        return _moved_into_place(built[chosen], final, rows)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _candidate(options: BuildOptions, precision: str, output: Path) -> BuildOptions:
    """``options`` for one candidate, as ``--precision PRECISION`` would give them (the same cache entry): options
    only other precisions read are dropped."""
    keep = precision in ("int8", "fp16") and options.calibration is not None  # the fallback needs samples
    passes = {k: v for k, v in options.pass_options.items() if keep or k not in PRECISION_ONLY}
    return replace(options, precision=precision, pass_options=passes, output=output)


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


def _moved_into_place(result: BuildResult, final: Path, rows: list[dict[str, Any]]) -> BuildResult:
    """The chosen candidate's files moved from the scratch folder to ``final`` (all at once, as a build commits),
    its manifest with the decision table."""
    manifest = replace(written_manifest(result.artifact), precision_choice=rows)
    with staged_output(final) as stage:
        for path in result.files:
            if path.name != manifest_path(result.artifact).name:
                os.replace(path, stage.sibling(path.name))
        stage.write_manifest(manifest)
        files = stage.commit()
    return replace(result, artifact=files[0], files=files, manifest=manifest)
