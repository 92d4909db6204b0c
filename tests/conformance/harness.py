"""Run conformance cases through the compiler and classify each one.

A case is first run from its original file by the sweep's runtime: cases the runtime itself cannot run
correctly are ``cannot`` (not the compiler's failure). The rest are built like
``infer-compile MODEL --target T [--fp16|--int8 --calib synthetic] --no-tune --no-cache --inputs CASE.npz``
(the case's own inputs; sequences and strings, which no .npz holds without pickle, reach the build in process)
and end as:

- ``pass``: the artifact loads and its outputs match (fp32: ONNX's backend runner, rtol 1e-3, atol 1e-7;
  fp16/int8: the precision's tolerance against the runtime's outputs on the original);
- ``refused``: a clean InferCompileError (exit 1, 3 or 4) with a one-line reason;
- ``wrong``: exit 0 but different outputs;
- ``unloadable``: exit 0 but the runtime cannot load or run the artifact;
- ``crash``: an internal error (exit 70 or an unexpected exception).
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from tests.conformance.cases import Case, load_data

STATUSES = ("cannot", "skipped", "pass", "refused", "wrong", "unloadable", "crash")
# ONNX's backend runner compares with these (onnx.backend.test.runner, TestCase defaults).
RTOL, ATOL = 1e-3, 1e-7
# Artifacts are written to memory-backed storage where there is some: thousands of small builds.
SCRATCH = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None


@dataclass(frozen=True)
class Sweep:
    """One configuration every case is built with."""

    name: str
    target: str
    precision: str = "fp32"

    @property
    def runtime(self) -> str:
        """The runtime that judges whether the original model runs at all."""
        return "openvino" if self.target == "openvino" else "onnxruntime"

    def build_args(self) -> list[str]:
        """The same build as command-line options."""
        flags = {"fp16": ["--fp16"], "int8": ["--int8", "--calib", "synthetic"]}.get(self.precision, [])
        return ["--target", self.target, *flags, "--no-tune", "--no-cache"]


SWEEPS = {s.name: s for s in (Sweep("onnxruntime-fp32", "onnxruntime"), Sweep("openvino-fp32", "openvino"),
                              Sweep("onnxruntime-fp16", "onnxruntime", "fp16"),
                              Sweep("onnxruntime-int8", "onnxruntime", "int8"))}


@dataclass(frozen=True)
class Outcome:
    case: str
    suite: str
    status: str
    detail: str = ""
    seconds: float = 0.0


def run_case(case: Case, sweep: Sweep) -> Outcome:
    """Classify one case under ``sweep``; never raises."""
    start = time.perf_counter()
    try:
        status, detail = _classify(case, sweep)
    except Exception as exc:  # a harness-level failure still gets counted, visibly
        status, detail = "crash", f"harness: {_one_line(exc)}"
    return Outcome(case.id, case.suite, status, detail, time.perf_counter() - start)


def _classify(case: Case, sweep: Sweep) -> tuple[str, str]:
    proto = onnx.load_model(str(case.model))
    feeds, expected = load_data(case, proto)
    if sweep.precision != "fp32" and not any(isinstance(v, np.ndarray) and v.dtype == np.float32
                                             for v in feeds.values()):
        return "skipped", "no float32 input"
    try:
        original = dict(zip([o.name for o in proto.graph.output], _run_original(sweep, case.model, feeds),
                            strict=True))
        if problem := _mismatch(expected, list(original.values()), RTOL, ATOL):
            return "cannot", f"{sweep.runtime} on the original: {problem}"
    except Exception as exc:
        return "cannot", f"{sweep.runtime} on the original: {_one_line(exc)}"
    with tempfile.TemporaryDirectory(prefix="conformance-", dir=SCRATCH) as tmp:
        given = _inputs_file(feeds, Path(tmp) / "inputs.npz") or feeds
        built = _build(case.model, sweep, Path(tmp) / f"model{'.xml' if sweep.target == 'openvino' else '.onnx'}",
                       given)
        if isinstance(built, tuple):
            return built
        try:
            from infer_compile.targets import load_artifact

            runner = load_artifact(built)
            outputs = runner.run(_in_artifact_dtypes(feeds, runner.inputs))
        except Exception as exc:
            return "unloadable", _one_line(exc)
    if missing := [name for name in original if name not in outputs]:
        return "wrong", f"outputs missing: {', '.join(missing)}"
    got = [outputs[name] for name in original]
    if sweep.precision == "fp32":
        problem = _mismatch(expected, got, RTOL, ATOL)
    else:
        problem = _precision_mismatch(list(original.values()), got, sweep.precision)
    return ("wrong", problem) if problem else ("pass", "")


def _in_artifact_dtypes(feeds: dict[str, Any], specs: list[Any]) -> dict[str, Any]:
    """Float inputs in the float type the artifact takes (an fp16 build without --keep-io-types takes float16),
    as `infer-compile verify` feeds them."""
    dtypes = {spec.name: spec.dtype for spec in specs}
    return {name: value.astype(dtypes[name]) if isinstance(value, np.ndarray) and value.dtype.kind == "f"
            and name in dtypes and dtypes[name].kind == "f" else value for name, value in feeds.items()}


def _inputs_file(feeds: dict[str, Any], path: Path) -> Path | None:
    """The case's inputs as `--inputs FILE.npz` (what a user with real data passes, so the build's final check
    runs on data the model accepts); None when they are not all plain arrays (sequences, strings)."""
    if not all(isinstance(v, np.ndarray) and v.dtype.kind in "biufc" for v in feeds.values()):
        return None
    np.savez(path, **feeds)
    return path


def _build(model: Path, sweep: Sweep, output: Path, inputs: Path | dict[str, Any]) -> Path | tuple[str, str]:
    """The artifact path, or (status, reason) when the build did not exit 0."""
    from infer_compile.app.build import BuildOptions, compile_model
    from infer_compile.calibration.options import calibration_settings
    from infer_compile.core.errors import ExitCode, InferCompileError

    try:
        # The CLI's own reading of --int8 --calib synthetic, so both paths build the same thing.
        calibration = calibration_settings({"calib": "synthetic"} if sweep.precision == "int8" else {})
        options = BuildOptions(target=sweep.target, precision=sweep.precision, output=output, cache_dir=None,
                               tune_time=0.0, calibration=calibration, inputs=inputs)
        return compile_model(model, options).artifact
    except InferCompileError as exc:
        if exc.exit_code == ExitCode.INTERNAL:
            return "crash", _one_line(exc)
        return "refused", str(exc)
    except Exception as exc:
        return "crash", _one_line(exc)


def _run_original(sweep: Sweep, model: Path, feeds: dict[str, Any]) -> list[Any]:
    if sweep.runtime == "openvino":
        import openvino as ov

        compiled = ov.Core().compile_model(str(model), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        result = compiled(feeds)
        return [result[out] for out in compiled.outputs]
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _mismatch(expected: list[Any], got: list[Any], rtol: float, atol: float) -> str:
    """Why ``got`` differs from ``expected`` as ONNX's backend runner judges it ("" when it does not)."""
    if len(expected) != len(got):
        return f"{len(got)} outputs, expected {len(expected)}"
    for index, (ref, out) in enumerate(zip(expected, got, strict=True)):
        if isinstance(ref, list) or isinstance(out, list):
            if not isinstance(ref, list) or not isinstance(out, list):
                return f"output {index}: {type(out).__name__}, expected {type(ref).__name__}"
            if problem := _mismatch(ref, out, rtol, atol):
                return f"output {index}: {problem}"
            continue
        if ref is None or out is None:
            if ref is not out:
                return f"output {index}: {out!r} (optional), expected {ref!r}"
            continue
        ref, out = np.asarray(ref), np.asarray(out)
        if ref.shape != out.shape:
            return f"output {index}: shape {out.shape}, expected {ref.shape}"
        if ref.dtype != out.dtype:
            return f"output {index}: dtype {out.dtype}, expected {ref.dtype}"
        if ref.dtype == object or ref.dtype.kind in "SU":
            equal = np.array_equal(ref, out)
        else:
            as_float = ref.dtype.kind == "V" or ref.dtype.name.startswith(("bfloat", "float8", "float4"))
            r, o = (ref.astype(np.float32), out.astype(np.float32)) if as_float else (ref, out)
            equal = bool(np.allclose(o, r, rtol=max(rtol, 2**-6) if ref.dtype.name == "bfloat16" else rtol,
                                     atol=atol, equal_nan=True))
        if not equal:
            return f"output {index}: values differ beyond rtol {rtol:g}, atol {atol:g}"
    return ""


def _precision_mismatch(reference: list[Any], got: list[Any], precision: str) -> str:
    """fp16/int8 artifacts against the runtime's own outputs on the original, at the precision's tolerance."""
    from infer_compile.core.numerics import TOLERANCES, compare_output, out_of_tolerance

    tolerance = TOLERANCES[precision]
    for index, (ref, out) in enumerate(zip(_flatten(reference), _flatten(got), strict=False)):
        if ref is None or out is None or not np.issubdtype(np.asarray(ref).dtype, np.number):
            continue
        ref = np.asarray(ref)
        out = np.asarray(out).astype(ref.dtype) if np.asarray(out).dtype != ref.dtype else np.asarray(out)
        if out.shape != ref.shape:
            return f"output {index}: shape {out.shape}, expected {ref.shape}"
        if problems := out_of_tolerance([compare_output(str(index), ref, out)], tolerance):
            return problems[0]
    return ""


def _flatten(values: list[Any]) -> list[Any]:
    return [leaf for v in values for leaf in (_flatten(v) if isinstance(v, list) else [v])]


def _one_line(exc: BaseException) -> str:
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {text[:300]}"


def _quiet() -> None:
    """Keep library chatter (graphsurgeon's folding notes, onnxruntime's warnings) out of the table."""
    import onnx_graphsurgeon as gs
    import onnxruntime as ort

    gs.logger.G_LOGGER.severity = gs.logger.G_LOGGER.ERROR
    ort.set_default_logger_severity(3)


def _run_chunk(args: tuple[list[Case], Sweep]) -> list[Outcome]:
    cases, sweep = args
    _quiet()
    return [run_case(case, sweep) for case in cases]


def run_all(cases: list[Case], sweep: Sweep, jobs: int | None = None) -> list[Outcome]:
    """Every case under ``sweep``, on ``jobs`` worker processes (default: the CPU count)."""
    jobs = jobs or os.cpu_count() or 1
    if jobs == 1:
        return _run_chunk((cases, sweep))
    # Small interleaved chunks: neighbouring cases (same op) cost alike, so the workers stay balanced.
    chunks = [(cases[i::jobs * 8], sweep) for i in range(jobs * 8)]
    # spawn, not fork: the parent may hold onnxruntime thread pools.
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        outcomes = [outcome for chunk in pool.map(_run_chunk, chunks) for outcome in chunk]
    order = {case.id: i for i, case in enumerate(cases)}
    return sorted(outcomes, key=lambda o: order[o.case])


def table(outcomes: Iterable[Outcome], sweep: Sweep) -> str:
    """A markdown table: per suite and in total, how many cases ended how."""
    outcomes = list(outcomes)
    suites = list(dict.fromkeys(o.suite for o in outcomes))
    header = ["suite", "cases", f"{sweep.runtime} cannot", *STATUSES[1:], "pass rate"]
    rows = [header, ["---"] * len(header)]
    for suite, group in [*((s, [o for o in outcomes if o.suite == s]) for s in suites), ("**all**", outcomes)]:
        counts = Counter(o.status for o in group)
        runnable = len(group) - counts["cannot"] - counts["skipped"]
        rate = f"{100 * counts['pass'] / runnable:.1f}%" if runnable else "-"
        rows.append([suite, str(len(group)), *(str(counts[s]) for s in STATUSES), rate])
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def pass_rate(outcomes: list[Outcome]) -> float:
    """Passed cases over the cases the runtime runs correctly from the original."""
    counts = Counter(o.status for o in outcomes)
    runnable = len(outcomes) - counts["cannot"] - counts["skipped"]
    return counts["pass"] / runnable if runnable else 1.0
