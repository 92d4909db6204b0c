"""OpenVINO INT8 and autotuning, side by side in one run, on a ResNet-50-like CNN and MiniLM.

    .venv/bin/python bench/openvino_int8.py [--models resnet50 minilm] [--out out/bench] [--seconds 20]

Per model, all artifacts are built from the same ONNX export and timed in the same process,
interleaved (round-robin blocks, median latency, batch 1):
- our OpenVINO INT8 artifact vs ``nncf.quantize`` with default settings on the same calibration
  samples (latency ratio < 1 = ours faster; accuracy vs onnxruntime fp32 on held-out samples);
- our autotuned ONNX Runtime artifact vs the same build untuned, at fp32 and INT8;
- OpenVINO fp32 vs ONNX Runtime fp32 (what `--target auto` should prefer on this CPU).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Not named openvino.py: Python puts this folder first on sys.path, and the script would shadow the package.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import export_model, sample_inputs

from infer_compile.app.build import BuildOptions, compile_model
from infer_compile.calibration import CalibrationSettings
from infer_compile.core.numerics import Feeds, compare_output
from infer_compile.passes.autotune import measure
from infer_compile.targets import load_artifact

CALIBRATION_SAMPLES = 32
EVAL_SAMPLES = 16
TUNE_TIME = 20.0

Run = Callable[[Feeds], Feeds]


@dataclass
class Row:
    label: str
    run: Run
    baseline: str | None = None  # label of the row its latency is compared with
    median_ms: float = 0.0
    cosine: float = 0.0
    top1: float | None = None
    build_s: float = 0.0
    tuning: str = ""  # what autotuning chose


def write_calibration(name: str, folder: Path) -> list[Feeds]:
    """The calibration samples as one .npz per sample (what `--calib FOLDER` reads); returns them."""
    samples = sample_inputs(name, CALIBRATION_SAMPLES, seed=0)
    folder.mkdir(parents=True, exist_ok=True)
    for i, sample in enumerate(samples):
        np.savez(folder / f"{i:03d}.npz", **sample)
    return samples


def build(label: str, source: Path, out: Path, target: str, precision: str, calib: Path | None,
          tune_time: float, baseline: str | None) -> Row:
    """Our artifact, built as the CLI builds it (default calibrator: entropy), loaded as `run` loads it."""
    start = time.perf_counter()
    # The untuned and tuned builds for one target share calibration ranges (a range cache per target).
    ranges = out.parent / f"ranges-{target}.json"
    options = BuildOptions(target=target, precision=precision, output=out, tune_time=tune_time,
                           calibration=CalibrationSettings(calib, cache=ranges) if calib else None)
    result = compile_model(source, options)
    return Row(label, load_artifact(result.artifact).run, baseline, build_s=time.perf_counter() - start,
               tuning=tuning_summary(result.manifest.autotune))


def tuning_summary(record: dict | None) -> str:
    if not record:
        return ""
    timed = sum(c["median_ms"] is not None for c in record["candidates"])
    text = f"{record['chosen']} (of {timed} timed)"
    if record.get("layers"):
        fp32 = sum(r["precision"] == "fp32" for r in record["layers"])
        tried = sum("int8_ms" in r for r in record["layers"])
        text += f"; INT8 layers: {tried}/{len(record['layers'])} timed, {fp32} back to fp32"
    return text


def nncf_int8(source: Path, samples: list[Feeds]) -> tuple[Run, float]:
    """NNCF's post-training quantization with its defaults, compiled with OpenVINO's CPU defaults."""
    import nncf
    import openvino as ov

    start = time.perf_counter()
    quantized = nncf.quantize(ov.convert_model(str(source)), nncf.Dataset(samples))
    compiled = ov.Core().compile_model(quantized, "CPU")
    request = compiled.create_infer_request()
    names = [next(iter(sorted(o.get_names()))) for o in compiled.outputs]

    def run(feeds: Feeds) -> Feeds:
        result = request.infer(feeds)
        return {name: np.array(result[port]) for name, port in zip(names, compiled.outputs, strict=True)}

    return run, time.perf_counter() - start


def embedding(output: np.ndarray, feeds: Feeds) -> np.ndarray:
    """What a consumer reads: class scores as they are; token states mean-pooled over the attention
    mask into the sentence embedding (how MiniLM is used; padded positions carry no meaning)."""
    if output.ndim != 3 or "attention_mask" not in feeds:
        return output
    mask = feeds["attention_mask"][..., None].astype(np.float32)
    return (output * mask).sum(axis=1) / mask.sum(axis=1)


def score(row: Row, reference: list[Feeds], evals: list[Feeds]) -> None:
    """Worst per-sample cosine of the first output vs fp32, and top-1 agreement for class scores."""
    outputs = [embedding(next(iter(row.run(f).values())), f) for f in evals]
    expected = [embedding(next(iter(r.values())), f) for r, f in zip(reference, evals, strict=True)]
    row.cosine = min(compare_output("out", e, o).cosine for e, o in zip(expected, outputs, strict=True))
    if "attention_mask" not in evals[0]:
        row.top1 = compare_output("out", np.concatenate(expected), np.concatenate(outputs)).top1_agreement


def bench_model(name: str, out: Path, seconds: float) -> list[Row]:
    source = export_model(name, out)
    calib = write_calibration(name, out / f"calib-{name}")
    evals = sample_inputs(name, EVAL_SAMPLES, seed=1)
    art = out / f"artifacts-{name}"
    shutil.rmtree(art, ignore_errors=True)  # fresh builds: no range cache from an earlier run
    rows = []
    for label, target, precision, tune, baseline in (
        ("onnxruntime fp32 untuned", "onnxruntime", "fp32", 0.0, None),
        ("onnxruntime fp32 autotuned", "onnxruntime", "fp32", TUNE_TIME, "onnxruntime fp32 untuned"),
        ("onnxruntime int8 untuned", "onnxruntime", "int8", 0.0, None),
        ("onnxruntime int8 autotuned", "onnxruntime", "int8", TUNE_TIME, "onnxruntime int8 untuned"),
        ("openvino fp32 (ours)", "openvino", "fp32", 0.0, "onnxruntime fp32 untuned"),
        ("openvino int8 (ours, untuned)", "openvino", "int8", 0.0, "openvino int8 nncf default"),
        ("openvino int8 (ours, autotuned)", "openvino", "int8", TUNE_TIME, "openvino int8 nncf default"),
    ):
        suffix = ".xml" if target == "openvino" else ".onnx"
        path = art / f"{target}-{precision}-{'tuned' if tune else 'untuned'}{suffix}"
        print(f"[{name}] building {label} ...", flush=True)
        rows.append(build(label, source, path, target, precision,
                          out / f"calib-{name}" if precision == "int8" else None, tune, baseline))
    print(f"[{name}] nncf.quantize (defaults) ...", flush=True)
    run, built = nncf_int8(source, calib)
    rows.insert(-2, Row("openvino int8 nncf default", run, build_s=built))

    reference = [rows[0].run(f) for f in evals]
    for row in rows:
        score(row, reference, evals)
    print(f"[{name}] timing {len(rows)} artifacts for {seconds:.0f} s ...", flush=True)
    feeds = evals[0]
    times = measure([lambda row=row: row.run(feeds) for row in rows], seconds)
    for row, latencies in zip(rows, times, strict=True):
        row.median_ms = statistics.median(latencies) * 1000
    return rows


def print_table(name: str, rows: list[Row]) -> None:
    by_label = {r.label: r for r in rows}
    accuracy = "sentence-embedding cosine" if name == "minilm" else "output cosine"
    print(f"\n{name} (batch 1; cosine: worst over {EVAL_SAMPLES} held-out samples, {accuracy} vs fp32)")
    print(f"| {'artifact':<32} | {'median ms':>9} | {'vs baseline':<40} | {'cosine vs fp32':>14} | "
          f"{'top-1 vs fp32':>13} | {'build s':>7} |")
    print(f"|{'-' * 34}|{'-' * 11}:|{'-' * 42}|{'-' * 15}:|{'-' * 14}:|{'-' * 8}:|")
    for r in rows:
        ratio = f"{r.median_ms / by_label[r.baseline].median_ms:.2f}x {r.baseline}" if r.baseline else "-"
        top1 = f"{r.top1:.3f}" if r.top1 is not None else "-"
        print(f"| {r.label:<32} | {r.median_ms:9.2f} | {ratio:<40} | {r.cosine:14.5f} | {top1:>13} | "
              f"{r.build_s:7.1f} |")
    for r in rows:
        if r.tuning:
            print(f"  {r.label}: {r.tuning}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet50", "minilm"])
    parser.add_argument("--out", type=Path, default=Path("out/bench"))
    parser.add_argument("--seconds", type=float, default=20.0, help="timing budget per model")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    tables = {name: bench_model(name, args.out, args.seconds) for name in args.models}
    for name, rows in tables.items():
        print_table(name, rows)


if __name__ == "__main__":
    main()
