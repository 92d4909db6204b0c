"""TFLite artifacts (LiteRT interpreter) vs ONNX Runtime fp32, side by side in one run.

    .venv/bin/python bench/tflite_target.py [--models mobilenetv2 minilm] [--out out/bench] [--seconds 20]

Per model, every artifact is built from the same ONNX export (our pipeline, then onnx2tf and
TFLiteConverter) and timed in the same process, interleaved (round-robin blocks, median latency,
batch 1, all CPUs): TFLite fp32, fp16 (half weights), INT8 dynamic range and INT8 full integer
(calibrated on 32 samples) against our ONNX Runtime fp32 artifact. Accuracy is the worst cosine
over held-out samples vs onnxruntime fp32 (MiniLM: of the mean-pooled sentence embedding).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import export_model, sample_inputs
from openvino_int8 import EVAL_SAMPLES, Row, print_table, score, write_calibration

from infer_compile.app.build import BuildOptions, compile_model
from infer_compile.calibration import CalibrationSettings
from infer_compile.core.errors import InferCompileError
from infer_compile.passes.autotune import measure
from infer_compile.targets import load_artifact

BASELINE = "onnxruntime fp32"
# label, target, precision, TFLite INT8 mode
BUILDS = (
    (BASELINE, "onnxruntime", "fp32", None),
    ("tflite fp32", "tflite", "fp32", None),
    ("tflite fp16 (half weights)", "tflite", "fp16", None),
    ("tflite int8 dynamic range", "tflite", "int8", "dynamic"),
    ("tflite int8 full integer", "tflite", "int8", "full"),
)


def build(label: str, source: Path, out: Path, target: str, precision: str, int8_mode: str | None,
          calib: Path) -> Row:
    start = time.perf_counter()
    options = BuildOptions(target=target, precision=precision, output=out, tune_time=0.0,
                           calibration=CalibrationSettings(calib) if int8_mode == "full" else None,
                           target_options={"int8_mode": int8_mode} if int8_mode else {})
    result = compile_model(source, options)
    return Row(label, load_artifact(result.artifact).run, None if label == BASELINE else BASELINE,
               build_s=time.perf_counter() - start)


def bench_model(name: str, out: Path, seconds: float) -> tuple[list[Row], list[str]]:
    """The timed rows, and the builds that failed (with their one-line error)."""
    source = export_model(name, out)
    calib = out / f"calib-{name}"
    write_calibration(name, calib)
    evals = sample_inputs(name, EVAL_SAMPLES, seed=1)
    art = out / f"tflite-artifacts-{name}"
    shutil.rmtree(art, ignore_errors=True)
    rows, failures = [], []
    for label, target, precision, mode in BUILDS:
        print(f"[{name}] building {label} ...", flush=True)
        suffix = ".tflite" if target == "tflite" else ".onnx"
        try:
            rows.append(build(label, source, art / f"{target}-{precision}-{mode or 'default'}{suffix}", target,
                              precision, mode, calib))
        except InferCompileError as exc:  # a model the route cannot convert is a result too
            failures.append(f"{name} {label}: {str(exc)[:200]}")
    reference = [rows[0].run(f) for f in evals]
    for row in rows:
        score(row, reference, evals)
    print(f"[{name}] timing {len(rows)} artifacts for {seconds:.0f} s ...", flush=True)
    times = measure([lambda row=row: row.run(evals[0]) for row in rows], seconds)
    for row, latencies in zip(rows, times, strict=True):
        row.median_ms = statistics.median(latencies) * 1000
    return rows, failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["mobilenetv2", "minilm"])
    parser.add_argument("--out", type=Path, default=Path("out/bench"))
    parser.add_argument("--seconds", type=float, default=20.0, help="timing budget per model")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    results = {name: bench_model(name, args.out, args.seconds) for name in args.models}
    for name, (rows, _) in results.items():
        print_table(name, rows)
    for failure in (f for _, failures in results.values() for f in failures):
        print(f"build failed: {failure}")


if __name__ == "__main__":
    main()
