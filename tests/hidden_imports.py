"""Run the CLI in a fresh interpreter in which an optional package cannot be imported, as on a machine
without that extra (the package is hidden by a meta-path finder; nothing is mocked)."""

from __future__ import annotations

import subprocess
import sys

_HIDE = """
import sys
class Hide:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == {package!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Hide())
from infer_compile.app.cli import main
sys.argv = ["infer-compile", *{args!r}]
main()
"""


def run_cli_without(package: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    """`infer-compile ARGS` with ``package`` hidden; returns the finished process (stdout/stderr as text)."""
    script = _HIDE.format(package=package, args=[str(a) for a in args])
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
