"""What the final check costs: builds with and without it, same run, same machine.

    python bench/final_check.py [--models tiny_cnn,resnet50] [--targets onnxruntime,openvino]

For each model x target, builds alternately with --no-final-check (the baseline) and with the check
(no autotuning, no cache; --repeat times each, the fastest counts), and prints the check's own
seconds (from the manifest: the source's reference run, loading the artifact in its runtime,
running it, comparing) and the build-time ratio.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import models as zoo

import infer_compile

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tiny_cnn.onnx"
SUFFIX = {"onnxruntime": ".onnx", "openvino": ".xml"}


def source_for(name: str, out_dir: Path) -> Path:
    return EXAMPLE if name == "tiny_cnn" else zoo.export_model(name, out_dir)


def timed_build(source: Path, target: str, output: Path, final_check: bool) -> tuple[float, dict]:
    start = time.perf_counter()
    artifact = infer_compile.compile(source, target=target, output=output, cache=False, tune_time=0.0,
                                     final_check=final_check)
    return time.perf_counter() - start, artifact.manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="tiny_cnn,resnet50")
    parser.add_argument("--targets", default="onnxruntime,openvino")
    parser.add_argument("--repeat", type=int, default=2, help="builds of each kind; the fastest counts")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-final-check-") as tmp:
        out = Path(tmp)
        for target in args.targets.split(","):  # warm-up: imports and runtime start-up are not the check's cost
            timed_build(EXAMPLE, target, out / f"warm{SUFFIX[target]}", final_check=True)
        for name in args.models.split(","):
            source = source_for(name, Path("out/bench"))
            for target in args.targets.split(","):
                base, checked, check_s = [], [], []
                for _ in range(args.repeat):  # alternate, so machine load hits both alike
                    base.append(timed_build(source, target, out / f"base{SUFFIX[target]}", False)[0])
                    seconds, manifest = timed_build(source, target, out / f"checked{SUFFIX[target]}", True)
                    checked.append(seconds)
                    check_s.append(manifest["final_check"]["seconds"])
                rows.append((name, target, min(base), min(checked), min(check_s),
                             manifest["final_check"]["figures"]["cosine"]))
    print(f"{'model':<10} {'target':<12} {'build (no check)':>17} {'build (check)':>14} {'check s':>8} "
          f"{'ratio':>6} {'cosine':>9}")
    for name, target, base_s, checked_s, check_s, cosine in rows:
        print(f"{name:<10} {target:<12} {base_s:>16.2f}s {checked_s:>13.2f}s {check_s:>8.2f} "
              f"{checked_s / base_s:>6.2f} {cosine:>9.6f}")


if __name__ == "__main__":
    main()
