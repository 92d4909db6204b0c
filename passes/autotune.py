"""Kernel autotuning: time the target's runtime configurations on this machine and keep the fastest.

Measuring, not guessing. The target supplies a ``Tuner`` (candidate configurations and a way to
load the model with one); this pass times them on seeded inputs within the ``tune_time`` budget
and records every candidate's median latency and the choice in ``ctx.records["autotune"]``
(the manifest), from where the target's emit()/load() apply it.

For runtimes that run every Q/DQ'd layer with its INT8 kernel (``Tuner.per_layer_precision``),
each quantized layer is first timed alone, INT8 against fp32 (its Q/DQ removed); a layer whose
INT8 kernel is not faster goes back to fp32, and the whole selection is kept only if the full
model gets faster with it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_graphsurgeon as gs

from infer_compile.ir import Model
from infer_compile.numerics import Feeds, random_inputs
from infer_compile.passes.base import TUNER, Pass, PassContext, PassResult
from infer_compile.passes.graph_utils import producer

# Seconds of timing when the build options do not say (pass option "tune_time").
DEFAULT_TUNE_TIME = 5.0
# A candidate replaces the default only when its median is this much lower: below that, the
# difference is machine noise and the default is the better-tested choice.
MARGIN = 0.02
RUNS_PER_BLOCK = 3
# Candidates whose median is this many times the best stop being timed.
PRUNE_FACTOR = 1.5
QUANTIZABLE_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})

Timed = Callable[[], object]


def measure(runs: Sequence[Timed], seconds: float) -> list[list[float]]:
    """Per callable, the latencies of its timed runs (seconds).

    Round-robin in blocks until ``seconds`` pass (at least one block each), after one untimed
    warm-up run each, so load drift on a shared machine hits every candidate alike. After two
    blocks, candidates far slower than the best drop out, leaving the budget to the close ones;
    the first (the default, the baseline every other is judged against) is always timed.
    """
    for run in runs:
        run()
    times: list[list[float]] = [[] for _ in runs]
    active = list(range(len(runs)))
    deadline = time.perf_counter() + seconds
    while True:
        for i in active:
            for _ in range(RUNS_PER_BLOCK):
                start = time.perf_counter()
                runs[i]()
                times[i].append(time.perf_counter() - start)
        if time.perf_counter() >= deadline:
            return times
        best = min(statistics.median(times[i]) for i in active)
        active = [i for i in active
                  if i == 0 or len(times[i]) < 2 * RUNS_PER_BLOCK or statistics.median(times[i]) <= PRUNE_FACTOR * best]


def choose(medians: Sequence[float], margin: float = MARGIN) -> int:
    """Index of the fastest median; index 0 (the default) unless another beats it by ``margin``.

    A pure function of the measurements: the same medians always give the same choice.
    """
    best = min(range(len(medians)), key=lambda i: (medians[i], i))
    return best if medians[best] < medians[0] * (1 - margin) else 0


def _median_ms(latencies: list[float]) -> float:
    return round(statistics.median(latencies) * 1000, 4)


# -- INT8 layer selection -------------------------------------------------------------------------


def _dequantize_constant(dq: gs.Node) -> np.ndarray | None:
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


def _float_source(tensor: gs.Tensor) -> gs.Tensor | np.ndarray | None:
    """What the DequantizeLinear producing ``tensor`` was made from: the float activation fed to its
    QuantizeLinear, or the dequantized constant; None when ``tensor`` is not Q/DQ'd like that."""
    dq = producer(tensor)
    if dq is None or dq.op != "DequantizeLinear":
        return None
    if isinstance(dq.inputs[0], gs.Constant):
        return _dequantize_constant(dq)
    q = producer(dq.inputs[0])
    return q.inputs[0] if q is not None and q.op == "QuantizeLinear" else None


def quantized_layers(graph: gs.Graph) -> list[int]:
    """Indices (into ``graph.nodes``) of compute layers whose data and weight inputs are both Q/DQ'd,
    largest weights first (they matter most when the budget runs out)."""
    layers = [i for i, node in enumerate(graph.nodes)
              if node.op in QUANTIZABLE_OPS and len(node.inputs) >= 2
              and all(_float_source(t) is not None for t in node.inputs[:2])]
    return sorted(layers, key=lambda i: -_static_size(graph.nodes[i].inputs[1].inputs[0].inputs[0]))


def _static_size(tensor: gs.Tensor) -> int:
    shape = tensor.shape or [0]
    return int(np.prod(shape)) if all(isinstance(d, int) for d in shape) else 0


def to_fp32(node: gs.Node) -> None:
    """Make ``node`` compute in fp32: feed it the float tensors its DequantizeLinear inputs came from
    (its output's QuantizeLinear, if any, stays: it belongs to the layer consuming it)."""
    for i, tensor in enumerate(node.inputs):
        source = _float_source(tensor)
        if isinstance(source, np.ndarray):
            node.inputs[i] = gs.Constant(f"{tensor.name}/fp32", source)
        elif source is not None:
            node.inputs[i] = source


def isolate(model: Model, index: int) -> Model | None:
    """A model of just one quantized layer with its Q/DQ (and its output's Q/DQ, as in the graph);
    None when a tensor at its border has no known shape."""
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
    if len(output.outputs) == 1 and requant:
        dequant = [c for c in requant[0].outputs[0].outputs if c.op == "DequantizeLinear"][:1]
        nodes += requant + dequant
        output = (dequant or requant)[0].outputs[0]
    border = [*inputs, output]
    if any(t.shape is None or t.dtype is None for t in border):
        return None
    graph = gs.Graph(nodes=nodes, inputs=inputs, outputs=[output], opset=model.graph.opset,
                     import_domains=model.graph.import_domains)
    return Model.from_proto(gs.export_onnx(graph, do_type_check=False, ir_version=model.ir_version))


def _compute_node(model: Model) -> int:
    return next(i for i, n in enumerate(model.graph.nodes) if n.op in QUANTIZABLE_OPS)


@dataclass(frozen=True)
class Cost:
    """What timing one configuration of the model costs here: loading it, and one run (seconds)."""

    load_s: float
    run_s: float

    @classmethod
    def probe(cls, tuner: Any, model: Model, feeds: Feeds) -> Cost:
        start = time.perf_counter()
        run = tuner.prepare(model, {})
        loaded = time.perf_counter()
        run(feeds)
        return cls(loaded - start, time.perf_counter() - loaded)

    def of(self, configurations: int) -> float:
        """Seconds to load and time ``configurations`` configurations once (warm-up and one block each)."""
        return configurations * (self.load_s + (1 + RUNS_PER_BLOCK) * self.run_s)


class Autotune(Pass):
    name = "autotune"
    description = ("Time the target's runtime settings (and INT8 vs fp32 per layer) here; keep the fastest "
                   "(budget: tune_time).")
    requires = frozenset({TUNER})
    # Only INT8 layer selection changes numbers, and only by giving back INT8 rounding.
    precision = "int8"

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        budget = float(ctx.option("tune_time", DEFAULT_TUNE_TIME))
        start = time.perf_counter()
        result = PassResult()
        record: dict[str, Any] = {"budget_s": budget}
        feeds = random_inputs(model.inputs, seed=0, dims=ctx.shape_overrides)
        self._status(ctx, "loading the model once to see what timing it costs")
        cost = Cost.probe(ctx.tuner, model, feeds)
        layers = quantized_layers(model.graph) if ctx.tuner.per_layer_precision else []
        if layers:
            # Half the budget, less what the final full-model comparison will take.
            seconds = max(budget / 2 - (time.perf_counter() - start) - cost.of(2), 0.0)
            record["layers"], record["layer_selection"] = self._select_layers(model, ctx, layers, feeds, seconds)
            result.add("layers_to_fp32", sum(r["precision"] == "fp32" for r in record["layers"]))
        remaining = max(budget - (time.perf_counter() - start), 0.0)
        record["candidates"], chosen = self._time_candidates(model, ctx, feeds, remaining, cost)
        record["chosen"] = chosen["label"]
        record["target_options"] = {ctx.tuner.option_key: chosen["settings"]}
        record["seconds"] = round(time.perf_counter() - start, 3)
        ctx.records["autotune"] = record
        result.add("candidates_timed", len(record["candidates"]))
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
        times = measure([lambda run=run: run(feeds) for run in runs], deadline - time.perf_counter())
        table = [{"label": c.label, "settings": c.settings, "median_ms": _median_ms(t), "runs": len(t)}
                 for c, t in zip(timed, times, strict=True)]
        best = choose([row["median_ms"] for row in table])
        for i, row in enumerate(table):
            row["chosen"] = i == best
        untimed = [{"label": c.label, "settings": c.settings, "median_ms": None, "runs": 0, "chosen": False}
                   for c in candidates[len(timed):]]
        return table + untimed, table[best]

    def _time_pair(self, ctx: PassContext, a: Model, b: Model, feeds: Feeds, seconds: float) -> tuple[float, float]:
        runs = [ctx.tuner.prepare(m, {}) for m in (a, b)]
        ta, tb = measure([lambda run=run: run(feeds) for run in runs], seconds)
        return _median_ms(ta), _median_ms(tb)

    def _select_layers(self, model: Model, ctx: PassContext, layers: list[int], feeds: Feeds,
                       seconds: float) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Time each quantized layer alone, INT8 vs fp32; then the full model with the slow ones in fp32."""
        deadline = time.perf_counter() + seconds
        per_layer = seconds / 2 / len(layers)
        rows: list[dict[str, Any]] = []
        demoted = model.copy()
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
            to_fp32(fp32.graph.nodes[_compute_node(fp32)])
            fp32.graph.cleanup()
            layer_feeds = random_inputs(int8.inputs, seed=0, dims=ctx.shape_overrides)
            row["int8_ms"], row["fp32_ms"] = self._time_pair(ctx, int8, fp32, layer_feeds, per_layer)
            row["faster"] = "int8" if row["int8_ms"] < row["fp32_ms"] else "fp32"
            if row["faster"] == "fp32":
                to_fp32(demoted.graph.nodes[index])
        selection: dict[str, Any] = {"applied": False}
        if any(r.get("faster") == "fp32" for r in rows):
            demoted.graph.cleanup(remove_unused_graph_inputs=False).toposort()
            self._status(ctx, "full model: all INT8 vs selected layers in fp32")
            remaining = max(deadline - time.perf_counter(), 0.0)
            selection["int8_ms"], selection["selected_ms"] = self._time_pair(ctx, model, demoted, feeds, remaining)
            selection["applied"] = choose([selection["int8_ms"], selection["selected_ms"]]) == 1
            if selection["applied"]:
                model.graph = demoted.graph
                for row in rows:
                    row["precision"] = row.get("faster", "int8")
        return rows, selection
