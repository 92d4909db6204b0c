"""Tensor ranges from calibration data: one onnxruntime session runs the model over every sample.

Min-max ranges (the default) are reduced inside the session: a ReduceMin and a ReduceMax per tensor
are its only extra outputs, so no activation is copied out and the optimized session reuses its
buffers (a 640x640 sample of an OCR detector would otherwise expose 216 MB per run). Histogram
calibrators need the values: those tensors are exposed as outputs and each batch's activations go
straight into the per-tensor histograms and are dropped. Samples with a dynamic batch axis are
concatenated into batches, so onnxruntime runs few large calls.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np
import onnx_graphsurgeon as gs

from infer_compile.calibration.cache import cache_key, graph_digest, load_cached_ranges, model_digest, save_ranges
from infer_compile.calibration.calibrators import AbsHistogram, method, needs_histogram
from infer_compile.calibration.data import CalibrationData, sample_count
from infer_compile.core.errors import UnsupportedError, UserInputError
from infer_compile.core.ir import Model
from infer_compile.core.numerics import Feeds, ort_session
from infer_compile.core.progress import counted

if TYPE_CHECKING:  # onnxruntime is imported when a session runs: a cache hit runs none
    import onnxruntime as ort

MAX_BATCH = 16
# Bytes of exposed activations per onnxruntime call: the batch shrinks for models with large
# activations (a ResNet-50 sample exposes ~100 MB: it runs alone), so memory stays bounded.
ACTIVATION_BUDGET = 64 << 20


def batched(samples: Iterable[Feeds], model: Model, batch: int = MAX_BATCH) -> Iterator[Feeds]:
    """Samples concatenated along axis 0 when every input's batch axis is dynamic, else one by one."""
    if not dynamic_batch(model):
        yield from samples
        return
    group: list[Feeds] = []
    for sample in samples:
        if group and any(sample[k].shape[1:] != group[0][k].shape[1:] for k in sample):
            yield _concat(group)  # a change of shape (e.g. sequence length) starts a new batch
            group = []
        group.append(sample)
        if sum(next(iter(s.values())).shape[0] for s in group) >= batch:
            yield _concat(group)
            group = []
    if group:
        yield _concat(group)


def dynamic_batch(model: Model) -> bool:
    return all(s.shape and not (isinstance(s.shape[0], int) and s.shape[0] >= 0) for s in model.inputs)


def _concat(group: list[Feeds]) -> Feeds:
    return {name: np.concatenate([s[name] for s in group]) for name in group[0]}


@contextmanager
def exposed(model: Model, names: Iterable[str]) -> Iterator[Model]:
    """``model`` with the tensors ``names`` added to its graph outputs while the block runs.

    In place rather than on a copy: a copy of a large model's weights would double peak memory.
    """
    graph = model.graph
    outputs = list(graph.outputs)
    present = {t.name for t in outputs}
    tensors = graph.tensors()
    added = [tensors[n] for n in dict.fromkeys(names) if n not in present and isinstance(tensors[n], gs.Variable)]
    for tensor in added:
        if tensor.dtype is None:  # graph outputs need a type; calibrated tensors are float activations
            tensor.dtype = np.float32
    graph.outputs.extend(added)
    try:
        yield model
    finally:
        graph.outputs = outputs


# What ``reduced`` computes of each tensor, in this order: its smallest and largest value and its element count.
_REDUCTIONS: tuple[tuple[str, type[np.generic], dict[str, int]], ...] = (
    ("ReduceMin", np.float32, {"keepdims": 0}), ("ReduceMax", np.float32, {"keepdims": 0}), ("Size", np.int64, {}))


@contextmanager
def reduced(model: Model, names: list[str]) -> Iterator[list[str]]:
    """``model`` computing each of ``_REDUCTIONS`` of each tensor in ``names`` as an extra scalar graph output while
    the block runs (in place, like ``exposed``); yields those outputs' names, ``_REDUCTIONS`` in order per tensor.

    Each tensor's reductions follow its producer in the node order, and the session runs nodes in that order
    (``in_node_order``): in onnxruntime's default order these leaf nodes ran last, keeping every activation alive
    to the end of the run (peak RSS 561 MB on the 640x640 PP-OCRv4 detector, 290 MB in node order).
    """
    graph = model.graph
    outputs, nodes = list(graph.outputs), list(graph.nodes)
    tensors = graph.tensors()
    taken = set(tensors)
    readers: dict[str, list[gs.Node]] = {}
    for name in names:
        for op, dtype, attrs in _REDUCTIONS:
            result = f"{name}@{op}"
            while result in taken:
                result += "_"
            taken.add(result)
            readers.setdefault(name, []).append(gs.Node(op, result, attrs, inputs=[tensors[name]],
                                                        outputs=[gs.Variable(result, dtype=dtype, shape=[])]))
    added = [node for name in names for node in readers[name]]
    produced = {t.name for node in nodes for t in node.outputs}
    graph.nodes = [*(node for name in names if name not in produced for node in readers[name]),
                   *(n for node in nodes for n in [node, *(r for t in node.outputs for r in readers.get(t.name, []))])]
    graph.outputs.extend(node.outputs[0] for node in added)
    try:
        yield [node.name for node in added]
    finally:
        for node in added:  # unhook them from the tensors they read
            node.inputs.clear()
            node.outputs.clear()
        graph.nodes, graph.outputs = nodes, outputs


@functools.cache
def ort_errors() -> tuple[type[Exception], ...]:
    """What onnxruntime raises when a session cannot be created or run (its exception types derive from
    Exception); an ``except`` clause evaluates this only once something was raised."""
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

    return (ort_state.Fail, ort_state.InvalidArgument, ort_state.InvalidGraph, ort_state.RuntimeException,
            ort_state.NotImplemented)


def first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def samples_do_not_fit(exc: BaseException) -> UserInputError:
    """The error for a model that onnxruntime cannot run on the calibration samples: they need replacing."""
    return UserInputError(
        f"the model does not run on the calibration samples ({first_line(exc)})",
        hint="give samples that fit the model's inputs with --calib PATH (random 'synthetic' data cannot "
             "satisfy inputs such as sizes, indices or shapes)")


def run_on_samples(session: ort.InferenceSession, names: list[str], feeds: Feeds) -> list[np.ndarray]:
    try:
        return session.run(names, feeds)
    except ort_errors() as exc:
        raise samples_do_not_fit(exc) from exc


def calibration_session(model: Model, optimize: bool) -> ort.InferenceSession:
    """A session measuring ``model``'s activations (what it measures is a graph output: optimizing keeps its
    values), running the nodes in the graph's order (see ``reduced``)."""
    try:
        return ort_session(model, optimize=optimize, in_node_order=True)
    except ort_errors() as exc:
        raise UnsupportedError(f"calibration: onnxruntime cannot load the graph to measure its activations "
                               f"({first_line(exc)})", hint="build without --int8/--calib, and report the model"
                               ) from exc


def run_in_batches(model: Model, samples: Iterable[Feeds], run: Callable[[Feeds], int]) -> None:
    """``run`` on every sample: the first alone (it returns the bytes of activations a run measures), the rest
    in batches that fit ACTIVATION_BUDGET. One pass: samples may be read from disk as they are used."""
    stream = iter(samples)
    sample = next(stream, None)
    if sample is None:
        return
    per_sample = max(run(sample) // max(sample_count(sample), 1), 1)
    del sample
    for feeds in batched(stream, model, max(1, min(MAX_BATCH, ACTIVATION_BUDGET // per_sample))):
        run(feeds)


def run_exposed(model: Model, names: list[str], samples: Iterable[Feeds],
                consume: Callable[[dict[str, np.ndarray]], None]) -> None:
    """Calls ``consume`` with the values of the tensors ``names`` (graph inputs included) per batch of
    samples; only one batch's values are alive at a time (a ResNet-50 sample exposes ~100 MB)."""
    inputs = {s.name for s in model.inputs}
    inner = [n for n in names if n not in inputs]
    with exposed(model, inner):
        # Unoptimized: with every activation an output, ORT's blocked conv layout only adds reorders (peak RSS
        # 382 -> 483 MB on the 640x640 OCR detector, no faster).
        session = calibration_session(model, optimize=False)

    def run(feeds: Feeds) -> int:
        got = dict(zip(inner, run_on_samples(session, inner, feeds), strict=True)) if inner else {}
        values = {n: feeds[n] if n in inputs else got[n] for n in names}
        consume(values)
        return sum(v.nbytes for v in values.values())

    run_in_batches(model, samples, run)


def tensor_extremes(model: Model, names: list[str], samples: Iterable[Feeds]
                    ) -> tuple[dict[str, float], dict[str, float]]:
    """The smallest and the largest value of each tensor in ``names`` (graph inputs included) over ``samples``,
    each widened to include 0 (always representable); NaN is ignored. Reduced inside the session, except for the
    outputs of activations whose input is measured too (see ``through_activation``)."""
    lows, highs = dict.fromkeys(names, 0.0), dict.fromkeys(names, 0.0)
    derived = _derivable(model, names)
    measured = [name for name in names if name not in derived]
    with reduced(model, measured) as outputs:
        # Optimized: 224-250 ms of CPU per sample vs 267-299 unoptimized (PP-OCRv4 detector, 640x640, 1 thread).
        session = calibration_session(model, optimize=True)

    def run(feeds: Feeds) -> int:
        values = run_on_samples(session, outputs, feeds)
        count = len(_REDUCTIONS)
        for name, low, high in zip(measured, values[0::count], values[1::count], strict=True):
            lows[name] = min(lows[name], float(low))  # min(0.0, nan) is 0.0: NaN never widens a range
            highs[name] = max(highs[name], float(high))
        return 4 * int(sum(values[2::count]))  # float32 elements

    run_in_batches(model, samples, run)
    for name, (op, source) in derived.items():
        lows[name], highs[name] = through_activation(op, lows[source], highs[source])
    return lows, highs


# -0.375 at x = -1.5: HardSwish(x) = x * clip(x / 6 + 1/2, 0, 1) falls from 0 at x = -3 to it, then rises.
HARDSWISH_MIN, HARDSWISH_ARGMIN = -0.375, -1.5


def through_activation(op: str, low: float, high: float) -> tuple[float, float]:
    """The extremes (0 included) of ``op``'s output over inputs whose extremes (0 included) are ``low``, ``high``.

    Relu is monotone: exact. HardSwish: exact but for its minimum when the inputs reach below -1.5, where it is
    the function's minimum -0.375; the data's own minimum is above it by d^2 / 6 for the input nearest -1.5 at a
    distance d < 1.5 (1.7e-7 at d = 0.001: a difference no 8-bit scale resolves)."""
    if op == "Relu":
        return 0.0, max(high, 0.0)
    return (HARDSWISH_MIN if low <= HARDSWISH_ARGMIN else _hardswish(low)), _hardswish(high)


def _hardswish(x: float) -> float:
    """In float32 as ONNX defines it, x * max(0, min(1, alpha * x + beta)) with alpha = 1/6, beta = 0.5."""
    value = np.float32(x)
    return float(value * np.clip(np.float32(1 / 6) * value + np.float32(0.5), np.float32(0), np.float32(1)))


# Activations ``through_activation`` knows: measuring their input alone spares the reductions of a tensor as large
# and, in ORT's blocked conv layout, its reordering for them (the 640x640 detector: 11 of 35 tensors, each Conv's
# HardSwish output beside the Conv's own output, which ORT runs in int8 only with it quantized too).
DERIVABLE = frozenset({"Relu", "HardSwish"})


def _derivable(model: Model, names: list[str]) -> dict[str, tuple[str, str]]:
    """{tensor: (activation, its input)} of the tensors in ``names`` an activation of DERIVABLE writes from a
    measured tensor in ``names`` (not itself derived)."""
    wanted, found = set(names), {}
    for node in model.graph.nodes:
        if node.op in DERIVABLE and node.outputs[0].name in wanted and node.inputs[0].name in wanted:
            found[node.outputs[0].name] = (node.op, node.inputs[0].name)
    return {name: (op, source) for name, (op, source) in found.items() if source not in found}


# A name in ``names`` ending in one of these asks for that tensor's signed minimum / maximum (0 included)
# instead of its amax: asymmetric quantizers need both ends. Measured in the same run as the amax.
SIGNED_MIN, SIGNED_MAX = "@min", "@max"
# CalibrationData.state key: ranges measured in this build, by the digest of the graph they were measured on.
MEASURED = "measured_ranges"


def signed_range_names(name: str) -> tuple[str, str]:
    """The names under which ``collect_ranges`` reports ``name``'s signed minimum and maximum."""
    return name + SIGNED_MIN, name + SIGNED_MAX


def collect_ranges(model: Model, names: list[str], samples: Iterable[Feeds], method_name: str,
                   percentile: float = 99.99) -> dict[str, float]:
    """amax per tensor in ``names`` by the calibrator ``method_name`` (signed extremes for SIGNED_MIN/MAX names)."""
    if not names:  # nothing to quantize (e.g. only LSTM/GRU): a session asked for no outputs returns all of them
        return {}
    pick, histogram = method(method_name, percentile), needs_histogram(method_name)
    signed = [n for n in names if n.endswith((SIGNED_MIN, SIGNED_MAX))]
    magnitudes = [n for n in names if n not in signed]
    tensor_of = {n: n.rpartition("@")[0] for n in signed}
    tensors = list(dict.fromkeys([*magnitudes, *tensor_of.values()]))
    if histogram:
        histograms = {name: AbsHistogram() for name in magnitudes}
        lows, highs = _histograms(model, tensors, samples, histograms, set(tensor_of.values()))
        amax = {n: pick(histograms[n]) for n in magnitudes}
    else:
        lows, highs = tensor_extremes(model, tensors, samples)
        amax = {n: max(-lows[n], highs[n]) for n in magnitudes}
    return {**amax, **{n: (lows if n.endswith(SIGNED_MIN) else highs)[tensor_of[n]] for n in signed}}


def _histograms(model: Model, tensors: list[str], samples: Iterable[Feeds], histograms: dict[str, AbsHistogram],
                tracked: set[str]) -> tuple[dict[str, float], dict[str, float]]:
    """Feeds each tensor's values to its histogram; returns the extremes (0 included) of the ``tracked`` ones."""
    lows, highs = dict.fromkeys(tracked, 0.0), dict.fromkeys(tracked, 0.0)

    def consume(values: dict[str, np.ndarray]) -> None:
        for name in tensors:
            value = values[name]
            if name in histograms:
                histograms[name].update(value)
            if name in tracked and value.size:
                lows[name] = min(lows[name], float(np.nanmin(value)))
                highs[name] = max(highs[name], float(np.nanmax(value)))

    run_exposed(model, tensors, samples, consume)
    return lows, highs


def channel_maxima(model: Model, names: list[str], samples: Iterable[Feeds]) -> dict[str, np.ndarray]:
    """max |x| per channel (the last axis) of each tensor in ``names`` (SmoothQuant's activation statistics)."""
    maxima: dict[str, np.ndarray] = {}

    def consume(values: dict[str, np.ndarray]) -> None:
        for name in names:
            value = np.abs(values[name].reshape(-1, values[name].shape[-1]))
            batch = np.nanmax(value, axis=0) if value.size else np.zeros(value.shape[-1], np.float32)
            maxima[name] = np.maximum(maxima[name], batch) if name in maxima else batch

    run_exposed(model, names, samples, consume)
    return maxima


def value_maxima(model: Model, names: list[str], samples: Iterable[Feeds]) -> dict[str, float]:
    """max |x| per tensor (used to find values that overflow fp16)."""
    return collect_ranges(model, names, samples, "minmax")


def calibrated_ranges(model: Model, names: list[str], data: CalibrationData) -> tuple[dict[str, float], bool]:
    """amax per tensor for this build: from the --calib-cache file when its key matches, or measured earlier in
    this build on the same graph (the pipeline's rerun when the final check fails), else measured on the
    calibration split (then cached). Also says if cached."""
    settings = data.settings
    key = cache_key(model_digest(model), data.digest(), settings.method, settings.percentile) if settings.cache else {}
    ranges = load_cached_ranges(settings.cache, key, names) if settings.cache else None
    cached = ranges is not None
    measured, graph = data.state.setdefault(MEASURED, {}), graph_digest(model)  # same data, method: one build
    earlier = measured.get(graph)
    if ranges is None and earlier is not None and all(name in earlier for name in names):
        ranges = {name: earlier[name] for name in names}
    if ranges is None:
        samples = counted(data.split()[0], f"calibration ({settings.method})", data.counts()[0], sample_count)
        ranges = collect_ranges(model, names, samples, settings.method, settings.percentile)
        if settings.cache:
            save_ranges(settings.cache, key, ranges)
    measured[graph] = ranges
    return ranges, cached
