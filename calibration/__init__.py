"""Calibration: representative input data, the ranges it implies, and their cache.

The names below are imported on first use (PEP 562): the calibration options (``options``) are read to make the
command line's flags, which must not load numpy-heavy readers, or a cache hit would pay for them.
"""

import importlib
from typing import Any

_HOMES = {"METHODS": "calibrators", "AbsHistogram": "calibrators", "CalibrationData": "data",
          "CalibrationSettings": "data", "load_calibration": "data", "CalibrationWarning": "readers",
          "ImagePreprocess": "readers", "open_reader": "readers", "validated": "readers"}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)


__all__ = sorted(_HOMES)
