"""Every precision on ONNX Runtime and OpenVINO, ours against what a user would pick instead, in one run.

    .venv/bin/python bench/openvino_int8.py [--models resnet50 mobilenetv2 minilm bert-base] [--out out/bench]
                                            [--seconds 20]

Per model, all artifacts are built from the same ONNX export and timed in the same process, interleaved
(round-robin blocks, median latency, batch 1); ratios are against plain ONNX Runtime on the exported graph:
- baselines: ORT fp32 on the export, ``quantize_static`` (QDQ, per-channel), OpenVINO with an f32 hint and
  with its defaults (bf16 on CPUs that have it), ``nncf.quantize`` (``ModelType.TRANSFORMER`` for encoders);
- ours: ONNX Runtime fp32 / int8 / auto, OpenVINO fp32 / bf16 / int8 / auto (transformers also int8 with
  ``--accuracy-budget cosine>=0.99``), built by the CLI as a user runs it, untuned (``--no-tune``).
Accuracy: worst held-out sample's cosine vs fp32 (MiniLM: of the mean-pooled sentence embedding, on real
sentences the calibration never saw), top-1 agreement for classifiers. Every build (ours, quantize_static,
NNCF) runs in its own process: build seconds and its peak RSS.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Not named openvino.py: Python puts this folder first on sys.path, and the script would shadow the package.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from int8 import BASELINE_SCRIPT
from measure import VENV_BIN, Build, run_measured
from models import export_model, sample_inputs

from infer_compile.core.numerics import Feeds, compare_output
from infer_compile.passes.autotune import measure
from infer_compile.targets import load_artifact

CALIBRATION_SAMPLES = 32
EVAL_SAMPLES = 16
TRANSFORMERS = ("minilm", "bert-base")  # quantized by NNCF with its transformer preset

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
    peak_rss_mib: float = 0.0


def write_calibration(name: str, folder: Path) -> list[Feeds]:
    """The calibration samples as one .npz per sample (what `--calib FOLDER` reads); returns them."""
    samples = sample_inputs(name, CALIBRATION_SAMPLES, seed=0)
    folder.mkdir(parents=True, exist_ok=True)
    for i, sample in enumerate(samples):
        np.savez(folder / f"{i:03d}.npz", **sample)
    return samples


NNCF_SCRIPT = """
import sys
import numpy as np, nncf, openvino as ov
source, folder, out, transformer = sys.argv[1:5]
from pathlib import Path
samples = [dict(np.load(p)) for p in sorted(Path(folder).glob("*.npz"))]
preset = {"model_type": nncf.ModelType.TRANSFORMER} if transformer == "1" else {}
ov.save_model(nncf.quantize(ov.convert_model(source), nncf.Dataset(samples), **preset), out)
"""


def build(label: str, source: Path, out: Path, target: str, precision: str, calib: Path | None,
          baseline: str | None, budget: str | None = None) -> Row | None:
    """Our artifact, built by the CLI in its own process (min-max calibration, untuned), loaded as `run` loads
    it; None (with the build's error printed) when the build refuses."""
    cmd = [str(VENV_BIN / "infer-compile"), str(source), "--target", target, "--precision", precision,
           "--no-tune", "--no-cache", "-o", str(out), *(["--calib", str(calib)] if calib else []),
           *(["--accuracy-budget", budget] if budget else [])]
    made = run_measured(cmd, check=False)
    if made.exit_code != 0:  # a build that refuses (e.g. accuracy) is a result, not a crash
        print(f"  {label}: exit {made.exit_code}: {made.output.strip().splitlines()[-1]}", flush=True)
        return None
    run = ort_run(out) if target == "onnxruntime" else load_artifact(out).run  # untuned: no session settings
    return Row(label, run, baseline, build_s=made.seconds, peak_rss_mib=made.peak_rss_mib)


def nncf_int8(source: Path, calib: Path, out: Path, transformer: bool) -> tuple[Run, Build]:
    """NNCF's post-training quantization (its transformer preset for encoders), compiled with OpenVINO's defaults."""
    made = run_measured([sys.executable, "-c", NNCF_SCRIPT, str(source), str(calib), str(out), str(int(transformer))])
    return openvino_run(str(out), {}), made


def openvino_run(model: object, config: dict) -> Run:
    """An OpenVINO CPU runner of ``model`` (a path or ov.Model) with ``config``."""
    import openvino as ov

    compiled = ov.Core().compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    names = [next(iter(sorted(o.get_names()))) for o in compiled.outputs]

    def run(feeds: Feeds) -> Feeds:
        result = request.infer(feeds)
        return {name: np.array(result[port]) for name, port in zip(names, compiled.outputs, strict=True)}

    return run


def ort_run(path: Path) -> Run:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    # Idle threads do not spin: a dozen sessions timed round-robin in one process otherwise slow each other down
    # (two byte-identical artifacts timed 3.64 and 7.07 ms in one run).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return lambda feeds: dict(zip(names, session.run(names, feeds), strict=True))


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
    calib = out / f"calib-{name}"
    write_calibration(name, calib)
    evals = sample_inputs(name, EVAL_SAMPLES, seed=1)
    art = out / f"artifacts-{name}"
    shutil.rmtree(art, ignore_errors=True)  # fresh builds
    art.mkdir(parents=True)
    transformer = name in TRANSFORMERS
    base = "onnxruntime fp32 (export)"
    rows = [Row(base, ort_run(source))]
    print(f"[{name}] quantize_static ...", flush=True)
    qs = art / "quantize_static.onnx"
    made = run_measured([sys.executable, "-c", BASELINE_SCRIPT, str(source), str(calib), str(qs)])
    rows.append(Row("onnxruntime int8 quantize_static", ort_run(qs), base, build_s=made.seconds,
                    peak_rss_mib=made.peak_rss_mib))
    rows.append(Row("openvino fp32 (f32 hint)", openvino_run(str(source), {"INFERENCE_PRECISION_HINT": "f32"}), base))
    rows.append(Row("openvino defaults (bf16 if CPU has it)", openvino_run(str(source), {}), base))
    print(f"[{name}] nncf.quantize ...", flush=True)
    run, made = nncf_int8(source, calib, art / "nncf.xml", transformer)
    rows.append(Row("openvino int8 nncf", run, base, build_s=made.seconds, peak_rss_mib=made.peak_rss_mib))
    ours = [(target, precision, None) for target in ("onnxruntime", "openvino")
            for precision in ("fp32", *(["bf16"] if target == "openvino" else []), "int8", "auto")]
    if transformer:
        ours += [("onnxruntime", "int8", "cosine>=0.99"), ("openvino", "int8", "cosine>=0.99")]
    for target, precision, budget in ours:
        label = f"ours {target} {precision}" + (f" budget {budget.partition('>=')[2]}" if budget else "")
        suffix = ".xml" if target == "openvino" else ".onnx"
        print(f"[{name}] building {label} ...", flush=True)
        row = build(label, source, art / f"{label.replace(' ', '-')}{suffix}", target, precision,
                    calib if precision in ("int8", "auto") else None, base, budget)
        rows += [row] if row else []

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
    print(f"| {'artifact':<38} | {'median ms':>9} | {'vs ORT fp32':<16} | {'cosine vs fp32':>14} | "
          f"{'top-1 vs fp32':>13} | {'build s':>7} | {'peak RSS MiB':>12} |")
    print(f"|{'-' * 40}|{'-' * 11}:|{'-' * 18}|{'-' * 15}:|{'-' * 14}:|{'-' * 8}:|{'-' * 13}:|")
    for r in rows:
        ratio = f"{r.median_ms / by_label[r.baseline].median_ms:.2f}x" if r.baseline else "1.00x (baseline)"
        top1 = f"{r.top1:.3f}" if r.top1 is not None else "-"
        built = f"{r.build_s:7.1f} | {r.peak_rss_mib:12.0f}" if r.build_s else f"{'-':>7} | {'-':>12}"
        print(f"| {r.label:<38} | {r.median_ms:9.2f} | {ratio:<16} | {r.cosine:14.5f} | {top1:>13} | {built} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet50", "mobilenetv2", "minilm", "bert-base"])
    parser.add_argument("--out", type=Path, default=Path("out/bench"))
    parser.add_argument("--seconds", type=float, default=20.0, help="timing budget per model")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    tables = {name: bench_model(name, args.out, args.seconds) for name in args.models}
    for name, rows in tables.items():
        print_table(name, rows)


if __name__ == "__main__":
    main()
