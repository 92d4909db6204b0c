"""Where OpenVINO spends an INT8 artifact's time, ours against NNCF's, node by node (PERF_COUNT), one thread.

    .venv/bin/python bench/openvino_profile.py [--models resnet50 mobilenetv2 minilm bert-base] [--out out/bench]
                                               [--runs 30]

Reuses the artifacts `bench/openvino_int8.py --out DIR` wrote (``artifacts-NAME/nncf.xml`` and
``ours-openvino-int8.xml``), building the missing ones the same way. Both compile with one inference thread
(a per-node profile at two threads mixes waits into node times) and run the same held-out sample, alternating.

Per model it prints each (node type, kernel)'s summed time, ours and NNCF's, and a bound: the time ours spends
in its quantized weighted layers (int8 Convolution / FullyConnected / MatMul kernels). NNCF quantizes the same
layers and runs the same AMX/VNNI kernels on them, so however the other nodes were placed, fused or dropped,
ours cannot be more than ``NNCF total / that time`` faster than NNCF on this runtime.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import warnings
from pathlib import Path

# Not named openvino.py: Python puts this folder first on sys.path, and the script would shadow the package.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import export_model, sample_inputs
from openvino_int8 import TRANSFORMERS, build, nncf_int8, write_calibration

from infer_compile.core.numerics import Feeds

WEIGHTED = ("Convolution", "GroupConvolution", "FullyConnected", "FullyConnectedQuantizedLegacy", "MatMul")


def artifacts(name: str, out: Path) -> tuple[Path, Path, Feeds]:
    """(ours, NNCF's) OpenVINO INT8 artifacts of ``name`` under ``out``, built when missing; a held-out sample."""
    source = export_model(name, out)
    calib = out / f"calib-{name}"
    if not calib.is_dir():
        write_calibration(name, calib)
    art = out / f"artifacts-{name}"
    art.mkdir(parents=True, exist_ok=True)
    ours, nncf = art / "ours-openvino-int8.xml", art / "nncf.xml"
    if not ours.exists():
        print(f"[{name}] building ours openvino int8 ...", flush=True)
        if build("ours openvino int8", source, ours, "openvino", "int8", calib, None) is None:
            raise SystemExit(f"[{name}] our INT8 build refused")
    if not nncf.exists():
        print(f"[{name}] nncf.quantize ...", flush=True)
        nncf_int8(source, calib, nncf, name in TRANSFORMERS)
    return ours, nncf, sample_inputs(name, 1, seed=1)[0]


def profiler(path: Path, config: dict[str, str]):
    """A callable running ``path`` once with PERF_COUNT and returning {node: (type, kernel, ms)}."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {**config, "PERF_COUNT": True, "INFERENCE_NUM_THREADS": 1})
    request = compiled.create_infer_request()

    def run(feeds: Feeds) -> dict[str, tuple[str, str, float]]:
        request.infer(feeds)
        return {p.node_name: (p.node_type, p.exec_type, p.real_time.total_seconds() * 1e3)
                for p in request.get_profiling_info() if p.status == p.Status.EXECUTED}

    return run


def node_minima(runs: list[dict[str, tuple[str, str, float]]]) -> dict[str, tuple[str, str, float]]:
    """Each node's fastest time over the runs (the least disturbed by other processes)."""
    return {node: (*info[:2], min(run[node][2] for run in runs)) for node, info in runs[0].items()}


def kernel_table(name: str, profiles: dict[str, dict[str, tuple[str, str, float]]]) -> None:
    totals = {label: sum(ms for *_, ms in nodes.values()) for label, nodes in profiles.items()}
    by_kernel: dict[tuple[str, str], dict[str, list[float]]] = collections.defaultdict(
        lambda: {label: [0.0, 0] for label in profiles})
    for label, nodes in profiles.items():
        for node_type, kernel, ms in nodes.values():
            by_kernel[node_type, kernel][label][0] += ms
            by_kernel[node_type, kernel][label][1] += 1
    print(f"\n{name}: sum of per-node minima, one thread (ms; count)")
    print(f"| {'node type':<30} | {'kernel':<34} | " + " | ".join(f"{label:>14}" for label in profiles) + " |")
    print(f"|{'-' * 32}|{'-' * 36}|" + "|".join("-" * 15 + ":" for _ in profiles) + "|")
    for (node_type, kernel), cells in sorted(by_kernel.items(), key=lambda kv: -max(c[0] for c in kv[1].values())):
        if max(c[0] for c in cells.values()) < 0.01 * max(totals.values()):
            continue  # under 1% of the model: left out of the table, counted in the totals
        row = " | ".join(f"{ms:7.2f} ({n:>3})" if n else f"{'-':>14}" for ms, n in cells.values())
        print(f"| {node_type:<30} | {kernel:<34} | {row} |")
    print(f"| {'total':<30} | {'':<34} | " + " | ".join(f"{t:14.2f}" for t in totals.values()) + " |")
    weighted = sum(ms for node_type, kernel, ms in profiles["ours"].values()
                   if node_type in WEIGHTED and "i8" in kernel.lower())
    print(f"ours vs NNCF: {totals['NNCF'] / totals['ours']:.2f}x faster; ours spends {weighted:.2f} ms "
          f"({weighted / totals['ours']:.0%}) in int8 weighted-layer kernels, so even with every other node free "
          f"ours could be at most {totals['NNCF'] / weighted:.2f}x faster than NNCF")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet50", "mobilenetv2", "minilm", "bert-base"])
    parser.add_argument("--out", type=Path, default=Path("out/bench"))
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    for name in args.models:
        ours, nncf, feeds = artifacts(name, args.out)
        manifest = json.loads(Path(f"{ours}.manifest.json").read_text())
        config = {**manifest.get("ov_config", {}),  # as our artifact loads (targets/openvino.py)
                  "INFERENCE_PRECISION_HINT": manifest.get("inference_precision", "f32")}
        runners = {"ours": profiler(ours, config), "NNCF": profiler(nncf, {})}
        runs: dict[str, list] = {label: [] for label in runners}
        for _ in range(args.runs):  # alternating, so load hits both alike
            for label, run in runners.items():
                runs[label].append(run(feeds))
        kernel_table(name, {label: node_minima(r[1:]) for label, r in runs.items()})  # r[0]: warm-up


if __name__ == "__main__":
    main()
