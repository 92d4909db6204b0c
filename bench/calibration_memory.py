"""Peak memory of INT8 builds against the number of calibration samples: it should not grow.

    .venv/bin/python bench/calibration_memory.py [--counts 128 1000 10000] [--size 64] [--baseline-venv DIR]

A small CNN (tests/builders.tiny_cnn, input 1x3xSIZExSIZE) is built for onnxruntime INT8 from a folder of
``count`` .npy samples (48 KiB each at the default size: 10,000 are 470 MiB on disk), with
``--calib-samples count``. Each build runs in a child process of a small launcher (bench/measure.py), so
the peak RSS is the build's own. ``--baseline-venv`` builds the same folders with another install
(e.g. an older checkout's .venv) in the same run and prints the ratio.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository, for tests.builders
from measure import VENV_BIN, Build, run_measured

from tests.builders import tiny_cnn


def write_samples(folder: Path, count: int, size: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        np.save(folder / f"{i:05d}.npy", rng.standard_normal((1, 3, size, size), dtype=np.float32))


def build(venv_bin: Path, model: Path, calib: Path, count: int, out: Path) -> Build:
    return run_measured([str(venv_bin / "infer-compile"), str(model), "--target", "onnxruntime", "--int8",
                         "--calib", str(calib), "--calib-samples", str(count), "--no-cache", "--no-tune",
                         "-o", str(out)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", type=int, nargs="+", default=[128, 1000, 10000])
    parser.add_argument("--size", type=int, default=64, help="sample height and width")
    parser.add_argument("--baseline-venv", type=Path, help="another install's venv to compare against")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="calibration-memory-bench-"))
    rows = []
    try:
        model = root / "tiny_cnn.onnx"
        onnx.save(tiny_cnn(size=args.size), str(model))
        for count in args.counts:
            calib = root / f"calib-{count}"
            write_samples(calib, count, args.size)
            ours = build(VENV_BIN, model, calib, count, root / "ours.onnx")
            base = build(args.baseline_venv / "bin", model, calib, count, root / "base.onnx") \
                if args.baseline_venv else None
            rows.append((count, count * 3 * args.size ** 2 * 4 / 2**20, ours, base))
            shutil.rmtree(calib)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(f"\nINT8 onnxruntime builds of tiny_cnn (1x3x{args.size}x{args.size}), --calib-samples = samples\n")
    head = "| samples | data MiB | build s | peak RSS MiB |"
    print(head + (" baseline s | baseline peak RSS MiB | RSS ours / baseline |" if args.baseline_venv else ""))
    print("|---" * (head.count("|") - 1 + (3 if args.baseline_venv else 0)) + "|")
    for count, data_mib, ours, base in rows:
        line = f"| {count} | {data_mib:.0f} | {ours.seconds:.1f} | {ours.peak_rss_mib:.0f} |"
        if base:
            line += f" {base.seconds:.1f} | {base.peak_rss_mib:.0f} | {ours.peak_rss_mib / base.peak_rss_mib:.2f} |"
        print(line)


if __name__ == "__main__":
    main()
