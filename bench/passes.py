"""Our pass pipeline vs onnxslim vs the exported graph: node count, ONNX Runtime latency, numerics.

    python bench/passes.py [--models resnet50,mobilenetv2,bert-base,minilm] [--runs 20] [--cache out/bench]

For each model, the three graphs are run in one process with identical session options
(ORT_ENABLE_ALL, as the onnxruntime target ships them), timed round-robin so machine load hits
all three alike; the table gives ratios against onnxslim, and each graph's worst output
difference against the exported graph (ORT, optimizations off) on realistic inputs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import models as zoo

from infer_compile.core.ir import Model, load_onnx
from infer_compile.core.numerics import TOLERANCES, compare_outputs, ort_session, run_onnx, summarize, within
from infer_compile.passes import PassContext, PassManager, build_pipeline
from infer_compile.targets.onnxruntime import OnnxRuntimeTarget


@dataclass
class Variant:
    name: str
    model: Model
    prepare_s: float
    latencies_ms: list[float]
    max_abs: float = 0.0
    numerics_ok: bool = True


def our_pipeline(model: Model) -> Model:
    optimized = model.copy()
    ctx = PassContext(target=OnnxRuntimeTarget.name, capabilities=OnnxRuntimeTarget.capabilities)
    PassManager(build_pipeline("fp32")).run(optimized, ctx)
    return optimized


def onnxslim_output(model: Model) -> Model:
    import onnxslim

    return Model.from_proto(onnxslim.slim(model.to_proto()))


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def measure(name: str, cache: Path, runs: int, threads: int) -> list[Variant]:
    exported = load_onnx(zoo.export_model(name, cache))
    ours, ours_s = timed(our_pipeline, exported)
    slim, slim_s = timed(onnxslim_output, exported)
    variants = [Variant("exported", exported, 0.0, []), Variant("ours", ours, ours_s, []),
                Variant("onnxslim", slim, slim_s, [])]
    checks = zoo.sample_inputs(name, 2, seed=1)
    references = [run_onnx(exported, feeds) for feeds in checks]
    for v in variants:
        comparisons = [compare_outputs(ref, run_onnx(v.model, feeds)) for ref, feeds in zip(references, checks,
                                                                                             strict=True)]
        v.max_abs = max(summarize(c)["max_abs"] for c in comparisons)
        v.numerics_ok = all(within(c, TOLERANCES["fp32"]) for ref, c in zip(references, comparisons,
                                                                               strict=True))
    sessions = [ort_session(v.model, optimize=True, threads=threads) for v in variants]
    feeds = zoo.sample_inputs(name, 1, seed=0)[0]
    for _ in range(3):  # warm-up
        for s in sessions:
            s.run(None, feeds)
    for _ in range(runs):
        for v, s in zip(variants, sessions, strict=True):
            start = time.perf_counter()
            s.run(None, feeds)
            v.latencies_ms.append((time.perf_counter() - start) * 1e3)
    return variants


def print_table(name: str, variants: list[Variant]) -> None:
    slim = next(v for v in variants if v.name == "onnxslim")
    slim_ms = statistics.median(slim.latencies_ms)
    print(f"\n{name}")
    print(f"  {'graph':<9} {'nodes':>6} {'nodes/slim':>10} {'median ms':>10} {'lat/slim':>9} {'prep s':>7} "
          f"{'max|diff| vs exported':>22} {'numerics':>9}")
    for v in variants:
        ms = statistics.median(v.latencies_ms)
        print(f"  {v.name:<9} {v.model.node_count:>6} {v.model.node_count / slim.model.node_count:>10.2f} "
              f"{ms:>10.2f} {ms / slim_ms:>9.3f} {v.prepare_s:>7.1f} {v.max_abs:>22.2e} "
              f"{'ok' if v.numerics_ok else 'REGRESSED':>9}")
    ours = next(v for v in variants if v.name == "ours")
    print(f"  ours: {dict(sorted(ours.model.op_histogram().items(), key=lambda kv: -kv[1]))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(zoo.MODEL_NAMES))
    parser.add_argument("--runs", type=int, default=20, help="timed runs per graph (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="ORT intra-op threads (same for all graphs)")
    parser.add_argument("--cache", type=Path, default=Path("out/bench"), help="where exported models are cached")
    args = parser.parse_args()
    print(f"ORT session: ORT_ENABLE_ALL, intra_op_num_threads={args.threads}; {args.runs} timed runs, "
          "round-robin; numerics: fp32 tolerance vs exported graph (ORT, optimizations off), 2 inputs")
    for name in args.models.split(","):
        print_table(name, measure(name, args.cache, args.runs, args.threads))


if __name__ == "__main__":
    main()
