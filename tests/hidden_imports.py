"""Run the CLI in a fresh interpreter in which an optional package cannot be imported, as on a machine
without that extra (nothing is mocked); or see which packages a command imports."""

from __future__ import annotations

import json
import subprocess
import sys

# None in sys.modules: importing the package raises ModuleNotFoundError and importlib.util.find_spec answers None,
# as when it is not installed (libraries that probe for it, such as transformers or torch.onnx, carry on).
_HIDE = """
import sys
sys.modules[{package!r}] = None
from infer_compile.app.cli import main
sys.argv = ["infer-compile", *{args!r}]
main()
"""


def run_cli_without(package: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    """`infer-compile ARGS` with ``package`` hidden; returns the finished process (stdout/stderr as text)."""
    script = _HIDE.format(package=package, args=[str(a) for a in args])
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)


# The modules in sys.modules once the command has finished, as the last line of stdout.
_REPORT = """
import json, sys
from infer_compile.app.cli import main
sys.argv = ["infer-compile", *{args!r}]
try:
    main()
finally:
    print(json.dumps(sorted(sys.modules)))
"""


def cli_imports(args: list[str]) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """`infer-compile ARGS` in a fresh interpreter: the finished process and the modules it imported (full names:
    ``top_level`` gives their packages)."""
    script = _REPORT.format(args=[str(a) for a in args])
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    return done, set(json.loads(done.stdout.splitlines()[-1]))


def top_level(modules: set[str]) -> set[str]:
    """The top-level packages of ``modules``: {"numpy.linalg", "onnx"} -> {"numpy", "onnx"}."""
    return {name.partition(".")[0] for name in modules}
