"""What a target is: a backend that turns the optimized IR into a deployable artifact.

A target declares what it can do, says plainly whether it can run here, emits its files into
a staging area (``Target.compile`` makes that atomic and adds the manifest), and loads its own
artifacts back as a ``Runner``. Targets never import each other.

Target modules import numpy, the IR (onnx, graphsurgeon) and their runtime inside the functions that use them: the
command line reads every target's declarations (options, suffixes, versions) on each start, a cache hit included,
which needs none of those (tests/test_cache.py checks it).
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from infer_compile.core import progress
from infer_compile.core.artifacts import StagedOutput, file_digest, staged_output
from infer_compile.core.capabilities import Capability
from infer_compile.core.errors import TargetUnavailableError, UserInputError
from infer_compile.core.manifest import ArtifactFiles, BuildFacts, Manifest
from infer_compile.core.options import Option, checked
from infer_compile.core.shapes import ShapeRange

if TYPE_CHECKING:
    from infer_compile.core.ir import Model, TensorSpec
    from infer_compile.core.numerics import Feeds
    from infer_compile.passes import Pass

# Judges a staged artifact (compiler.verification.FinalCheck): called with a loader of its runner, the
# target's name and the precision to judge by; returns the check's manifest record or raises.
FinalCheck = Callable[[Callable[[], "Runner"], str, str], Mapping[str, Any]]


@dataclass(frozen=True)
class Availability:
    """Whether a target can build here; ``detail`` names the missing piece and the fix, or the versions found."""

    available: bool
    detail: str


@dataclass
class TargetRequest:
    """What the user asked of the target."""

    precision: str = "fp32"
    shape_ranges: dict[str, ShapeRange] = field(default_factory=dict)  # by dim name
    options: dict[str, Any] = field(default_factory=dict)  # target-specific settings (tuning, format, ...)
    calibration: Any = None  # representative samples (re-iterable feeds by input name, read anew per pass)
    source_module: Any = None  # the source as a framework object when it is one (LoweredModel.module)


class Runner(ABC):
    """Runs a loaded artifact on numpy inputs; shared by `run`, `bench`, `verify` and ``infer_compile.load``.

    One contract for every target: ``run`` first checks the feeds against ``inputs`` (names, dtypes, and
    shapes, dynamic dims taking any size) and raises UserInputError saying what the artifact takes, before
    the runtime sees them; ``close()`` (or leaving a ``with`` block) releases the runtime's resources.
    """

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    _closed: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Every target's run() is wrapped here rather than trusted to check its own feeds: runtimes report
        # the same mistake differently (ONNX Runtime a ValueError, OpenVINO a KeyError or a silent cast).
        if "run" in cls.__dict__:
            cls.run = _checking_feeds(cls.__dict__["run"])  # type: ignore[method-assign, assignment]

    @abstractmethod
    def run(self, feeds: Feeds) -> Feeds:
        """Outputs by name for inputs by name (arrays laid out as in the source model)."""

    def close(self) -> None:
        """Release the runtime's resources (sessions, compiled models, device memory); safe to call twice.
        Runners that hold any override this and call it."""
        self._closed = True

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _checking_feeds(run: Callable[[Runner, Feeds], Feeds]) -> Callable[[Runner, Feeds], Feeds]:
    @functools.wraps(run)
    def checked(self: Runner, feeds: Feeds) -> Feeds:
        if self._closed:
            raise UserInputError("this runner was closed", hint="load the artifact again (infer_compile.load)")
        check_feeds(self.inputs, feeds)
        return run(self, feeds)
    return checked


def check_feeds(specs: list[TensorSpec], feeds: Any) -> None:
    """Refuse feeds that do not fit ``specs``: unknown or missing names, other dtypes, other sizes of fixed dims.
    Runs before every inference: the messages are built only when something is wrong."""
    import numpy as np

    def takes() -> str:
        return "; ".join(s.describe() for s in specs)

    if not isinstance(feeds, Mapping):
        raise UserInputError(f"inputs must be a dict of numpy arrays by input name, not {type(feeds).__name__}",
                             hint=f"the artifact takes {takes()}")
    if len(feeds) != len(specs) or any(s.name not in feeds for s in specs):
        names = [s.name for s in specs]
        if unknown := [str(n) for n in feeds if n not in names]:
            raise UserInputError(f"the artifact has no input named {', '.join(map(repr, unknown))}",
                                 hint=f"it takes {takes()}")
        missing = [n for n in names if n not in feeds]
        raise UserInputError(f"no data for input(s) {', '.join(map(repr, missing))}",
                             hint=f"the artifact takes {takes()}")
    for spec in specs:
        value = feeds[spec.name]
        if spec.sequence:
            if not isinstance(value, list) or any(not isinstance(v, np.ndarray) or v.dtype != spec.dtype
                                                  for v in value):
                raise UserInputError(f"input '{spec.name}' must be a list of {spec.dtype.name} arrays",
                                     hint=f"the artifact takes {spec.describe()}")
            continue
        if not isinstance(value, np.ndarray):
            raise UserInputError(f"input '{spec.name}' is a {type(value).__name__}, not a numpy array",
                                 hint=f"pass numpy.asarray(...) as {spec.describe()}")
        if value.dtype != spec.dtype:
            raise UserInputError(f"input '{spec.name}' is {value.dtype}, the artifact takes {spec.describe()}",
                                 hint=f"convert it with .astype(numpy.{spec.dtype.name})")
        if not spec.accepts_shape(value.shape):
            raise UserInputError(f"input '{spec.name}' has shape {list(value.shape)}, the artifact takes "
                                 f"{spec.describe()}", hint="fix the array's shape (batch and layout); named "
                                                            "and ? dims take any size")


@dataclass(frozen=True)
class TuningCandidate:
    """One runtime configuration worth timing; ``settings`` are what emit()/load() apply if it wins."""

    label: str
    settings: dict[str, Any]


class Tuner(ABC):
    """Times runtime configurations of one target on the build machine (the `autotune` pass drives it)."""

    # Key of request.options (at emit) under which the chosen settings reach the target.
    option_key: ClassVar[str]
    # Whether INT8 layers are timed against fp32 and demoted when not faster (runtimes that do
    # no such selection themselves).
    per_layer_precision: ClassVar[bool] = False

    @abstractmethod
    def candidates(self, model: Model) -> list[TuningCandidate]:
        """Configurations to time, the target's default first (it wins ties)."""

    @abstractmethod
    def prepare(self, model: Model, settings: dict[str, Any]) -> Callable[[Feeds], object]:
        """Load ``model`` with ``settings``; the callable runs it once (what the pass times)."""


# Instruction-set extensions that decide which kernels and precisions a CPU runtime uses (bf16/fp16/int8 paths).
CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8",
                "amx_fp16")


@functools.cache
def cpu_identity() -> dict[str, str]:
    """This machine's CPU as a build-cache key sees it: model, usable CPUs, and its CPU_FEATURES (Linux; elsewhere
    platform.processor()). Read from /proc/cpuinfo, not a runtime: a cache hit imports none."""
    import platform

    model, flags = platform.processor() or platform.machine(), set()
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        info = ""
    for line in info.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            model = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
            break
    return {"cpu": model, "cpus": str(usable_cpus()), "cpu_features": ",".join(f for f in CPU_FEATURES if f in flags)}


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def thread_counts() -> list[int]:
    """Thread counts worth trying here: powers of two up to the CPUs this process may use, and that count."""
    cpus = usable_cpus()
    return sorted({*(1 << i for i in range(cpus.bit_length()) if 1 << i <= cpus), cpus})


class Target(ABC):
    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    suffix: ClassVar[str]
    # Other file name suffixes its artifacts may have (-o model.ort): the target writes that format.
    other_suffixes: ClassVar[tuple[str, ...]] = ()
    # What emit() does, as the progress display names it ("tflite: onnx2tf conversion and TFLiteConverter").
    conversion: ClassVar[str] = "writing the artifact"
    precisions: ClassVar[frozenset[str]]
    dynamic_shapes: ClassVar[bool]
    # The settings a user may give this target (TargetRequest.options): the CLI flags, config keys and API
    # keywords are made from these declarations.
    options: ClassVar[tuple[Option[Any], ...]] = ()
    # What it runs beyond plain ONNX (fused/contrib ops) and how it wants Q/DQ placed: passes requiring
    # a capability run only for targets declaring it.
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    # Auto selection prefers the available target with the highest rank.
    auto_rank: ClassVar[int] = 0
    description: ClassVar[str] = ""

    @property
    def output_suffixes(self) -> tuple[str, ...]:
        """The suffixes an artifact path may have, the default first."""
        return (self.suffix, *self.other_suffixes)

    @abstractmethod
    def availability(self) -> Availability:
        """Never raises: checks libraries/hardware and says what is missing."""

    @abstractmethod
    def emit(self, model: Model, stage: StagedOutput, request: TargetRequest) -> dict[str, Any]:
        """Write the artifact to ``stage.artifact`` (and siblings); return manifest fields of its own."""

    @abstractmethod
    def load(self, artifact: Path, manifest: Manifest | None) -> Runner:
        """Load an artifact this target wrote (``manifest``: the one beside it; None for a file from elsewhere)."""

    def tool_versions(self) -> dict[str, str]:
        return {}

    def hardware_identity(self) -> dict[str, str]:
        """What the artifact is specific to beyond tool versions (part of the build-cache key).

        Targets whose artifacts only run on the build machine's hardware (TensorRT: the GPU model
        and compute capability) return it here, so a cache shared by CI runners never mixes them.
        """
        return {}

    def tuner(self, request: TargetRequest) -> Tuner | None:
        """How to autotune artifacts for ``request`` on this machine; None when nothing is tunable."""
        return None

    def deferred(self) -> Target:
        """The target that writes a bundle for building this target's artifact on another machine (--defer)."""
        raise UserInputError(f"target '{self.name}' builds here and cannot defer its build",
                             hint="--defer is for --target trt on machines without an NVIDIA GPU")

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

    def check_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The options checked against this target's declarations (a setting meant for another target, or
        misspelt, is refused naming the closest one), converted to the declared types."""
        return checked(self.options, options, f"'{self.name}' target setting")

    def passes(self, precision: str) -> list[type[Pass]]:
        """The pass stages for a build at ``precision``: the default ones, for a runtime that takes the Q/DQ
        or fp16 graph; a target lowering precision with its own converter takes the fp32 stages instead."""
        from infer_compile.passes import default_passes

        return default_passes(precision)

    def needs_calibration(self, request: TargetRequest) -> bool:
        """Whether this build needs representative samples (INT8 activation ranges)."""
        return request.precision == "int8"

    def check_precision(self, manifest: Manifest) -> str:
        """The precision whose tolerance the artifact's outputs are judged by (the one it computes in)."""
        return manifest.precision

    def check_runner(self, artifact: Path, manifest: Manifest) -> Runner:
        """What the final check runs: the artifact loaded as users will load it."""
        return self.load(artifact, manifest)

    def compile(self, model: Model, output: Path, request: TargetRequest,
                build: BuildFacts, check: FinalCheck | None = None) -> list[Path]:
        """Emit atomically: nothing appears at ``output`` unless the artifact and manifest are complete
        and, given a ``check``, the staged artifact passed it (its record goes into the manifest)."""
        self.check_request(request)
        with staged_output(output) as stage:
            progress.stage(f"{self.name}: {self.conversion}")
            own = self.emit(model, stage, request)
            files = ArtifactFiles(output.name, sorted(p.name for p in stage.dir.iterdir()),
                                  file_digest(stage.artifact))
            manifest = Manifest.assemble(build, target=self.name, precision=request.precision, artifact=files,
                                         target_tools=self.tool_versions(), target_fields=own)
            if check is not None:
                progress.stage(f"{self.name}: final check (the artifact in its runtime vs the source)")
                manifest = manifest.checked(check(lambda: self.check_runner(stage.artifact, manifest), self.name,
                                                  self.check_precision(manifest)))
            stage.write_manifest(manifest)
            return stage.commit()


def package_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
