"""The build report: one versioned JSON document per build (``--report build.json``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from infer_compile.artifacts import atomic_write_text
from infer_compile.build import BuildResult

REPORT_SCHEMA = "infer-compile.build/1"


def build_report(result: BuildResult) -> dict[str, Any]:
    return {
        "schema": REPORT_SCHEMA,
        "artifact": {"path": str(result.artifact), "files": [str(f) for f in result.files],
                     "bytes": sum(f.stat().st_size for f in result.files if f.is_file()),
                     "sha256": result.manifest.get("artifact", {}).get("sha256")},
        "target": {"name": result.target, "reason": result.target_reason},
        "precision": result.manifest.get("precision"),
        "source": result.manifest.get("source"),
        "nodes": {"before": result.nodes_before, "after": result.nodes_after},
        "passes": [r.to_json() for r in result.records],
        "seconds": round(result.seconds, 4),
        "manifest": result.manifest,
    }


def write_report(result: BuildResult, path: Path) -> None:
    atomic_write_text(path, json.dumps(build_report(result), indent=2, default=str) + "\n")
