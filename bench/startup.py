"""Start-up of the command line: `infer-compile --help` and a cache hit (ONNX Runtime; OpenVINO too when it is
installed), against a bare Python start and the import of typer + rich (the CLI's floor), all measured in this run,
interleaved.

    python bench/startup.py [--runs 10]

Each command runs ``--runs`` times round-robin (so machine load hits them alike); the table gives medians and
each one's ratio to the bare Python start. Prints the load average: on a busy machine every figure grows. The
CPU seconds (user + system of the child) grow much less with load than the wall time: on a shared machine they
are the closer estimate of the wall time a quiet machine gives.

The commands run with Python's bytecode cache on (PYTHONDONTWRITEBYTECODE removed), as in any installed copy:
without it every run compiles infer-compile's ~80 modules from source again (~0.3 s on this machine).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "tiny_cnn.onnx"


def commands(work: Path) -> dict[str, list[str]]:
    cli = [sys.executable, "-m", "infer_compile.app.cli"]
    runs = {"python (baseline)": [sys.executable, "-c", "pass"],
            "import typer, rich": [sys.executable, "-c", "import typer, rich.console, rich.table"],
            "infer-compile --help": [*cli, "--help"],
            "infer-compile build --help": [*cli, "build", "--help"],
            "cache hit (tiny_cnn)": [*cli, str(EXAMPLE), "-t", "onnxruntime", "-o", str(work / "m.onnx"),
                                     "--tune-time", "0"]}
    if importlib.util.find_spec("openvino") is not None:
        runs["cache hit (tiny_cnn, openvino)"] = [*cli, str(EXAMPLE), "-t", "openvino", "-o", str(work / "m.xml"),
                                                  "--tune-time", "0"]
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = {**os.environ, "INFER_COMPILE_CACHE_DIR": str(work / "cache")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        runs = commands(work)
        for name, command in runs.items():
            if name.startswith("cache"):
                subprocess.run(command, env=env, check=True, capture_output=True)  # fills the cache
        times: dict[str, list[float]] = {name: [] for name in runs}
        cpu: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.runs):
            for name, command in runs.items():
                start, cpu_start = time.perf_counter(), children_cpu()
                done = subprocess.run(command, env=env, capture_output=True, text=True)
                times[name].append(time.perf_counter() - start)
                cpu[name].append(children_cpu() - cpu_start)
                if done.returncode != 0 or (name.startswith("cache") and "hit" not in done.stdout):
                    raise SystemExit(f"{name} failed: {done.stderr or done.stdout}")
    base = statistics.median(times["python (baseline)"])
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; {args.runs} runs each, interleaved")
    print(f"{'command':<32} {'median s':>9} {'best s':>8} {'x python':>9} {'CPU s':>7}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<32} {median:>9.3f} {min(values):>8.3f} {median / base:>9.1f} "
              f"{statistics.median(cpu[name]):>7.3f}")


def children_cpu() -> float:
    """User + system CPU seconds of this process's finished children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()
