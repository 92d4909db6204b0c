"""The target registry: every backend infer-compile can emit artifacts for."""

from __future__ import annotations

from pathlib import Path

from infer_compile.core.errors import InferCompileError, UserInputError
from infer_compile.core.manifest import Manifest, invalid_manifest, read_manifest
from infer_compile.targets.base import Availability, Runner, Target, TargetRequest
from infer_compile.targets.onnxruntime import OnnxRuntimeTarget
from infer_compile.targets.openvino import OpenVinoTarget
from infer_compile.targets.tensorrt import TensorRtTarget
from infer_compile.targets.tflite import TfliteTarget

TARGETS: list[Target] = [OnnxRuntimeTarget(), OpenVinoTarget(), TensorRtTarget(), TfliteTarget()]


def get_target(name: str) -> Target:
    for target in TARGETS:
        if name == target.name or name in target.aliases:
            return target
    names = ", ".join(t.name for t in TARGETS)
    raise UserInputError(f"unknown target '{name}'", hint=f"choose auto or one of: {names}")


def auto_target() -> tuple[Target, str]:
    """The best target that can build on this machine, and why it was chosen."""
    ranked = sorted(TARGETS, key=lambda t: -t.auto_rank)
    passed_over: list[str] = []
    for target in ranked:
        status = target.availability()
        if status.available:
            return target, "; ".join([f"auto: best available here, {status.detail}", *passed_over])
        passed_over.append(f"passed over {target.name}: {status.detail}")
    raise AssertionError("the onnxruntime target is always available")


def target_for_artifact(artifact: Path) -> tuple[Target, Manifest | None]:
    """The target that wrote ``artifact`` (from its manifest, else from its suffix) and the manifest."""
    if not artifact.exists():
        raise UserInputError(f"{artifact}: no such file", hint="check the artifact path")
    manifest = read_manifest(artifact)
    if manifest is not None:
        try:
            return get_target(manifest.target), manifest
        except UserInputError as exc:  # a target this version does not know: the manifest is the problem
            raise invalid_manifest(artifact, exc.message) from None
    for target in TARGETS:
        if artifact.suffix == target.suffix:
            return target, None
    raise UserInputError(f"{artifact}: cannot tell which target wrote it (no manifest beside it)",
                         hint="keep the .manifest.json that infer-compile wrote next to the artifact")


def load_artifact(artifact: Path) -> Runner:
    """A runner for ``artifact``; a file its target cannot load is a user error, not a crash."""
    target, manifest = target_for_artifact(artifact)
    target.require_available()
    try:
        return target.load(artifact, manifest)
    except InferCompileError:
        raise
    except Exception as exc:
        detail = (str(exc).strip().splitlines() or [""])[0][:200]
        raise UserInputError(f"{artifact}: cannot load it as a {target.name} artifact ({type(exc).__name__}: "
                             f"{detail})", hint="the file may be damaged or not written by infer-compile; "
                             "rebuild it") from exc


__all__ = ["TARGETS", "Availability", "Runner", "Target", "TargetRequest", "auto_target", "get_target",
           "load_artifact", "target_for_artifact"]
