"""Build time and peak memory of fp32 builds of models with external data, 2.5 GiB and 5 GiB by default.

    .venv/bin/python bench/large_model.py [--sizes 2.5 5] [--cwd model|parent] [--keep DIR]

Each model is a chain of 8192x8192 fp32 MatMuls (256 MiB each) with its weights in ``big.onnx.data``,
written to a temporary folder (deleted afterwards) without holding the weights in memory. The build runs
as users run it, from the model's own folder (``cd models && infer-compile big.onnx -o out/big.onnx``;
``--cwd parent`` builds from the folder above), in a child process of a small launcher: its wall time and
peak RSS are the build's own. The peak RSS / model size ratio is the figure to watch (goal: <= 1.5).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository, for tests.builders
from measure import VENV_BIN, run_measured

from tests.builders import CHAIN_WIDTH, write_chain_model

LAYER_BYTES = CHAIN_WIDTH * CHAIN_WIDTH * 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=float, nargs="+", default=[2.5, 5.0], help="model sizes in GiB")
    parser.add_argument("--cwd", choices=["model", "parent"], default="model", help="folder the build runs from")
    parser.add_argument("--keep", type=Path, help="write the models here and keep them (default: a temp folder)")
    args = parser.parse_args()

    root = args.keep or Path(tempfile.mkdtemp(prefix="large-model-bench-"))
    rows = []
    try:
        for size in args.sizes:
            layers = max(1, round(size * 2**30 / LAYER_BYTES))
            folder = root / f"{size:g}gb" / "models"
            source = write_chain_model(folder, layers)
            model_mib = layers * LAYER_BYTES / 2**20
            cwd = folder if args.cwd == "model" else folder.parent
            rel = source.relative_to(cwd)
            build = run_measured([str(VENV_BIN / "infer-compile"), str(rel), "-o", str(rel.parent / "out" / "big.onnx"),
                                  "--target", "onnxruntime", "--no-cache", "--no-tune"], cwd=cwd, check=False)
            ok = (folder / "out" / "big.onnx").is_file() and "error" not in build.output.lower()
            rows.append((layers, model_mib, build, ok))
            if not ok:
                print(next((line for line in build.output.splitlines() if "error" in line), "build failed"), flush=True)
            if not args.keep:
                shutil.rmtree(folder.parent)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(f"\nfp32 builds, onnxruntime target, run from the {args.cwd} folder\n")
    print("| model | layers | build s | peak RSS MiB | peak RSS / model | result |")
    print("|---|---|---|---|---|---|")
    for layers, model_mib, build, ok in rows:
        print(f"| {model_mib / 1024:.2f} GiB | {layers} | {build.seconds:.1f} | {build.peak_rss_mib:.0f} "
              f"| {build.peak_rss_mib / model_mib:.2f}x | {'ok' if ok else 'FAILED'} |")


if __name__ == "__main__":
    main()
