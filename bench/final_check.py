"""What the final check costs: builds with and without it, same run, same machine.

    python bench/final_check.py [--models tiny_cnn,resnet50] [--targets onnxruntime,openvino]

For each model x target, builds once with --no-final-check (the baseline) and once with the check
(no autotuning, no cache), and prints the check's own seconds (from the manifest: the source's
reference run, loading the artifact in its runtime, running it, comparing) and the build-time ratio.
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
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-final-check-") as tmp:
        for name in args.models.split(","):
            source = source_for(name, Path("out/bench"))
            for target in args.targets.split(","):
                suffix = ".xml" if target == "openvino" else ".onnx"
                base_s, _ = timed_build(source, target, Path(tmp) / f"base{suffix}", final_check=False)
                checked_s, manifest = timed_build(source, target, Path(tmp) / f"checked{suffix}", final_check=True)
                check = manifest["final_check"]
                rows.append((name, target, base_s, checked_s, check["seconds"], check["figures"]["cosine"]))
    print(f"{'model':<10} {'target':<12} {'build (no check)':>17} {'build (check)':>14} {'check s':>8} "
          f"{'ratio':>6} {'cosine':>9}")
    for name, target, base_s, checked_s, check_s, cosine in rows:
        print(f"{name:<10} {target:<12} {base_s:>16.2f}s {checked_s:>13.2f}s {check_s:>8.2f} "
              f"{checked_s / base_s:>6.2f} {cosine:>9.6f}")


if __name__ == "__main__":
    main()
