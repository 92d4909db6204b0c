"""Calibration: representative input data, the ranges it implies, and their cache."""

from infer_compile.calibration.calibrators import METHODS, AbsHistogram
from infer_compile.calibration.data import CalibrationData, CalibrationSettings, load_calibration
from infer_compile.calibration.readers import CalibrationWarning, ImagePreprocess, open_reader, validated

__all__ = [
    "METHODS",
    "AbsHistogram",
    "CalibrationData",
    "CalibrationSettings",
    "CalibrationWarning",
    "ImagePreprocess",
    "load_calibration",
    "open_reader",
    "validated",
]
