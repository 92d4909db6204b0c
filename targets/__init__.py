"""The target registry: every backend infer-compile can emit artifacts for."""

from __future__ import annotations

from pathlib import Path

from infer_compile.artifacts import read_manifest
from infer_compile.errors import UserInputError
from infer_compile.targets.base import Availability, Runner, Target, TargetRequest
from infer_compile.targets.onnxruntime import OnnxRuntimeTarget

TARGETS: list[Target] = [OnnxRuntimeTarget()]


def get_target(name: str) -> Target:
    for target in TARGETS:
        if name == target.name or name in target.aliases:
            return target
    names = ", ".join(t.name for t in TARGETS)
    raise UserInputError(f"unknown target '{name}'", hint=f"choose auto or one of: {names}")


def auto_target() -> tuple[Target, str]:
    """The best target that can build on this machine, and why it was chosen."""
    ranked = sorted(TARGETS, key=lambda t: -t.auto_rank)
    passed_over = []
    for target in ranked:
        status = target.availability()
        if status.available:
            why = f"best available here ({status.detail})"
            if passed_over:
                why += "; not available: " + "; ".join(passed_over)
            return target, why
        passed_over.append(f"{target.name} ({status.detail})")
    raise AssertionError("the onnxruntime target is always available")


def target_for_artifact(artifact: Path) -> tuple[Target, dict]:
    """The target that wrote ``artifact`` (from its manifest, else from its suffix)."""
    if not artifact.exists():
        raise UserInputError(f"{artifact}: no such file", hint="check the artifact path")
    manifest = read_manifest(artifact)
    if manifest is not None:
        return get_target(manifest["target"]), manifest
    for target in TARGETS:
        if artifact.suffix == target.suffix:
            return target, {}
    raise UserInputError(f"{artifact}: cannot tell which target wrote it (no manifest beside it)",
                         hint="keep the .manifest.json that infer-compile wrote next to the artifact")


def load_artifact(artifact: Path) -> Runner:
    target, manifest = target_for_artifact(artifact)
    target.require_available()
    return target.load(artifact, manifest)


__all__ = ["TARGETS", "Availability", "Runner", "Target", "TargetRequest", "auto_target", "get_target",
           "load_artifact", "target_for_artifact"]
