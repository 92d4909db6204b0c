"""Kernel autotuning: time the target's runtime configurations on this machine and keep the fastest.

Measuring, not guessing. The target supplies a ``Tuner`` (candidate configurations and a way to
load the model with one); this pass times them on seeded inputs within the ``tune_time`` budget
returns every candidate's median and best latency (the manifest's "autotune" section) and the chosen
settings as target options, which the target's emit()/load() apply.

For runtimes that run every Q/DQ'd layer with its INT8 kernel (``Tuner.per_layer_precision``),
each quantized layer is first timed alone, INT8 against fp32 (its Q/DQ removed); a layer whose
INT8 kernel is not faster goes back to fp32. The full model then decides between all INT8, that
selection and every layer in fp32 (Q/DQ can cost more in the whole graph, by blocking fusions,
than any layer alone shows).
"""

from __future__ import annotations

import functools
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_graphsurgeon as gs

from infer_compile.core.capabilities import Capability
from infer_compile.core.ir import Model
from infer_compile.core.numerics import Feeds, in_dtypes, random_inputs
from infer_compile.passes.base import Pass, PassContext, PassResult
from infer_compile.passes.graph_utils import numpy_dtype, producer
from infer_compile.passes.precision_state import PrecisionState, node_precisions
from infer_compile.passes.quantize_int8 import WEIGHTED_OPS

# Decisions compare best-of-runs latencies: on a machine shared with other work, the fastest runs
# are the ones nothing else interfered with, which is what a dedicated deployment machine sees
# (medians would tune for the build machine's passing load, e.g. pick fewer threads under contention).
# A candidate replaces the default only when its best is this much lower: below that, the
# difference is machine noise and the default is the better-tested choice.
MARGIN = 0.02
# Changing numeric precision on timings needs more: a layer goes back to fp32 (or the model to all-INT8 /
# all-fp32) only when it is this much faster in nearly every interleaved block, not just in its best run.
PRECISION_MARGIN = 0.05
CONSISTENT_SHARE = 0.8
# A machine whose 1-minute load average per CPU exceeds this is busy: its timings say more about the other
# work than about the model, so autotuning keeps the precision the user asked for (and says so).
BUSY_LOAD_PER_CPU = 0.75
# Runs per configuration that make a comparison worth having; the budget a model needs follows from them, but is
# never below MIN_BUDGET (for a 0.04 ms model the estimate is 0.05 s, which left 6 runs per configuration).
RUNS_WANTED = 30
MIN_BUDGET = 1.0
RUNS_PER_BLOCK = 3
# Candidates whose median is this many times the best stop being timed.
PRUNE_FACTOR = 1.5

Timed = Callable[[], object]


def measure(runs: Sequence[Timed], seconds: float) -> list[list[float]]:
    """Per callable, the latencies of its timed runs (seconds).

    Round-robin in blocks until ``seconds`` pass (at least one block each), so load drift on a
    shared machine hits every candidate alike. Each block starts with an untimed run: it absorbs
    the previous candidate's thread pool winding down (ORT threads spin after a run) and, the first
    time, warm-up. After two blocks, candidates far slower than the best drop out, leaving the
    budget to the close ones; the first (the default, the baseline every other is judged against)
    is always timed.
    """
    times: list[list[float]] = [[] for _ in runs]
    active = list(range(len(runs)))
    deadline = time.perf_counter() + seconds
    while True:
        for i in active:
            runs[i]()
            for _ in range(RUNS_PER_BLOCK):
                start = time.perf_counter()
                runs[i]()
                times[i].append(time.perf_counter() - start)
        if time.perf_counter() >= deadline:
            return times
        best = min(statistics.median(times[i]) for i in active)
        active = [i for i in active
                  if i == 0 or len(times[i]) < 2 * RUNS_PER_BLOCK or statistics.median(times[i]) <= PRUNE_FACTOR * best]


def choose(latencies: Sequence[float], margin: float = MARGIN) -> int:
    """Index of the lowest latency; index 0 (the default) unless another beats it by ``margin``.

    A pure function of the measurements: the same latencies always give the same choice.
    """
    best = min(range(len(latencies)), key=lambda i: (latencies[i], i))
    return best if latencies[best] < latencies[0] * (1 - margin) else 0


def consistent_winner(times: Sequence[Sequence[float]], margin: float = PRECISION_MARGIN,
                      share: float = CONSISTENT_SHARE) -> int:
    """Index of the candidate that beats the default (index 0) by ``margin`` in at least ``share`` of the
    interleaved blocks (block = RUNS_PER_BLOCK runs, compared by their medians), the fastest such; else 0.

    Best-of-runs alone lets one lucky run on a busy machine flip a precision decision."""
    def blocks(runs: Sequence[float]) -> list[float]:
        return [statistics.median(runs[i:i + RUNS_PER_BLOCK]) for i in range(0, len(runs), RUNS_PER_BLOCK)]

    base = blocks(times[0])
    winners = []
    for i in range(1, len(times)):
        mine = blocks(times[i])
        pairs = list(zip(base, mine, strict=False))
        wins = sum(b * (1 - margin) > m for b, m in pairs)
        if pairs and wins >= share * len(pairs):
            winners.append((statistics.median(times[i]), i))
    return min(winners)[1] if winners else 0


def machine_load() -> tuple[float | None, bool]:
    """(1-minute load average per CPU, whether that makes the machine too busy to decide precision on).
    INFER_COMPILE_BUSY_LOAD replaces the threshold (a build farm that is always loaded may accept more)."""
    if not hasattr(os, "getloadavg"):
        return None, False
    per_cpu = os.getloadavg()[0] / (os.cpu_count() or 1)
    return round(per_cpu, 2), per_cpu > float(os.environ.get("INFER_COMPILE_BUSY_LOAD", BUSY_LOAD_PER_CPU))


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 4)


def _summary(latencies: list[float]) -> dict[str, Any]:
    return {"median_ms": _ms(statistics.median(latencies)), "best_ms": _ms(min(latencies)), "runs": len(latencies)}


# -- INT8 layer selection -------------------------------------------------------------------------


def dequantize_constant(dq: gs.Node) -> np.ndarray | None:
    """The float values of DequantizeLinear(constant), or None when its inputs are not all constants."""
    if dq.attrs.get("block_size", 0) or not all(isinstance(t, gs.Constant) for t in dq.inputs if t.name):
        return None
    values, scale = dq.inputs[0].values, dq.inputs[1].values
    zero = dq.inputs[2].values if len(dq.inputs) > 2 and dq.inputs[2].name else np.zeros((), values.dtype)
    if scale.size > 1:  # per-channel: scale and zero point run along `axis`
        shape = [1] * values.ndim
        shape[dq.attrs.get("axis", 1)] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return ((values.astype(np.float32) - zero.astype(np.float32)) * scale.astype(np.float32)).astype(scale.dtype)


def _saturation(q: gs.Node) -> tuple[float, float] | None:
    """The float range a per-tensor QuantizeLinear clips to (with a uint8 zero point of 0 it is a ReLU:
    quantizers absorb ReLUs that way); None when its scale or zero point is not a scalar constant."""
    scale, zero = q.inputs[1], q.inputs[2] if len(q.inputs) > 2 and q.inputs[2].name else None
    if not isinstance(scale, gs.Constant) or scale.values.size != 1:
        return None
    if zero is not None and (not isinstance(zero, gs.Constant) or zero.values.size != 1):
        return None
    point = zero.values if zero is not None else np.zeros((), np.uint8)  # ONNX default: uint8, 0
    limits, step = np.iinfo(point.dtype), float(scale.values)
    return (limits.min - int(point)) * step, (limits.max - int(point)) * step


FloatSource = np.ndarray | tuple[gs.Tensor, tuple[float, float]]


def _float_source(tensor: gs.Tensor) -> FloatSource | None:
    """What the DequantizeLinear producing ``tensor`` was made from: the dequantized constant, or the
    float activation fed to its QuantizeLinear with the range that clips it; None when ``tensor`` is
    not Q/DQ'd like that."""
    dq = producer(tensor)
    if dq is None or dq.op != "DequantizeLinear":
        return None
    if isinstance(dq.inputs[0], gs.Constant):
        return dequantize_constant(dq)
    q = producer(dq.inputs[0])
    if q is None or q.op != "QuantizeLinear":
        return None
    saturation = _saturation(q)
    return (q.inputs[0], saturation) if saturation else None


def quantized_layers(graph: gs.Graph) -> list[int]:
    """Indices (into ``graph.nodes``) of compute layers whose data and weight inputs are both Q/DQ'd,
    largest weights first (they matter most when the budget runs out)."""
    layers = [i for i, node in enumerate(graph.nodes)
              if node.op in WEIGHTED_OPS and len(node.inputs) >= 2
              and all(_float_source(t) is not None for t in node.inputs[:2])]
    return sorted(layers, key=lambda i: -_static_size(graph.nodes[i].inputs[1].inputs[0].inputs[0]))


def _static_size(tensor: gs.Tensor) -> int:
    shape = tensor.shape or [0]
    return int(np.prod(shape)) if all(isinstance(d, int) for d in shape) else 0


def to_fp32(graph: gs.Graph, node: gs.Node) -> None:
    """Make ``node`` compute in fp32: feed it the float tensors its DequantizeLinear inputs came from,
    activations clipped as their QuantizeLinear clipped them (only the rounding goes). Its output's
    QuantizeLinear, if any, stays: it belongs to the layer consuming it. Call graph.toposort() after."""
    existing = graph.tensors()
    for i, tensor in enumerate(node.inputs):
        source, name = _float_source(tensor), f"{tensor.name}/fp32"
        if source is None:
            continue
        if name in existing:  # another layer reading the same Q/DQ tensor went to fp32 first: share it
            node.inputs[i] = existing[name]
        elif isinstance(source, np.ndarray):
            node.inputs[i] = gs.Constant(name, source)
        else:
            activation, (low, high) = source
            dtype = numpy_dtype(activation) or np.dtype(np.float32)
            clipped = gs.Variable(name, dtype=dtype, shape=activation.shape)
            graph.layer(op="Clip", name=f"{tensor.name}/clip", outputs=[clipped],
                        inputs=[activation, gs.Constant(f"{tensor.name}/min", np.array(low, dtype)),
                                gs.Constant(f"{tensor.name}/max", np.array(high, dtype))])
            node.inputs[i] = clipped


def isolate(model: Model, index: int, output_quantizer: bool = True) -> Model | None:
    """A model of just one quantized layer with its Q/DQ (and its output's Q/DQ, as in the graph, unless
    ``output_quantizer`` is False); None when a tensor at its border has no known shape."""
    node = model.graph.nodes[index]
    nodes: list[gs.Node] = []
    inputs: list[gs.Variable] = []
    for tensor in node.inputs:
        dq = producer(tensor)
        if dq is not None and dq.op == "DequantizeLinear":
            q = producer(dq.inputs[0])
            if q is not None and q.op == "QuantizeLinear":
                nodes.append(q)
                inputs.append(q.inputs[0])
            nodes.append(dq)
        elif isinstance(tensor, gs.Variable) and tensor.name:
            inputs.append(tensor)
    nodes.append(node)
    output = node.outputs[0]
    requant = [c for c in output.outputs if c.op == "QuantizeLinear"]
    if output_quantizer and len(output.outputs) == 1 and requant:
        dequant = [c for c in requant[0].outputs[0].outputs if c.op == "DequantizeLinear"][:1]
        nodes += requant + dequant
        output = (dequant or requant)[0].outputs[0]
    border = [*inputs, output]
    if any(t.shape is None or t.dtype is None for t in border):
        return None
    graph = gs.Graph(nodes=nodes, inputs=inputs, outputs=[output], opset=model.graph.opset,
                     import_domains=model.graph.import_domains)
    return Model.from_proto(gs.export_onnx(graph, do_type_check=False, ir_version=model.ir_version))


def _with_fp32(model: Model, layers: list[int]) -> Model:
    """A copy of ``model`` with the quantized layers at ``layers`` (indices) computing in fp32."""
    copy = model.copy()
    for index in layers:
        to_fp32(copy.graph, copy.graph.nodes[index])
    copy.graph.cleanup(remove_unused_graph_inputs=False).toposort()
    return copy


def _no_integer_layers(model: Model) -> bool:
    return not node_precisions(model).get("int8")


def _compute_node(model: Model) -> int:
    return next(i for i, n in enumerate(model.graph.nodes) if n.op in WEIGHTED_OPS)


@dataclass(frozen=True)
class Cost:
    """What timing one configuration of the model costs here (seconds): having it ready (loading it and its first,
    cold run, where runtimes compile kernels), and one warm run."""

    load_s: float
    run_s: float

    @classmethod
    def probe(cls, tuner: Any, model: Model, feeds: Feeds) -> Cost:
        # One-time work is not a configuration's cost: the first load and run (untimed) absorb it. OpenVINO converts
        # the model there (the tuner keeps it) and loads its CPU plugin (1.5 s on a busy machine). Counting those, and
        # the cold run as a run, made a 0.14 ms model look as if 30 runs of each configuration needed 15 s: the whole
        # --tune-time went to timing it.
        tuner.prepare(model, {})(feeds)
        start = time.perf_counter()
        run = tuner.prepare(model, {})
        run(feeds)
        ready = time.perf_counter()
        run(feeds)
        return cls(ready - start, time.perf_counter() - ready)

    def of(self, configurations: int, runs: int = 1 + RUNS_PER_BLOCK) -> float:
        """Seconds to load ``configurations`` configurations and run each ``runs`` times (default: one block)."""
        return configurations * (self.load_s + runs * self.run_s)


class Autotune(Pass):
    name = "autotune"
    description = ("Time the target's runtime settings (and INT8 vs fp32 per layer) here; keep the fastest "
                   "(budget: tune_time).")
    requires = frozenset({Capability.TUNER})
    # Only INT8 layer selection changes numbers, and only by giving back INT8 rounding.
    precision = "int8"

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        start = time.perf_counter()
        result = PassResult()
        # The build's examples, in the dtypes the graph now takes (an fp16 graph may take float16 inputs).
        feeds = (in_dtypes(ctx.examples[0], model.inputs) if ctx.examples
                 else random_inputs(model.inputs, seed=0, dims=ctx.shape_overrides))
        self._status(ctx, "loading the model once to see what timing it costs")
        cost = Cost.probe(ctx.tuner, model, feeds)
        probed = time.perf_counter()  # the budget is for timing: the runtime's one-time start is not part of it
        candidates = ctx.tuner.candidates(model)
        layers = quantized_layers(model.graph) if ctx.tuner.per_layer_precision else []
        load, busy = machine_load()
        # What RUNS_WANTED runs of every configuration (and of each layer twice) take: a 0.03 ms model is done in
        # a fraction of the --tune-time budget, a 300 ms one would need more than it (the record says so).
        needed = cost.of(len(candidates) + 3, RUNS_WANTED) + 2 * len(layers) * cost.load_s
        budget = min(ctx.tune_time, max(needed, MIN_BUDGET))
        record: dict[str, Any] = {"budget_s": round(budget, 3), "tune_time_s": ctx.tune_time,
                                  "needed_s": round(needed, 3), "load_per_cpu": load, "cpus": os.cpu_count()}
        if layers and busy:
            record["layer_selection"] = {"skipped": f"machine busy (load {load} per CPU): INT8 kept as asked"}
            self._status(ctx, f"machine busy (load {load} per CPU): not deciding INT8 vs fp32 on its timings")
        elif layers:
            # Half the budget, less what the final full-model comparison will take.
            seconds = max(budget / 2 - (time.perf_counter() - probed) - cost.of(3), 0.0)
            record["layers"], record["layer_selection"] = self._select_layers(model, ctx, layers, feeds, seconds)
            result.add("layers_to_fp32", sum(r["precision"] == "fp32" for r in record["layers"]))
        remaining = max(budget - (time.perf_counter() - probed), 0.0)
        record["candidates"], chosen = self._time_candidates(model, ctx, feeds, remaining, cost)
        record["chosen"] = chosen["label"]
        record["seconds"] = round(time.perf_counter() - probed, 3)  # timing, what the budget bounds
        record["startup_s"] = round(probed - start, 3)
        result.add("candidates_timed", sum(1 for c in record["candidates"] if c["runs"]))
        result.manifest["autotune"] = record
        result.target_options = record["target_options"] = {ctx.tuner.option_key: chosen["settings"]}
        return result

    def _status(self, ctx: PassContext, text: str) -> None:
        if ctx.status:
            ctx.status(f"autotune: {text}")

    def _time_candidates(self, model: Model, ctx: PassContext, feeds: Feeds, seconds: float,
                         cost: Cost) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Time as many candidates as the budget fits (in the tuner's order, the default first)."""
        deadline = time.perf_counter() + seconds
        candidates = ctx.tuner.candidates(model)
        timed = candidates[:max(1, int(seconds // cost.of(1)))]
        self._status(ctx, f"loading {len(timed)} of {len(candidates)} configurations")
        runs = [ctx.tuner.prepare(model, c.settings) for c in timed]
        self._status(ctx, f"timing {len(timed)} configurations ({seconds:.0f} s)")
        times = measure([functools.partial(run, feeds) for run in runs], deadline - time.perf_counter())
        table = [{"label": c.label, "settings": c.settings, **_summary(t)} for c, t in zip(timed, times, strict=True)]
        best = choose([row["best_ms"] for row in table])
        for i, row in enumerate(table):
            row["chosen"] = i == best
        untimed = [{"label": c.label, "settings": c.settings, "median_ms": None, "best_ms": None, "runs": 0,
                    "chosen": False}
                   for c in candidates[len(timed):]]
        return table + untimed, table[best]

    def _time_pair(self, ctx: PassContext, a: Model, b: Model, feeds: Feeds, seconds: float) -> tuple[float, float]:
        """Best-of-runs latencies (ms) of two models under the default settings, timed round-robin."""
        runs = [ctx.tuner.prepare(m, {}) for m in (a, b)]
        ta, tb = measure([functools.partial(run, feeds) for run in runs], seconds)
        return _ms(min(ta)), _ms(min(tb))

    def _select_layers(self, model: Model, ctx: PassContext, layers: list[int], feeds: Feeds,
                       seconds: float) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Time each quantized layer alone, INT8 vs fp32; then the full model with the slow ones in fp32."""
        deadline = time.perf_counter() + seconds
        per_layer = seconds / 2 / len(layers)
        rows: list[dict[str, Any]] = []
        for n, index in enumerate(layers):
            node = model.graph.nodes[index]
            row: dict[str, Any] = {"node": node.name, "op": node.op, "precision": "int8"}
            rows.append(row)
            int8 = isolate(model, index)
            if int8 is None or time.perf_counter() > deadline:
                row["skipped"] = "no static shape" if int8 is None else "budget used up"
                continue
            self._status(ctx, f"INT8 vs fp32, layer {n + 1}/{len(layers)} ({node.name})")
            fp32 = int8.copy()
            to_fp32(fp32.graph, fp32.graph.nodes[_compute_node(fp32)])
            fp32.graph.cleanup().toposort()
            layer_feeds = random_inputs(int8.inputs, seed=0, dims=ctx.shape_overrides)
            row["int8_ms"], row["fp32_ms"] = self._time_pair(ctx, int8, fp32, layer_feeds, per_layer)
            row["faster"] = "fp32" if row["fp32_ms"] < row["int8_ms"] * (1 - PRECISION_MARGIN) else "int8"
        # Layers alone miss what quantization does to the whole graph (Q/DQ blocking the runtime's
        # fusions), so the full model decides: all INT8, the selection, or every layer in fp32.
        variants = {"int8": model, "all_fp32": _with_fp32(model, layers)}
        if any(r.get("faster") == "fp32" for r in rows):
            variants["selected"] = _with_fp32(model, [i for i, r in zip(layers, rows, strict=True)
                                                      if r.get("faster") == "fp32"])
        self._status(ctx, f"full model: {', '.join(variants)}")
        runs = [ctx.tuner.prepare(m, {}) for m in variants.values()]
        times = measure([functools.partial(run, feeds) for run in runs], max(deadline - time.perf_counter(), 0.0))
        selection: dict[str, Any] = {f"{name}_ms": _ms(statistics.median(t))
                                     for name, t in zip(variants, times, strict=True)}
        selection["chosen"] = list(variants)[consistent_winner(times)]
        state = ctx.handed(PrecisionState)
        if selection["chosen"] == "all_fp32" and state is not None and _no_integer_layers(variants["all_fp32"]):
            # Every layer computes in fp32: store the fp32 graph itself, not int8-rounded weights behind Clips.
            model.graph = state.reference.copy().graph
            selection["stored"] = "the fp32 graph (INT8 was not faster for any layer here)"
        else:
            model.graph = variants[selection["chosen"]].graph
        for row in rows:
            if selection["chosen"] == "all_fp32" or (selection["chosen"] == "selected" and row.get("faster") == "fp32"):
                row["precision"] = "fp32"
        return rows, selection
