"""TFLite artifacts through both routes (onnx2tf, litert-torch) vs ONNX Runtime fp32, side by side in one run.

    .venv/bin/python bench/tflite_target.py [--models mobilenetv2 minilm vit convnext gpt2] [--precisions fp32 int8]
                                            [--out out/bench] [--seconds 10]

Per model, every artifact is built from the same PyTorch module (a --from-python entry point below): ONNX Runtime
fp32 as the baseline, then each TFLite route (--tflite-converter onnx2tf / litert-torch) at each precision (INT8:
full integer, calibrated on 32 samples drawn like the evaluation ones). Conversion seconds are the whole build
(export, passes, conversion, final check); latency is the median of interleaved round-robin runs in the same
process (batch 1, all CPUs); cosine is the worst over held-out samples vs onnxruntime fp32 (MiniLM: of the
mean-pooled sentence embedding). MobileNetV2 and the MiniLM encoder (real all-MiniLM-L6-v2 weights) are full size;
ViT, ConvNeXt and the GPT-2 decoder are the one-layer configs of tests/hf_models.py (TINY).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT), str(ROOT.parent)]
from models import build_module, sample_inputs  # noqa: E402
from openvino_int8 import Row, score  # noqa: E402

from infer_compile.app.build import BuildOptions, compile_model  # noqa: E402
from infer_compile.calibration import CalibrationSettings  # noqa: E402
from infer_compile.core.errors import InferCompileError  # noqa: E402
from infer_compile.frontends.base import SourceOptions  # noqa: E402
from infer_compile.passes.autotune import measure  # noqa: E402
from infer_compile.targets import load_artifact  # noqa: E402
from tests import hf_models  # noqa: E402

BASELINE = "onnxruntime fp32"
ROUTES = ("onnx2tf", "litert-torch")
CALIBRATION_SAMPLES, EVAL_SAMPLES = 32, 8
ZOO = ("mobilenetv2", "minilm")  # full size, from bench/models.py


def samples(name: str, count: int, seed: int) -> list[dict[str, np.ndarray]]:
    if name in ZOO:
        return sample_inputs(name, count, seed)
    return hf_models.samples(hf_models.TINY[name][0], count, seed)


def _zoo_entry(name: str) -> tuple:
    """(module, example inputs): what a --from-python entry point returns."""
    import torch

    return build_module(name), tuple(torch.from_numpy(v) for v in sample_inputs(name, 1, seed=0)[0].values())


def mobilenetv2() -> tuple:
    return _zoo_entry("mobilenetv2")


def minilm() -> tuple:
    return _zoo_entry("minilm")


def entry(name: str) -> str:
    return f"{__file__}:{name}" if name in ZOO else f"{hf_models.__file__}:tiny_{name}"


def write_calibration(name: str, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, sample in enumerate(samples(name, CALIBRATION_SAMPLES, seed=0)):
        np.savez(folder / f"{i:03d}.npz", **sample)


def build(name: str, label: str, out: Path, target: str, precision: str, calib: Path,
          converter: str | None) -> tuple[Row, int]:
    start = time.perf_counter()
    options = BuildOptions(target=target, precision=precision, output=out, tune_time=0.0,
                           source=SourceOptions(python_entry=entry(name)),
                           calibration=CalibrationSettings(calib) if precision == "int8" else None,
                           target_options={"converter": converter} if converter else {})
    result = compile_model(Path(entry(name).rsplit(":", 1)[0]), options)
    row = Row(label, load_artifact(result.artifact).run, None if label == BASELINE else BASELINE,
              build_s=time.perf_counter() - start)
    return row, result.artifact.stat().st_size


def bench_model(name: str, out: Path, precisions: list[str], seconds: float
                ) -> tuple[list[tuple[Row, int]], list[str]]:
    """The timed rows with artifact sizes, and the builds that failed (with their one-line error)."""
    calib = out / f"tflite-calib-{name}"
    write_calibration(name, calib)
    evals = samples(name, EVAL_SAMPLES, seed=1)
    art = out / f"tflite-artifacts-{name}"
    builds = [(BASELINE, "onnxruntime", "fp32", None)] + [
        (f"tflite {route} {precision}", "tflite", precision, route) for route in ROUTES for precision in precisions]
    rows, failures = [], []
    for label, target, precision, route in builds:
        print(f"[{name}] building {label} ...", flush=True)
        suffix = ".tflite" if target == "tflite" else ".onnx"
        path = art / f"{label.replace(' ', '-')}{suffix}"
        for stale in art.glob(f"{path.name}*"):
            stale.unlink()
        try:
            rows.append(build(name, label, path, target, precision, calib, route))
        except InferCompileError as exc:  # a model a route cannot convert is a result too
            failures.append(f"{name} {label}: {str(exc)[:300]}")
    reference = [rows[0][0].run(f) for f in evals]
    for row, _ in rows:
        score(row, reference, evals)
    print(f"[{name}] timing {len(rows)} artifacts for {seconds:.0f} s ...", flush=True)
    times = measure([lambda row=row: row.run(evals[0]) for row, _ in rows], seconds)
    for (row, _), latencies in zip(rows, times, strict=True):
        row.median_ms = statistics.median(latencies) * 1000
    return rows, failures


def print_table(name: str, rows: list[tuple[Row, int]]) -> None:
    base = rows[0][0].median_ms
    print(f"\n{name} (batch 1; cosine: worst over {EVAL_SAMPLES} held-out samples vs onnxruntime fp32)")
    print(f"| {'artifact':<26} | {'build s':>7} | {'size KiB':>9} | {'median ms':>9} | {'vs ort fp32':>11} | "
          f"{'cosine':>8} |")
    print(f"|{'-' * 28}|{'-' * 8}:|{'-' * 10}:|{'-' * 10}:|{'-' * 12}:|{'-' * 9}:|")
    for row, size in rows:
        print(f"| {row.label:<26} | {row.build_s:7.1f} | {size / 1024:9.0f} | {row.median_ms:9.2f} | "
              f"{row.median_ms / base:10.2f}x | {row.cosine:8.5f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["mobilenetv2", "minilm", "vit", "convnext", "gpt2"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "int8"], choices=["fp32", "fp16", "int8"])
    parser.add_argument("--out", type=Path, default=Path("out/bench"))
    parser.add_argument("--seconds", type=float, default=10.0, help="timing budget per model")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    results = {name: bench_model(name, args.out, args.precisions, args.seconds) for name in args.models}
    for name, (rows, _) in results.items():
        print_table(name, rows)
    for failure in (f for _, failures in results.values() for f in failures):
        print(f"build failed: {failure}")


if __name__ == "__main__":
    main()
