"""What a pass is: one job on the IR, with declared needs and a count of what it changed."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from infer_compile.core.ir import Model

# Capabilities a pass may require of its context (see PassContext.provides):
CALIBRATION = "calibration"  # representative input data is available
STATIC_SHAPES = "static-shapes"  # every graph input has a concrete shape
TUNER = "tuner"  # the target can time runtime configurations here (see targets.base.Tuner)


def target_op(domain: str, op: str) -> str:
    """The capability a target advertises when it runs the fused op ``domain::op``."""
    return f"op:{domain or 'ai.onnx'}::{op}"


# Q/DQ placement a target's INT8 kernels want beyond TensorRT's rules (advertised like target_op, see
# passes.quantize_int8): OpenVINO's low-precision transformations keep residual Adds and pooling in int8 only
# when all their inputs are quantized, and run post-ReLU activations as u8.
QDQ_PLACEMENT_LPT = "qdq-placement:lpt"
# ONNX Runtime runs QLinearConv/QLinearAdd only when the op's output is quantized too.
QDQ_PLACEMENT_QLINEAR = "qdq-placement:qlinear-outputs"
# Signed activations get an asymmetric int8 quantizer (zero-point, scale = (max - min) / 255) instead of a
# symmetric one: ONNX Runtime takes any zero-point; TensorRT needs zero-point 0.
QDQ_ASYMMETRIC_ACTIVATIONS = "qdq-activations:asymmetric"


@dataclass
class PassContext:
    """What a pass may use besides the graph.

    ``target_caps`` are the fused/contrib forms the chosen target accepts (``target_op``) and the Q/DQ
    placement it wants (``QDQ_PLACEMENT_LPT``, ``QDQ_PLACEMENT_QLINEAR``, ``QDQ_ASYMMETRIC_ACTIVATIONS``);
    ``options`` are pass options by key (e.g. ``fold_size_limit``); ``calibration`` is whatever
    the calibration package hands over (None when no data was given).
    """

    target: str = ""  # name of the target being built for
    target_caps: frozenset[str] = frozenset()
    options: Mapping[str, Any] = field(default_factory=dict)
    calibration: Any = None
    shape_overrides: Mapping[str, int] = field(default_factory=dict)
    # The build's example inputs (user's, held-out calibration samples or graph-aware random; feeds by input name).
    examples: list[Any] = field(default_factory=list)
    # The target's Tuner (targets.base.Tuner) when autotuning was asked for; passes never import targets.
    tuner: Any = None
    # Live one-line status for long passes (the CLI shows it in its progress line).
    status: Callable[[str], None] | None = None
    # Filled by the pass manager for later passes and the report (e.g. per-layer precision).
    records: dict[str, Any] = field(default_factory=dict)

    def provides(self, model: Model) -> frozenset[str]:
        caps = set(self.target_caps)
        if self.calibration is not None:
            caps.add(CALIBRATION)
        if self.tuner is not None:
            caps.add(TUNER)
        if all(spec.is_static for spec in model.inputs):
            caps.add(STATIC_SHAPES)
        return frozenset(caps)

    def option(self, key: str, default: Any) -> Any:
        return self.options.get(key, default)


@dataclass
class PassResult:
    """What a pass changed: a count per rewrite rule (``{"conv_bn": 3}``)."""

    counts: dict[str, int] = field(default_factory=dict)

    @property
    def modified(self) -> bool:
        return any(self.counts.values())

    def add(self, rule: str, n: int = 1) -> None:
        self.counts[rule] = self.counts.get(rule, 0) + n


class Pass(ABC):
    """One graph rewrite with one job.

    Subclasses set ``name`` (the CLI name users pass to --skip-pass), a one-line
    ``description``, what they ``require`` of the context, and the ``precision`` whose tolerance
    --verify-passes applies to them (only precision-changing passes are not "fp32").
    """

    name: ClassVar[str]
    description: ClassVar[str]
    requires: ClassVar[frozenset[str]] = frozenset()
    precision: ClassVar[str] = "fp32"

    @abstractmethod
    def run(self, model: Model, ctx: PassContext) -> PassResult:
        """Rewrite ``model.graph`` in place and say what changed."""

    def __repr__(self) -> str:
        return f"<pass {self.name}>"
