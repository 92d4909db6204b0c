"""The build cache: a cold build (and what storing the entry costs) vs a cache hit.

    python bench/build_cache.py [--models resnet50] [--targets onnxruntime,openvino] [--tune-time 2]
                                [--cache out/bench]

For each model x target: a build without the cache (baseline), a build that misses and stores the
entry, and a build that hits; the table gives the hit's speed-up over the baseline and the store's
overhead, all measured in this run. The hit's artifact is checked to be byte-identical.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import models as zoo

from infer_compile.app.build import BuildOptions, compile_model
from infer_compile.targets import get_target


def timed_build(source: Path, output: Path, target: str, tune_time: float, cache: Path | None) -> tuple[float, str]:
    start = time.perf_counter()
    options = BuildOptions(target=target, output=output, tune_time=tune_time, cache_dir=cache)
    result = compile_model(source, options)
    return time.perf_counter() - start, result.cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet50")
    parser.add_argument("--targets", default="onnxruntime,openvino")
    parser.add_argument("--tune-time", type=float, default=2.0)
    parser.add_argument("--cache", type=Path, default=Path("out/bench"), help="where exported models are kept")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as tmp:
        root = Path(tmp)
        for name in args.models.split(","):
            source = zoo.export_model(name, args.cache)
            for target in args.targets.split(","):
                out, artifact = root / target, name + get_target(target).suffix
                base, _ = timed_build(source, out / "plain" / artifact, target, args.tune_time, None)
                output = out / "cached" / artifact
                cold, stored = timed_build(source, output, target, args.tune_time, root / "cache")
                first = {p.name: p.read_bytes() for p in output.parent.iterdir()}
                hit, status = timed_build(source, output, target, args.tune_time, root / "cache")
                assert status == "hit" and stored.startswith("miss"), (stored, status)
                assert first == {p.name: p.read_bytes() for p in output.parent.iterdir()}, "hit is not identical"
                rows.append((name, target, base, cold, hit))
    print(f"{'model':<12} {'target':<12} {'no cache s':>10} {'miss+store s':>12} {'hit s':>8} "
          f"{'store overhead':>14} {'hit speed-up':>12}")
    for name, target, base, cold, hit in rows:
        print(f"{name:<12} {target:<12} {base:>10.2f} {cold:>12.2f} {hit:>8.3f} {cold / base:>13.2f}x "
              f"{base / hit:>11.1f}x")


if __name__ == "__main__":
    main()
