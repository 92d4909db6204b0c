"""Conformance on ONNX's own backend test cases: ``python -m tests.conformance --help``."""
