"""Calibration: representative input data, the ranges it implies, and their cache.

The names below are imported on first use (PEP 562): the calibration options (``options``) are read to make the
command line's flags, which must not load numpy-heavy readers, or a cache hit would pay for them.
"""

from typing import TYPE_CHECKING

from infer_compile.core.lazy import lazy_attributes

if TYPE_CHECKING:
    from infer_compile.calibration.calibrators import METHODS, AbsHistogram
    from infer_compile.calibration.data import CalibrationData, CalibrationSettings, load_calibration
    from infer_compile.calibration.readers import CalibrationWarning, ImagePreprocess, open_reader, validated

_HOMES = {"METHODS": "calibrators", "AbsHistogram": "calibrators", "CalibrationData": "data",
          "CalibrationSettings": "data", "load_calibration": "data", "CalibrationWarning": "readers",
          "ImagePreprocess": "readers", "open_reader": "readers", "validated": "readers"}
__getattr__ = lazy_attributes(__name__, _HOMES)
__all__ = ["METHODS", "AbsHistogram", "CalibrationData", "CalibrationSettings", "CalibrationWarning", "ImagePreprocess",
           "load_calibration", "open_reader", "validated"]
