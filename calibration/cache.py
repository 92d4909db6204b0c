"""Calibration range cache (JSON, keyed by model and data hashes)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from infer_compile.core.artifacts import atomic_write_text, read_own_json
from infer_compile.core.ir import Model, serialized

CACHE_SCHEMA = "infer-compile.calibration/1"


def model_digest(model: Model) -> str:
    return hashlib.sha256(serialized(model)).hexdigest()


def graph_digest(model: Model) -> str:
    """sha256 over the graph without its weights, then every weight's bytes in place: identifies the graph
    without serializing a large model's weights (a second copy of them)."""
    digest = hashlib.sha256(serialized(model.to_proto(weights=False)))
    for weight in model.weight_constants():
        digest.update(np.ascontiguousarray(weight.values).data)
    return digest.hexdigest()


def cache_key(model_sha: str, data_sha: str, method: str, percentile: float) -> dict[str, Any]:
    key: dict[str, Any] = {"model_sha256": model_sha, "data_sha256": data_sha, "method": method}
    if method == "percentile":
        key["percentile"] = percentile
    return key


def load_cached_ranges(path: Path, key: dict[str, Any], names: list[str]) -> dict[str, float] | None:
    """The cached ranges when the file exists, its key matches and it covers ``names``; else None."""
    body = read_cache_file(path)
    if body is None or body.get("key") != key:
        return None
    ranges = body.get("ranges", {})
    if not all(name in ranges for name in names):
        return None
    return {name: float(ranges[name]) for name in names}


def read_cache_file(path: Path) -> dict[str, Any] | None:
    """The range cache at ``path``; None if there is none. A file we did not write is refused, never replaced."""
    return read_own_json(path, "--calib-cache", CACHE_SCHEMA)


def save_ranges(path: Path, key: dict[str, Any], ranges: dict[str, float]) -> None:
    read_cache_file(path)  # created by someone else while we calibrated: still not ours to replace
    body = {"schema": CACHE_SCHEMA, "key": key, "ranges": ranges}
    atomic_write_text(path, json.dumps(body, indent=1) + "\n")

