"""Running ONNX models as the numeric reference and comparing outputs.

The reference is always onnxruntime on CPU with graph optimizations disabled, so a pass is
judged against the graph as written, not against what ORT's own optimizer makes of it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from infer_compile.core.errors import AccuracyError, UserInputError
from infer_compile.core.ir import Model, TensorSpec, serialized

if TYPE_CHECKING:  # onnxruntime is imported where a session is made: a cache hit makes none
    import onnxruntime as ort

Feeds = dict[str, np.ndarray]


def ort_session(model: Model, *, optimize: bool = False, threads: int | None = None,
                in_node_order: bool = False, arena: bool = True) -> ort.InferenceSession:
    """A CPU session for ``model``; unoptimized by default (the reference semantics). ``in_node_order``: run
    each node as soon as its inputs exist, ties going to the earlier node in the graph (onnxruntime's default
    order, a depth-first walk back from the graph's outputs, runs a node that only writes a graph output last).
    ``arena`` False: activations are freed after each run instead of kept in a growing arena, for sessions that
    run a few times while others hold memory (an INT8 build of a 640x640 detector: peak RSS 465 -> ~410 MB)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = arena
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    options.log_severity_level = 4  # fatal only: errors reach the caller as exceptions, not also as log lines
    # Idle intra-op threads sleep instead of spinning: a build's own sessions run many short ops (range reductions,
    # per-channel means) and on a shared machine spinning threads burn the CPU others need (the 640x640 detector's
    # calibration run, 2 threads at load 4: 117 -> 71 ms of CPU, wall 182 -> 110 ms).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
    if in_node_order:
        options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    return open_session(model, options)


def open_session(model: Model, options: ort.SessionOptions) -> ort.InferenceSession:
    """A CPU session for the in-memory ``model`` with ``options``.

    The weights reach ORT as OrtValues over the graph's own arrays, not inside the serialized model:
    opening a session copies no weight bytes (no protobuf, bytes or session-owned duplicates), and
    no model hits protobuf's 2 GB limit.
    """
    import onnxruntime as ort

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


def in_dtypes(feeds: Feeds, specs: list[TensorSpec]) -> Feeds:
    """``feeds`` cast to the dtypes of ``specs`` (a graph whose inputs a precision pass retyped to float16)."""
    dtypes = {spec.name: spec.dtype for spec in specs}
    return {name: value.astype(dtypes.get(name, value.dtype), copy=False) if isinstance(value, np.ndarray) else value
            for name, value in feeds.items()}


def resolve_shape(spec: TensorSpec, dims: Mapping[str, int] | None = None) -> tuple[int, ...]:
    """A concrete shape for ``spec``: symbolic dims from ``dims`` (by dim name or input name), else 1."""
    dims = dims or {}
    if spec.shape is None:
        raise UserInputError(f"input '{spec.name}' has unknown rank",
                             hint=f"give its shape with --input-shape {spec.name}:1x3x224x224")
    return tuple(d if isinstance(d, int) and d >= 0 else int(dims.get(str(d), 1)) for d in spec.shape)


def random_inputs(specs: list[TensorSpec], *, seed: int = 0, dims: Mapping[str, int] | None = None) -> Feeds:
    """Seeded inputs matching ``specs``: normal floats, small non-negative ints (safe as indices), bools, strings."""
    rng = np.random.default_rng(seed)
    feeds: Feeds = {}
    for spec in specs:
        shape = resolve_shape(spec, dims)
        if np.issubdtype(spec.dtype, np.floating):
            feeds[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        elif spec.dtype == np.bool_:
            feeds[spec.name] = rng.integers(0, 2, shape).astype(np.bool_)
        elif spec.dtype.kind in "OSU":  # strings (onnxruntime takes them as object arrays of str)
            feeds[spec.name] = rng.integers(0, 2, shape).astype(str).astype(object)
        else:
            feeds[spec.name] = rng.integers(0, 2, shape).astype(spec.dtype)
    return feeds


@dataclass(frozen=True)
class OutputComparison:
    """How one output differs from its reference."""

    name: str
    max_abs: float  # NaN when either side has NaN/inf where the other does not
    max_rel: float
    cosine: float
    top1_agreement: float | None  # only for class-score outputs (see is_class_scores)
    spread: float = 0.0  # the reference's standard deviation: how much the output actually varies
    scale: float = 0.0  # the reference's largest magnitude
    dtype: str = ""  # the reference's element type: the precision the graph itself computes the output in

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Tolerance:
    """What "the same numbers" means at one precision, judged relative to the reference itself.

    An output passes when its cosine similarity reaches ``min_cosine`` AND its worst absolute error
    is at most ``max_error`` times the reference's spread (its standard deviation; at least
    ``resolution`` times its largest magnitude, the precision's rounding at that scale). An output
    also passes when no element differs by more than FLOAT_ATOL: a near-zero output (a
    probability map of 1e-6 on an input without text) has a spread far below what float arithmetic on
    its inputs resolves, so relative figures of its rounding are noise. Above that floor an all-zero or
    constant output never passes against a reference that varies, and NaN never passes.
    """

    min_cosine: float
    max_error: float
    resolution: float

    def error(self, cmp: OutputComparison) -> float:
        """The worst error in units of the reference's spread (what ``max_error`` bounds)."""
        unit = max(cmp.spread, self.resolution * cmp.scale)
        if unit > 0:
            return cmp.max_abs / unit
        return 0.0 if cmp.max_abs == 0 else math.inf  # an all-zero reference: only zeros match it

    def accepts(self, cmp: OutputComparison) -> bool:
        if cmp.max_abs <= FLOAT_ATOL:  # NaN compares False
            return True
        return cmp.cosine >= self.min_cosine and self.error(cmp) <= self.max_error


# The absolute floor of every comparison: torch.testing.assert_close's atol for float32, float16 and
# bfloat16. The PP-OCRv4 detector's fp32 build on random input gives a map of ~6e-6 whose reassociation
# error (1.8e-7) was 0.024x its spread and cost cosine 0.999996: refused, though it is float noise.
FLOAT_ATOL = 1e-5


# Per precision (bf16: OpenVINO's default compute precision on CPUs that have it). fp32 differences come
# only from reassociation; reduced precisions are judged loosely enough for good builds, never for broken ones.
TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(min_cosine=0.99999, max_error=1e-3, resolution=1e-2),
    "fp16": Tolerance(min_cosine=0.999, max_error=0.2, resolution=0.05),
    "bf16": Tolerance(min_cosine=0.995, max_error=0.5, resolution=0.05),
    "int8": Tolerance(min_cosine=0.99, max_error=1.0, resolution=0.1),
}
# An output the graph itself computes in a reduced float type cannot be closer than that type allows,
# whatever precision the build asks for (an fp16-typed model in an fp32 build).
_COMPUTED_IN = {"float16": "fp16", "bfloat16": "bf16"}


def tolerance_for(tolerance: Tolerance, cmp: OutputComparison) -> Tolerance:
    """``tolerance``, or the looser one of the element type ``cmp``'s output is computed in."""
    own = TOLERANCES.get(_COMPUTED_IN.get(cmp.dtype, ""))
    return own if own is not None and own.max_error > tolerance.max_error else tolerance


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64, copy=False), b.ravel().astype(np.float64, copy=False)
    # einsum, not dot/norm: BLAS's threads cost a 640x640 map's comparison 27 ms of CPU (einsum: 1.2) when busy.
    na, nb = math.sqrt(np.einsum("i,i->", a, a)), math.sqrt(np.einsum("i,i->", b, b))
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    return float(np.einsum("i,i->", a, b) / (na * nb))


CLASS_SCORE_NAMES = ("logits", "scores", "probs", "probabilities")


def is_class_scores(name: str, ref: np.ndarray) -> bool:
    """Whether an output is class scores, where top-1 agreement means something: float [batch, classes], or
    named as scores by its source (Hugging Face `logits` [batch, tokens, vocab]). Detection heads ([1, 84, 8400])
    and hidden states are not: the arg-max over their last axis is no prediction."""
    if ref.ndim < 2 or ref.shape[-1] < 2 or not np.issubdtype(ref.dtype, np.floating):
        return False
    leaf = name.rpartition(".")[2].lower()
    return ref.ndim == 2 or leaf in CLASS_SCORE_NAMES or leaf.endswith(tuple(f"_{n}" for n in CLASS_SCORE_NAMES))


def compare_output(name: str, ref: np.ndarray, got: np.ndarray) -> OutputComparison:
    ref, got = np.asarray(ref), np.asarray(got)
    if ref.shape != got.shape:
        raise AccuracyError(f"output '{name}' has shape {got.shape}, expected {ref.shape}")
    if ref.dtype == np.bool_ or not np.issubdtype(ref.dtype, np.number):
        mismatch = float(np.mean(ref != got)) if ref.size else 0.0
        return OutputComparison(name, mismatch, mismatch, 1.0 - mismatch, None, spread=1.0, scale=1.0,
                                dtype=ref.dtype.name)
    if not ref.size:
        return OutputComparison(name, 0.0, 0.0, 1.0, None, dtype=ref.dtype.name)
    r, g = ref.astype(np.float64), got.astype(np.float64)
    if np.isfinite(r).all() and np.isfinite(g).all():  # the usual case, in fewer passes over the values
        diff, values, magnitude, pair = np.abs(r - g), r, np.abs(r), (r, g)
    else:
        # Equal non-finite values (inf == inf, NaN and NaN) match; any other NaN/inf makes the error NaN/inf.
        same = (r == g) | (np.isnan(r) & np.isnan(g))
        with np.errstate(invalid="ignore", over="ignore"):
            diff = np.where(same, 0.0, np.abs(r - g))
        finite = np.isfinite(r)
        values, magnitude = r[finite], np.abs(np.where(finite, r, 0.0))
        matched_nonfinite = same & ~finite
        pair = (np.where(matched_nonfinite, 0.0, r), np.where(matched_nonfinite, 0.0, g))
    max_abs = float(diff.max())
    max_rel = float((diff / np.maximum(magnitude, 1e-6)).max())
    top1 = None
    if is_class_scores(name, ref):
        # argmax skips NaN silently: a NaN output has no top-1 agreement, whatever the ranks say.
        top1 = math.nan if np.isnan(r).any() or np.isnan(g).any() else float(np.mean(r.argmax(-1) == g.argmax(-1)))
    spread = float(values.std()) if values.size else 0.0
    scale = float(magnitude.max())  # the largest finite |value|; 0 when none is finite
    cosine = _cosine(*pair)
    return OutputComparison(name, max_abs, max_rel, cosine, top1, spread, scale, ref.dtype.name)


def compare_outputs(ref: Feeds, got: Feeds) -> list[OutputComparison]:
    missing = set(ref) - set(got)
    if missing:
        raise AccuracyError(f"outputs missing from the result: {', '.join(sorted(missing))}")
    return [c for name in ref for c in compare_value(name, ref[name], got[name])]


def compare_value(name: str, ref: Any, got: Any) -> list[OutputComparison]:
    """One output of any ONNX type: a tensor as ``compare_output``; a sequence (a list) element by element, as
    ``name[i]``; an optional (None when empty) by presence, then by its value."""
    if isinstance(ref, list) or isinstance(got, list):
        if not (isinstance(ref, list) and isinstance(got, list)) or len(ref) != len(got):
            raise AccuracyError(f"output '{name}' is {_kind(got)}, expected {_kind(ref)}")
        return [c for i, (r, g) in enumerate(zip(ref, got, strict=True)) for c in compare_value(f"{name}[{i}]", r, g)]
    if ref is None or got is None:
        if ref is not got:
            raise AccuracyError(f"output '{name}' is {_kind(got)}, expected {_kind(ref)}")
        return []
    return [compare_output(name, ref, got)]


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return f"a sequence of {len(value)}"
    return "empty (optional)" if value is None else "a tensor"


def out_of_tolerance(comparisons: list[OutputComparison], base: Tolerance) -> list[str]:
    """The one judgement of "same outputs" (verify, --verify-passes, the final check): a line per
    output outside ``base`` (or its own element type's tolerance, see ``tolerance_for``), empty when every
    output is within it."""
    judged = [(c, tolerance_for(base, c)) for c in comparisons]
    return [f"output '{c.name}': cosine {c.cosine:.6f} (needs >= {tolerance.min_cosine:g}), max abs error "
            f"{c.max_abs:.3g} = {tolerance.error(c):.3g}x the reference's spread (needs <= {tolerance.max_error:g})"
            for c, tolerance in judged if not tolerance.accepts(c)]


def within(comparisons: list[OutputComparison], tolerance: Tolerance) -> bool:
    return not out_of_tolerance(comparisons, tolerance)


def summarize(comparisons: list[OutputComparison]) -> dict[str, float | None]:
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
