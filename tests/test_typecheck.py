"""mypy over the whole package (`make typecheck`) as part of the suite: a change that breaks a type fails here
too, for whoever runs only pytest before merging."""

from __future__ import annotations

import subprocess
import sys

from tests.stubs.typeview import ROOT

STUBS = ROOT / ".venv" / "typestubs"


def test_mypy_finds_no_errors() -> None:
    if not (STUBS / ".done").exists():  # written by `make install`; CI runs `make test`, which makes them
        raise AssertionError(f"no TensorRT stubs at {STUBS}: run `make install` (or `make typecheck`)")
    result = subprocess.run([sys.executable, "tests/stubs/typeview.py", ".venv/typeview", "--mypy"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
