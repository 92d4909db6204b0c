"""Package attributes imported on first use (PEP 562): a package keeps its names importable from it while
importing it loads none of their modules (the command line reads declarations on every start, a cache hit
included, and must not pay for numpy, onnx or the passes there)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_attributes(package: str, homes: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: each name in ``homes`` (name -> its module, relative to
    ``package``) is taken from that module when first asked for."""

    def __getattr__(name: str) -> Any:
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{homes[name]}"), name)

    return __getattr__
