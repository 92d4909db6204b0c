"""Running ONNX models as the numeric reference and comparing outputs.

The reference is always onnxruntime on CPU with graph optimizations disabled, so a pass is
judged against the graph as written, not against what ORT's own optimizer makes of it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

import numpy as np
import onnxruntime as ort

from infer_compile.errors import AccuracyError, UserInputError
from infer_compile.ir import Model, TensorSpec, serialized

Feeds = dict[str, np.ndarray]


def ort_session(model: Model, *, optimize: bool = False, threads: int | None = None) -> ort.InferenceSession:
    """A CPU session for ``model``; unoptimized by default (the reference semantics)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return open_session(model, options)


def open_session(model: Model, options: ort.SessionOptions) -> ort.InferenceSession:
    """A CPU session for the in-memory ``model`` with ``options``.

    The weights reach ORT as OrtValues over the graph's own arrays, not inside the serialized model:
    opening a session copies no weight bytes (no protobuf, bytes or session-owned duplicates), and
    no model hits protobuf's 2 GB limit.
    """
    weights = model.weight_constants()
    values = [ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(c.values)) for c in weights]
    options.add_external_initializers([c.name for c in weights], values)
    session = ort.InferenceSession(serialized(model.to_proto(weights=False)), options,
                                   providers=["CPUExecutionProvider"])
    session.shared_weights = values  # the session reads these arrays: keep them alive as long as it lives
    return session


def run_onnx(model: Model, feeds: Feeds, *, optimize: bool = False) -> Feeds:
    session = ort_session(model, optimize=optimize)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def resolve_shape(spec: TensorSpec, dims: Mapping[str, int] | None = None) -> tuple[int, ...]:
    """A concrete shape for ``spec``: symbolic dims from ``dims`` (by dim name or input name), else 1."""
    dims = dims or {}
    if spec.shape is None:
        raise UserInputError(f"input '{spec.name}' has unknown rank",
                             hint=f"give its shape with --input-shape {spec.name}:1x3x224x224")
    return tuple(d if isinstance(d, int) and d >= 0 else int(dims.get(str(d), 1)) for d in spec.shape)


def random_inputs(specs: list[TensorSpec], *, seed: int = 0, dims: Mapping[str, int] | None = None) -> Feeds:
    """Seeded inputs matching ``specs``: normal floats, small non-negative ints (safe as indices), bools."""
    rng = np.random.default_rng(seed)
    feeds: Feeds = {}
    for spec in specs:
        shape = resolve_shape(spec, dims)
        if np.issubdtype(spec.dtype, np.floating):
            feeds[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        elif spec.dtype == np.bool_:
            feeds[spec.name] = rng.integers(0, 2, shape).astype(np.bool_)
        else:
            feeds[spec.name] = rng.integers(0, 2, shape).astype(spec.dtype)
    return feeds


@dataclass(frozen=True)
class OutputComparison:
    """How one output differs from its reference."""

    name: str
    max_abs: float
    max_rel: float
    cosine: float
    top1_agreement: float | None  # only for outputs that look like class scores (last dim > 1)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Tolerance:
    """Acceptable difference: every output must pass max-abs (scaled by the reference's range) or cosine."""

    atol: float
    rtol: float
    min_cosine: float

    def accepts(self, cmp: OutputComparison, ref_scale: float) -> bool:
        return cmp.max_abs <= self.atol + self.rtol * ref_scale or cmp.cosine >= self.min_cosine


# Per precision: what "the same numbers" means. fp32 differences come only from reassociation.
TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(atol=1e-4, rtol=1e-4, min_cosine=0.999999),
    "fp16": Tolerance(atol=1e-2, rtol=1e-2, min_cosine=0.999),
    "int8": Tolerance(atol=5e-2, rtol=5e-2, min_cosine=0.99),
}


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def compare_output(name: str, ref: np.ndarray, got: np.ndarray) -> OutputComparison:
    ref, got = np.asarray(ref), np.asarray(got)
    if ref.shape != got.shape:
        raise AccuracyError(f"output '{name}' has shape {got.shape}, expected {ref.shape}")
    if ref.dtype == np.bool_ or not np.issubdtype(ref.dtype, np.number):
        mismatch = float(np.mean(ref != got)) if ref.size else 0.0
        return OutputComparison(name, mismatch, mismatch, 1.0 - mismatch, None)
    r, g = ref.astype(np.float64), got.astype(np.float64)
    diff = np.abs(r - g)
    max_abs = float(diff.max()) if diff.size else 0.0
    max_rel = float((diff / np.maximum(np.abs(r), 1e-6)).max()) if diff.size else 0.0
    top1 = None
    if r.ndim >= 2 and r.shape[-1] > 1 and np.issubdtype(ref.dtype, np.floating):
        # argmax skips NaN silently: a NaN output has no top-1 agreement, whatever the ranks say.
        top1 = math.nan if np.isnan(r).any() or np.isnan(g).any() else float(np.mean(r.argmax(-1) == g.argmax(-1)))
    return OutputComparison(name, max_abs, max_rel, _cosine(r, g), top1)


def compare_outputs(ref: Feeds, got: Feeds) -> list[OutputComparison]:
    missing = set(ref) - set(got)
    if missing:
        raise AccuracyError(f"outputs missing from the result: {', '.join(sorted(missing))}")
    return [compare_output(name, ref[name], got[name]) for name in ref]


def within(ref: Feeds, comparisons: list[OutputComparison], tolerance: Tolerance) -> bool:
    return all(
        tolerance.accepts(c, float(np.abs(ref[c.name]).max()) if ref[c.name].size else 0.0)
        for c in comparisons
    )


def summarize(comparisons: list[OutputComparison]) -> dict:
    """Worst case over all outputs: the figures a report shows. NaN is the worst of all (max/min would
    drop it depending on the order, letting a NaN output pass a budget)."""
    top1 = [c.top1_agreement for c in comparisons if c.top1_agreement is not None]
    return {
        "max_abs": _worst(max, [c.max_abs for c in comparisons], 0.0),
        "max_rel": _worst(max, [c.max_rel for c in comparisons], 0.0),
        "cosine": _worst(min, [c.cosine for c in comparisons], 1.0),
        "top1_agreement": _worst(min, top1, 1.0) if top1 else None,
    }


def _worst(pick: Callable[..., float], values: list[float], default: float) -> float:
    return math.nan if any(math.isnan(v) for v in values) else pick(values, default=default)
