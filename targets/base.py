"""What a target is: a backend that turns the optimized IR into a deployable artifact.

A target declares what it can do, says plainly whether it can run here, emits its files into
a staging area (``Target.compile`` makes that atomic and adds the manifest), and loads its own
artifacts back as a ``Runner``. Targets never import each other.
"""

from __future__ import annotations

import importlib.metadata
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from infer_compile.artifacts import StagedOutput, staged_output
from infer_compile.errors import TargetUnavailableError, UserInputError
from infer_compile.ir import Model, TensorSpec, file_digest
from infer_compile.numerics import Feeds


@dataclass(frozen=True)
class Availability:
    """Whether a target can build here; ``detail`` names the missing piece and the fix, or the versions found."""

    available: bool
    detail: str


@dataclass
class TargetRequest:
    """What the user asked of the target."""

    precision: str = "fp32"
    shape_ranges: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # dim name -> (min, opt, max)
    options: dict[str, Any] = field(default_factory=dict)  # target-specific settings (tuning, format, ...)
    calibration: Any = None  # representative samples (list of feeds by input name), when given


class Runner(ABC):
    """Runs a loaded artifact on numpy inputs; shared by `run`, `bench` and `verify`."""

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    @abstractmethod
    def run(self, feeds: Feeds) -> Feeds:
        """Outputs by name for inputs by name (arrays laid out as in the source model)."""


class Target(ABC):
    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    suffix: ClassVar[str]
    precisions: ClassVar[frozenset[str]]
    dynamic_shapes: ClassVar[bool]
    # Fused/contrib op forms the fusion passes may produce for this target (see passes.target_op).
    accepted_ops: ClassVar[frozenset[str]] = frozenset()
    # Auto selection prefers the available target with the highest rank.
    auto_rank: ClassVar[int] = 0
    description: ClassVar[str] = ""

    @abstractmethod
    def availability(self) -> Availability:
        """Never raises: checks libraries/hardware and says what is missing."""

    @abstractmethod
    def emit(self, model: Model, stage: StagedOutput, request: TargetRequest) -> dict[str, Any]:
        """Write the artifact to ``stage.artifact`` (and siblings); return manifest fields of its own."""

    @abstractmethod
    def load(self, artifact: Path, manifest: dict[str, Any]) -> Runner:
        """Load an artifact this target wrote."""

    def tool_versions(self) -> dict[str, str]:
        return {}

    def require_available(self) -> None:
        status = self.availability()
        if not status.available:
            raise TargetUnavailableError(f"target '{self.name}' is not available here: {status.detail}",
                                         hint="'infer-compile targets' shows what each target needs")

    def check_request(self, request: TargetRequest) -> None:
        if request.precision not in self.precisions:
            raise UserInputError(
                f"target '{self.name}' does not support {request.precision}",
                hint=f"it supports {', '.join(sorted(self.precisions))}",
            )

    def compile(self, model: Model, output: Path, request: TargetRequest,
                manifest: dict[str, Any]) -> list[Path]:
        """Emit atomically: nothing appears at ``output`` unless the artifact and manifest are complete."""
        self.check_request(request)
        with staged_output(output) as stage:
            own = self.emit(model, stage, request)
            files = sorted(p.name for p in stage.dir.iterdir())
            stage.write_manifest({**manifest, "target": self.name, "precision": request.precision,
                                  "artifact": {"file": output.name, "files": files,
                                               "sha256": file_digest(stage.artifact)},
                                  "tool_versions": {**manifest.get("tool_versions", {}), **self.tool_versions()},
                                  **own})
            return stage.commit()


def package_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
