"""Calibration range cache (JSON, keyed by model and data hashes) and TensorRT calibration-table export."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

from infer_compile.artifacts import atomic_write_text
from infer_compile.errors import UserInputError
from infer_compile.ir import Model, serialized

CACHE_SCHEMA = "infer-compile.calibration/1"
# trtexec reads "TRT-<version>-<algorithm>" then one "tensor: <big-endian float32 scale in hex>" per line.
TRT_CACHE_VERSION = "100000"
TRT_ALGORITHMS = {"minmax": "MinMaxCalibration", "entropy": "EntropyCalibration2"}


def model_digest(model: Model) -> str:
    return hashlib.sha256(serialized(model)).hexdigest()


def cache_key(model_sha: str, data_sha: str, method: str, percentile: float) -> dict[str, Any]:
    key: dict[str, Any] = {"model_sha256": model_sha, "data_sha256": data_sha, "method": method}
    if method == "percentile":
        key["percentile"] = percentile
    return key


def load_cached_ranges(path: Path, key: dict[str, Any], names: list[str]) -> dict[str, float] | None:
    """The cached ranges when the file exists, its key matches and it covers ``names``; else None."""
    if not path.is_file():
        return None
    try:
        body = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserInputError(f"--calib-cache {path}: not a readable calibration cache ({exc})",
                             hint="delete it; it is rebuilt on the next build") from None
    if body.get("schema") != CACHE_SCHEMA or body.get("key") != key:
        return None
    ranges = body.get("ranges", {})
    if not all(name in ranges for name in names):
        return None
    return {name: float(ranges[name]) for name in names}


def save_ranges(path: Path, key: dict[str, Any], ranges: dict[str, float]) -> None:
    body = {"schema": CACHE_SCHEMA, "key": key, "ranges": ranges}
    atomic_write_text(path, json.dumps(body, indent=1) + "\n")


def trt_calibration_table(ranges: dict[str, float], method: str) -> str:
    """TensorRT's calibration cache text: per tensor its int8 scale (amax / 127) as big-endian float hex."""
    algorithm = TRT_ALGORITHMS.get(method, TRT_ALGORITHMS["entropy"])
    lines = [f"TRT-{TRT_CACHE_VERSION}-{algorithm}"]
    lines += [f"{name}: {struct.pack('>f', amax / 127.0).hex()}" for name, amax in ranges.items()]
    return "\n".join(lines) + "\n"


def export_trt(path: Path, ranges: dict[str, float], method: str) -> None:
    atomic_write_text(path, trt_calibration_table(ranges, method))
