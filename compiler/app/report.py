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
    details = layer_details(result)
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
                      "layers": layers, "details": details},
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


def layer_details(result: BuildResult) -> dict[str, dict[str, Any]] | None:
    """Per node of the built graph: its op, output tensor names and the source module it came from (the
    exporter's record, else the path in its name); None for cache hits."""
    if result.source is None:
        return None
    from infer_compile.app.html_report import module_path

    model = result.source.model
    def recorded(node: Any) -> dict[str, str] | None:
        keys = (node.name, *(t.name for t in node.outputs))
        return next((model.node_metadata[key] for key in keys if key in model.node_metadata), None)

    return {node.name: {"op": node.op, "outputs": [t.name for t in node.outputs],
                        "module": module_path(node.name, recorded(node))}
            for node in model.graph.nodes}


def write_report(result: BuildResult, path: Path) -> Path | None:
    """The report at ``path``: JSON, or for a .html path the page (and its Model Explorer overlay, returned)."""
    if path.suffix.lower() in (".html", ".htm"):
        from infer_compile.app.html_report import write_html

        return write_html(build_report(result), path)
    atomic_write_text(path, json.dumps(build_report(result), indent=2, default=str) + "\n")
    return None


def check_report(path: Path) -> None:
    """Before the build: ``path`` can take the report and replaces only an earlier one of ours."""
    if path.suffix.lower() in (".html", ".htm"):
        from infer_compile.app.html_report import check_html_path

        check_html_path(path)
        return
    from infer_compile.app.outputs import check_report_path

    check_report_path(path, REPORT_SCHEMA)
