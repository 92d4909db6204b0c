"""Calibration data readers and activation-range calibrators for INT8 builds."""
