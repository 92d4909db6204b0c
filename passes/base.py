"""What a pass is: one job on the IR, with declared needs and a count of what it changed."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypedDict, TypeVar

from infer_compile.core.capabilities import Capability
from infer_compile.core.options import Option, read

if TYPE_CHECKING:  # light: a cache hit reads the build's PassRecords without loading the IR (onnx, graphsurgeon)
    from infer_compile.core.ir import Model

T = TypeVar("T")


@dataclass
class PassContext:
    """What a pass may use besides the graph.

    ``capabilities`` are what the chosen target declares (fused ops it runs, the Q/DQ placement it wants);
    ``options`` are the build's checked pass options by key (read them with ``option``); ``calibration``
    is whatever the calibration package hands over (None when no data was given); ``earlier`` are the
    results of the passes that already ran in this build, in order (the pass manager fills it).
    """

    target: str = ""  # name of the target being built for
    capabilities: frozenset[Capability] = frozenset()
    options: Mapping[str, Any] = field(default_factory=dict)
    calibration: Any = None
    shape_overrides: Mapping[str, int] = field(default_factory=dict)
    # The build's example inputs (user's, held-out calibration samples or graph-aware random; feeds by input name).
    examples: list[Any] = field(default_factory=list)
    # The source graph's outputs on ``examples`` when the build computed them (the final check's reference), else [].
    example_outputs: list[Any] = field(default_factory=list)
    # The target's Tuner (targets.base.Tuner) when autotuning was asked for; passes never import targets.
    tuner: Any = None
    tune_time: float = 0.0  # seconds autotuning may spend (--tune-time)
    # Live one-line status for long passes (the CLI shows it in its progress line).
    status: Callable[[str], None] | None = None
    earlier: Sequence[PassResult] = ()

    def provides(self, model: Model) -> frozenset[Capability]:
        caps = set(self.capabilities)
        if self.calibration is not None:
            caps.add(Capability.CALIBRATION)
        if self.tuner is not None:
            caps.add(Capability.TUNER)
        if all(spec.is_static for spec in model.inputs):
            caps.add(Capability.STATIC_SHAPES)
        return frozenset(caps)

    def option(self, option: Option[T]) -> T:
        """The build's value of an option the pass declares, else its default."""
        return read(self.options, option)

    def handed(self, kind: type[T]) -> T | None:
        """What the latest earlier pass handed over of type ``kind`` (``PassResult.handoff``), if any."""
        return next((r.handoff for r in reversed(self.earlier) if isinstance(r.handoff, kind)), None)


# How many nodes a near-miss reason names by example (--explain, the report).
MISS_EXAMPLES = 3


class MissSummary(TypedDict):
    """One reason a rule did not fire: on how many anchor nodes, and the first few of them by name."""

    count: int
    examples: list[str]


@dataclass
class PassRecord:
    """One line of the build table / report."""

    name: str
    status: str  # "applied", "unchanged" or "skipped"
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    nodes_before: int = 0
    nodes_after: int = 0
    reason: str = ""  # why it was skipped
    verification: dict | None = None  # worst-case figures vs the graph before this pass
    misses: dict[str, dict[str, MissSummary]] = field(default_factory=dict)  # rule -> why it did not fire -> nodes

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v not in (None, "")}


@dataclass
class PassResult:
    """What a pass did, said explicitly (nothing travels through side channels).

    ``counts``: what changed, per rewrite rule (``{"conv_bn": 3}``). ``manifest``: sections this pass adds to
    the artifact's manifest and the report (a section an earlier pass started is updated key by key).
    ``target_options``: runtime settings for the target (autotune's choice; the user's own options win).
    ``handoff``: state for a later pass of the same build, taken with ``PassContext.handed``.
    ``misses``: why rewrite rules did not fire on the other nodes they were tried at, rule -> reason ->
    MissSummary (--explain, the report).
    """

    counts: dict[str, int] = field(default_factory=dict)
    manifest: dict[str, dict[str, Any]] = field(default_factory=dict)
    target_options: dict[str, Any] = field(default_factory=dict)
    handoff: Any = None
    misses: dict[str, dict[str, MissSummary]] = field(default_factory=dict)

    @property
    def modified(self) -> bool:
        return any(self.counts.values())

    def add(self, rule: str, n: int = 1) -> None:
        self.counts[rule] = self.counts.get(rule, 0) + n

    def add_miss(self, rule: str, reason: str, node_name: str) -> None:
        summary = self.misses.setdefault(rule, {}).setdefault(reason, {"count": 0, "examples": []})
        summary["count"] += 1
        if len(summary["examples"]) < MISS_EXAMPLES:
            summary["examples"].append(node_name)


class Pass(ABC):
    """One graph rewrite with one job.

    Subclasses set ``name`` (the CLI name users pass to --skip-pass), a one-line ``description``, what they
    ``require`` of the context and the capabilities they adapt to (``uses``), the ``options`` they read
    (declared here once: the CLI flags, config keys and API keywords are made from them), and the
    ``precision`` whose tolerance --verify-passes applies to them (only precision-changing passes are not "fp32").
    """

    name: ClassVar[str]
    description: ClassVar[str]
    requires: ClassVar[frozenset[Capability]] = frozenset()
    # Capabilities it adapts to when the target has them (not required); a pass sees only these and ``requires``.
    uses: ClassVar[frozenset[Capability]] = frozenset()
    options: ClassVar[tuple[Option[Any], ...]] = ()
    precision: ClassVar[str] = "fp32"

    @abstractmethod
    def run(self, model: Model, ctx: PassContext) -> PassResult:
        """Rewrite ``model.graph`` in place and say what changed."""

    def __repr__(self) -> str:
        return f"<pass {self.name}>"
