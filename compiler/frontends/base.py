"""What a frontend is: it recognises a model file by its contents and lowers it to the IR."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from infer_compile.ir import Model


@dataclass
class SourceOptions:
    """How to read the source model (shapes the user pinned, trust decisions, framework extras)."""

    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # frontend-specific settings


@dataclass
class LoweredModel:
    """A source model lowered to the IR, with what the report should say about how."""

    model: Model
    format: str  # e.g. "onnx", "torchscript", "savedmodel"
    details: dict[str, Any] = field(default_factory=dict)  # exporter used, export max error, ...


class Frontend(ABC):
    name: ClassVar[str]
    description: ClassVar[str]

    @abstractmethod
    def accepts(self, path: Path) -> bool:
        """True when ``path``'s contents (not just its suffix) look like this frontend's format."""

    @abstractmethod
    def load(self, path: Path, options: SourceOptions) -> LoweredModel:
        """Lower the model at ``path`` to the IR; raise InferCompileError for bad input."""
