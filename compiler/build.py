"""One build: source model -> frontend -> pass pipeline -> target artifact + manifest."""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from infer_compile import __version__
from infer_compile.artifacts import read_manifest
from infer_compile.frontends import LoweredModel, SourceOptions, load_source
from infer_compile.ir import file_digest
from infer_compile.passes import PassContext, PassManager, PassRecord, build_pipeline
from infer_compile.passes.manager import ProgressHook
from infer_compile.targets import Target, TargetRequest, auto_target, get_target


@dataclass
class BuildOptions:
    """Everything a build depends on; the CLI, the config file and the Python API fill this."""

    target: str = "auto"
    precision: str = "fp32"
    output: Path | None = None
    source: SourceOptions = field(default_factory=SourceOptions)
    verify_passes: bool = False
    skip_passes: list[str] = field(default_factory=list)
    pass_options: dict[str, Any] = field(default_factory=dict)
    target_options: dict[str, Any] = field(default_factory=dict)
    # Dynamic dimension ranges by dim name: (min, opt, max). Targets that need profiles use them;
    # test runs (e.g. --verify-passes) use the opt value.
    shape_ranges: dict[str, tuple[int, int, int]] = field(default_factory=dict)


@dataclass
class BuildResult:
    artifact: Path
    files: list[Path]
    target: str
    target_reason: str
    source: LoweredModel
    records: list[PassRecord]
    nodes_before: int
    nodes_after: int
    seconds: float
    manifest: dict[str, Any]


def resolve_target(name: str) -> tuple[Target, str]:
    if name == "auto":
        return auto_target()
    return get_target(name), "requested"


def default_output(source: Path, target: Target) -> Path:
    return source.with_name(source.stem + "." + target.name + target.suffix)


def tool_versions() -> dict[str, str]:
    return {"infer-compile": __version__, "onnx": onnx.__version__, "onnx-graphsurgeon": gs.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def compile_model(source: Path, options: BuildOptions, progress: ProgressHook | None = None) -> BuildResult:
    """Build ``source`` as ``options`` say; raises InferCompileError subclasses for user problems."""
    start = time.perf_counter()
    source = Path(source)
    target, reason = resolve_target(options.target)
    request = TargetRequest(options.precision, dict(options.shape_ranges), dict(options.target_options))
    # Fail on an unusable target or precision before any expensive work.
    target.require_available()
    target.check_request(request)
    pipeline = build_pipeline(options.precision, options.skip_passes)

    lowered = load_source(source, options.source)
    model = lowered.model
    nodes_before = model.node_count
    ctx = PassContext(target=target.name, target_caps=target.accepted_ops, options=options.pass_options,
                      shape_overrides={dim: opt for dim, (_, opt, _) in options.shape_ranges.items()})
    records = PassManager(pipeline, verify=options.verify_passes, progress=progress).run(model, ctx)

    output = Path(options.output) if options.output else default_output(source, target)
    manifest = {
        "infer_compile": __version__,
        "source": {"path": source.name, "format": lowered.format, "sha256": file_digest(source),
                   **lowered.details},
        "inputs": [s.to_json() for s in model.inputs],
        "outputs": [s.to_json() for s in model.outputs],
        "passes": [r.name for r in records if r.status == "applied"],
        "shape_ranges": {dim: list(r) for dim, r in options.shape_ranges.items()},
        "tool_versions": tool_versions(),
        **ctx.records,
    }
    files = target.compile(model, output, request, manifest)
    return BuildResult(output, files, target.name, reason, lowered, records, nodes_before, model.node_count,
                       time.perf_counter() - start, read_manifest(output) or manifest)
