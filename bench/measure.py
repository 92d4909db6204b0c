"""Wall time and peak resident memory of one command, measured in a child process.

The kernel carries a parent's peak RSS into a child it spawns (vfork + exec), so a build started from a
bench process that loaded torch (600+ MiB) would report at least that much: commands start from a small
launcher process, which reports its child's own peak (``os.wait4``; tracemalloc would miss native
allocations).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

VENV_BIN = Path(sys.executable).parent

# Runs argv[1:] and prints its exit code, wall seconds, peak RSS (KiB) and CPU seconds (user + system) on the
# last line, its output before.
MEASURE_SCRIPT = """
import os, subprocess, sys, time
start = time.perf_counter()
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
output = child.stdout.read()
_, status, usage = os.wait4(child.pid, 0)
print(output)
print(os.waitstatus_to_exitcode(status), time.perf_counter() - start, usage.ru_maxrss,
      usage.ru_utime + usage.ru_stime)
"""


@dataclass
class Build:
    seconds: float
    peak_rss_mib: float
    output: str = ""
    exit_code: int = 0
    cpu_seconds: float = 0.0  # user + system: less sensitive than wall seconds to other processes


def run_measured(cmd: list[str], cwd: Path | None = None, check: bool = True) -> Build:
    """Run ``cmd`` (in ``cwd``) as a child process; its wall time and peak resident memory.
    ``check``: exit with the command's output when it fails."""
    lines = subprocess.run([sys.executable, "-c", MEASURE_SCRIPT, *cmd], capture_output=True, text=True,
                           check=True, cwd=cwd).stdout.splitlines()
    code, seconds, max_rss, cpu = lines[-1].split()
    output = "\n".join(lines[:-1])
    if check and int(code) != 0:
        raise SystemExit(f"build failed: {' '.join(cmd)}\n{output}")
    return Build(float(seconds), int(max_rss) / 1024, output, int(code), float(cpu))  # ru_maxrss is KiB on Linux
