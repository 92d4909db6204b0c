"""The build report: one versioned JSON document per build (``--report build.json``)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from infer_compile.app.build import BuildResult
from infer_compile.core.artifacts import atomic_write_text

REPORT_SCHEMA = "infer-compile.build/2"
# Keys of the manifest's "quantization" record that describe the calibration data.
_CALIBRATION_KEYS = ("method", "samples", "source", "preprocess", "percentile", "ranges_from_cache")


def build_report(result: BuildResult) -> dict[str, Any]:
    """The report document; its fields are documented in the README ("The build report")."""
    manifest = result.manifest
    quantization = manifest.quantization or {}
    calibration = {k: quantization[k] for k in _CALIBRATION_KEYS if k in quantization}
    accuracy = {k: quantization[k] for k in ("accuracy", "fallback") if k in quantization}
    layers = layer_precisions(result)
    return {
        "schema": REPORT_SCHEMA,
        "artifact": {"path": str(result.artifact), "files": [str(f) for f in result.files],
                     "bytes": sum(f.stat().st_size for f in result.files if f.is_file()),
                     "sha256": manifest.artifact.sha256 if manifest.artifact else None},
        "target": {"name": result.target, "reason": result.target_reason},
        "source": manifest.build.source,
        "cache": result.cache,
        "seconds": round(result.seconds, 4),
        "nodes": {"before": result.nodes_before, "after": result.nodes_after},
        "passes": [r.to_json() for r in result.records],
        "precision": {"requested": manifest.precision,
                      "nodes": quantization.get("nodes") or (dict(Counter(layers.values())) if layers else None),
                      "layers": layers},
        "calibration": calibration or None,
        "accuracy": accuracy or None,
        "autotune": manifest.autotune,
        "final_check": manifest.final_check,
        "tool_versions": manifest.build.tool_versions,
        "manifest": manifest.to_json(),
    }


def layer_precisions(result: BuildResult) -> dict[str, str] | None:
    """Compute precision per node of the built graph; None for cache hits (no graph was built)."""
    if result.source is None:
        return None
    from infer_compile.passes.precision_state import node_precision

    return {node.name: node_precision(node) for node in result.source.model.graph.nodes}


def write_report(result: BuildResult, path: Path) -> None:
    atomic_write_text(path, json.dumps(build_report(result), indent=2, default=str) + "\n")
