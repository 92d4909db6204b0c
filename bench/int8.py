"""Our INT8 ONNX Runtime artifact vs onnxruntime.quantization.quantize_static, side by side in one run.

    .venv/bin/python bench/int8.py [--models resnet50 mobilenetv2 minilm] [--out out/bench] [--seconds 10]

Per model, from the same ONNX export and the same calibration samples (one .npz per sample):
- ours: `infer-compile MODEL --target onnxruntime --int8 --calib FOLDER` (TensorRT-style Q/DQ,
  per-channel weights, symmetric int8; min-max calibration unless --method says otherwise);
- baseline: ``quantize_static`` with QDQ format and per-channel weights, other settings default.
Each build runs in its own subprocess: compile time is its wall time, peak memory its peak RSS
(``os.wait4`` in a small launcher process; tracemalloc would miss native allocations). Latency: both
artifacts and the fp32 export in one process, ORT_ENABLE_ALL, batch 1, round-robin (median). Accuracy: vs the fp32
export on held-out samples (worst-sample cosine; top-1 agreement for classifiers).
Ratios are ours / baseline: < 1 means ours is faster, builds faster or uses less memory.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import VENV_BIN, Build, run_measured
from models import export_model, sample_inputs

from infer_compile.core.numerics import Feeds, compare_output
from infer_compile.passes.autotune import measure

CALIBRATION_SAMPLES = 32
EVAL_SAMPLES = 16

BASELINE_SCRIPT = """
import sys
from pathlib import Path
import numpy as np
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

source, folder, out = sys.argv[1:4]

class Reader(CalibrationDataReader):
    def __init__(self):
        self.files = iter(sorted(Path(folder).glob("*.npz")))
    def get_next(self):
        path = next(self.files, None)
        return None if path is None else dict(np.load(path))

quantize_static(source, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True)
"""


def build_ours(source: Path, calib: Path, out: Path, method: str) -> Build:
    return run_measured([str(VENV_BIN / "infer-compile"), str(source), "--target", "onnxruntime", "--int8",
                         "--calib", str(calib), "--calib-method", method, "--no-cache", "--no-tune", "-o", str(out)])


def build_baseline(source: Path, calib: Path, out: Path) -> Build:
    return run_measured([sys.executable, "-c", BASELINE_SCRIPT, str(source), str(calib), str(out)])


def write_calibration(name: str, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, sample in enumerate(sample_inputs(name, CALIBRATION_SAMPLES, seed=0)):
        np.savez(folder / f"{i:03d}.npz", **sample)


def session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda feeds: sess.run(None, feeds)[0]


def accuracy(run, reference: list[np.ndarray], evals: list[Feeds]) -> tuple[float, float | None]:
    outputs = [run(f) for f in evals]
    cosine = min(compare_output("out", r, o).cosine for r, o in zip(reference, outputs, strict=True))
    top1 = None
    if reference[0].ndim == 2 and reference[0].shape[-1] > 1:
        top1 = compare_output("out", np.concatenate(reference), np.concatenate(outputs)).top1_agreement
    return cosine, top1


def bench_model(name: str, out: Path, seconds: float, method: str) -> dict:
    source = export_model(name, out)
    calib = out / f"int8-calib-{name}"
    write_calibration(name, calib)
    art = out / f"int8-{name}"
    art.mkdir(parents=True, exist_ok=True)
    print(f"[{name}] building ours ({method}) ...", flush=True)
    ours = build_ours(source, calib, art / "ours.onnx", method)
    print(f"[{name}] building quantize_static ...", flush=True)
    base = build_baseline(source, calib, art / "quantize_static.onnx")
    runs = {"fp32": session(source), "ours": session(art / "ours.onnx"),
            "quantize_static": session(art / "quantize_static.onnx")}
    evals = sample_inputs(name, EVAL_SAMPLES, seed=1)
    reference = [runs["fp32"](f) for f in evals]
    scores = {label: accuracy(run, reference, evals) for label, run in runs.items() if label != "fp32"}
    print(f"[{name}] timing for {seconds:.0f} s ...", flush=True)
    feeds = evals[0]
    times = measure([lambda run=run: run(feeds) for run in runs.values()], seconds)
    median = {label: statistics.median(t) * 1000 for label, t in zip(runs, times, strict=True)}
    return {"name": name, "ours": ours, "base": base, "median": median, "scores": scores}


def print_table(results: list[dict], method: str) -> None:
    print(f"\nINT8 on ONNX Runtime CPU: ours ({method} calibration) vs quantize_static (QDQ, per-channel), "
          f"{CALIBRATION_SAMPLES} calibration samples, {EVAL_SAMPLES} held-out")
    print("| model | fp32 ms | ours ms | qs ms | latency ratio | cosine ours / qs | top-1 ours / qs "
          "| compile s ours / qs (ratio) | peak RSS MiB ours / qs (ratio) |")
    print("|---|---:|---:|---:|---:|---|---|---|---|")
    for r in results:
        m, (c_o, t_o), (c_b, t_b) = r["median"], r["scores"]["ours"], r["scores"]["quantize_static"]
        top1 = f"{t_o:.3f} / {t_b:.3f}" if t_o is not None else "-"
        ours, base = r["ours"], r["base"]
        print(f"| {r['name']} | {m['fp32']:.2f} | {m['ours']:.2f} | {m['quantize_static']:.2f} "
              f"| {m['ours'] / m['quantize_static']:.2f} | {c_o:.5f} / {c_b:.5f} | {top1} "
              f"| {ours.seconds:.1f} / {base.seconds:.1f} ({ours.seconds / base.seconds:.2f}) "
              f"| {ours.peak_rss_mib:.0f} / {base.peak_rss_mib:.0f} ({ours.peak_rss_mib / base.peak_rss_mib:.2f}) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet50", "mobilenetv2", "minilm"])
    parser.add_argument("--out", type=Path, default=Path("out/bench"))
    parser.add_argument("--seconds", type=float, default=10.0, help="timing budget per model")
    parser.add_argument("--method", default="minmax", help="our calibration method")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    results = [bench_model(name, args.out, args.seconds, args.method) for name in args.models]
    print_table(results, args.method)


if __name__ == "__main__":
    main()
