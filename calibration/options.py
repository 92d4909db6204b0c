"""The calibration options (declared once) -> CalibrationSettings, and the precision summary line of a build.

Imports nothing heavy: the command line's flags are made from these declarations on every start, a cache hit
included; the readers and calibrators (numpy) load when a build calibrates.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infer_compile.core.options import Option, read

if TYPE_CHECKING:
    from infer_compile.calibration.data import CalibrationSettings

_CALIB = "calib"
CALIB: Option[str | None] = Option(
    _CALIB, str, None, "Calibration data: folder of .npy/.npz or images, pkg.mod:fn, or 'synthetic' (smoke tests).",
    path=True)
# The calibrators' names (calibrators.METHODS has one function each: tests/test_calibrators.py).
CALIB_METHOD = Option("calib_method", str, "minmax", "Activation range method.",
                      choices=("minmax", "percentile", "entropy", "mse"), needs=_CALIB)
PERCENTILE = Option("percentile", float, 99.99, "Percentile for --calib-method percentile.", needs=_CALIB)
CALIB_SAMPLES = Option("calib_samples", int, 128, "Use at most N calibration samples.", needs=_CALIB)
CALIB_CACHE: Option[str | None] = Option(
    "calib_cache", str, None, "JSON range cache: reused when model and data match, else written.", needs=_CALIB,
    path=True)
def _words(value: Any) -> list[str]:
    """KEY=VALUE words from repeated flags, one space-separated spec, or a config file's string or list."""
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list | tuple) or not all(isinstance(v, str) for v in values):
        raise TypeError(f"expected KEY=VALUE words, got {value!r}")
    return [word for text in values for word in text.split()]


CALIB_PREPROCESS: Option[list[str]] = Option(
    "calib_preprocess", list, [], "Image folder preprocessing KEY=VALUE words (repeatable, or one quoted spec): "
    "resize=256 crop=224 scale=0.00392 mean=0.485,0.456,0.406 std=... channels=rgb|bgr layout=nchw|nhwc "
    "dtype=float32 \\[default: the input's size, scale=1/255, mean=0, std=1, rgb, the input's layout and dtype].",
    needs=_CALIB, parse=_words)
CALIBRATION_OPTIONS = (CALIB, CALIB_METHOD, PERCENTILE, CALIB_SAMPLES, CALIB_CACHE, CALIB_PREPROCESS)


def calibration_settings(values: Mapping[str, Any]) -> CalibrationSettings | None:
    """The calibration options (checked values by key) as settings; None without --calib."""
    source = read(values, CALIB)
    if not source:
        return None
    from infer_compile.calibration.data import CalibrationSettings  # the readers: numpy, image decoding
    from infer_compile.calibration.readers import ImagePreprocess

    path = Path(source)
    cache = read(values, CALIB_CACHE)
    return CalibrationSettings(
        source=path if path.is_dir() else source, method=read(values, CALIB_METHOD),
        percentile=read(values, PERCENTILE), max_samples=read(values, CALIB_SAMPLES),
        cache=None if cache is None else Path(cache), preprocess=ImagePreprocess.parse(read(values, CALIB_PREPROCESS)))


def describe_precision(record: dict[str, Any] | None, final_check: dict[str, Any] | None = None) -> str | None:
    """One summary line: nodes per precision, calibration, accuracy vs fp32, layers kept in fp32.

    Accuracy is the final check's, measured on the artifact as written (after autotuning's per-layer
    choices), when it ran; else what the accuracy pass measured on the graph before autotuning.
    """
    if not record:
        return None
    nodes = record.get("nodes", {})
    parts = [" / ".join(f"{nodes.get(p, 0)} {p.upper()}" for p in ("int8", "fp16", "fp32")) + " nodes"]
    if nodes and not nodes.get("int8") and not nodes.get("fp16"):
        parts[0] = f"no layer runs in reduced precision: the artifact is fp32 ({parts[0]})"
    if weights := [f"{mib:g} MiB {dtype}" for dtype, mib in record.get("weights_mib", {}).items() if mib >= 0.01]:
        parts.append("weights " + ", ".join(weights))
    if "method" in record:
        cached = " (ranges from cache)" if record.get("ranges_from_cache") else ""
        parts.append(f"{record['method']} calibration on {record['samples']} samples "
                     f"({record['held_out']} held out){cached}")
    acc = final_check["figures"] if final_check else record.get("accuracy")
    if acc:
        top1 = f", top-1 {acc['top1_agreement']:.4f}" if acc.get("top1_agreement") is not None else ""
        measured = "the artifact" if final_check else "the graph before autotuning"
        parts.append(f"{measured} vs fp32: cosine {acc['cosine']:.6f}, max abs {acc['max_abs']:.3g}{top1}")
    if fallback := record.get("fallback"):
        kept = fallback["kept_fp32"]
        parts.append(f"to meet {fallback['budget']}: {len(kept)} layer(s) kept fp32"
                     + (f" ({', '.join(kept[:5])}{', ...' if len(kept) > 5 else ''})" if kept else ""))
    return "; ".join(parts)
