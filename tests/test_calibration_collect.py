"""Range collection: min-max reduced inside the onnxruntime session, against the exposed values in numpy."""

from __future__ import annotations

from contextlib import AbstractContextManager

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import helper

from infer_compile.calibration import collect
from infer_compile.calibration.collect import (
    collect_ranges,
    reduced,
    run_exposed,
    signed_range_names,
    through_activation,
)
from infer_compile.core.ir import Model
from infer_compile.core.numerics import random_inputs, run_onnx
from tests.builders import make_model, tensor, text_detector, tiny_cnn
from tests.precision_models import cleaned


def activations(model: Model) -> list[str]:
    """Every float tensor a node writes, and the input."""
    return [model.inputs[0].name, *(t.name for n in model.graph.nodes for t in n.outputs)]


def samples(model: Model, count: int = 5) -> list[dict[str, np.ndarray]]:
    dims = {"batch": 2, "height": 32, "width": 32}
    return [{k: v * (i + 1) for k, v in random_inputs(model.inputs, seed=i, dims=dims).items()} for i in range(count)]


@pytest.mark.parametrize("proto", [tiny_cnn(), text_detector(widths=(4, 8), neck=8)], ids=["relu", "hardswish"])
def test_reduced_min_max_equal_the_exposed_values(proto: onnx.ModelProto) -> None:
    """Every range, those of activation outputs derived from their inputs' (Relu, HardSwish) included."""
    model = cleaned(proto)
    names, data = activations(model), samples(model)
    exact: dict[str, list[float]] = {}

    def consume(values: dict[str, np.ndarray]) -> None:
        for name, value in values.items():
            low, high = exact.get(name, [0.0, 0.0])
            exact[name] = [min(low, float(value.min())), max(high, float(value.max()))]

    run_exposed(model, names, data, consume)
    signed = [n for name in names for n in signed_range_names(name)]
    ranges = collect_ranges(model, [*names, *signed], data, "minmax")
    for name in names:
        low, high = exact[name]
        lo, hi = signed_range_names(name)
        np.testing.assert_allclose([ranges[lo], ranges[hi], ranges[name]], [low, high, max(-low, high)], rtol=1e-5)
    # The histogram path (exposed values, numpy) agrees: percentile 100 is the exact max |x|.
    histogram = collect_ranges(model, names, data, "percentile", percentile=100)
    np.testing.assert_allclose([histogram[n] for n in names], [ranges[n] for n in names], rtol=1e-5)


def test_reductions_follow_their_producers_and_leave_the_graph_as_it_was() -> None:
    """The calibration session runs nodes in this order: each tensor can be freed once its reductions ran (run
    last, they kept every activation alive: the 640x640 PP-OCRv4 detector's peak RSS 290 -> 561 MB)."""
    model = cleaned(tiny_cnn())
    names = activations(model)
    before = (list(model.graph.nodes), list(model.graph.outputs),
              {name: list(t.outputs) for name, t in model.graph.tensors().items()})
    with reduced(model, names) as outputs:
        nodes = model.graph.nodes
        assert len(outputs) == 3 * len(names) and [o.name for o in model.graph.outputs[-len(outputs):]] == outputs
        position = {node.name: i for i, node in enumerate(nodes)}
        for node in nodes:
            if node.op in ("ReduceMin", "ReduceMax", "Size"):
                producer = node.inputs[0].inputs
                earlier = position[producer[0].name] if producer else -1
                # right after the producer: only the producer's other reductions come between
                between = nodes[earlier + 1:position[node.name]]
                assert all(n.op in ("ReduceMin", "ReduceMax", "Size") for n in between), node.name
    assert (model.graph.nodes, model.graph.outputs) == (before[0], before[1])
    assert {name: list(t.outputs) for name, t in model.graph.tensors().items()} == before[2]
    assert not any(isinstance(t, gs.Variable) and "@Reduce" in t.name for t in model.graph.tensors().values())


def test_empty_samples_and_nan_leave_ranges_at_zero() -> None:
    model = cleaned(tiny_cnn())
    name = model.inputs[0].name
    empty = [{name: np.zeros((0, 3, 32, 32), np.float32)}]
    assert collect_ranges(model, [name], empty, "minmax") == {name: 0.0}
    nan = np.full((1, 3, 32, 32), np.nan, np.float32)
    assert collect_ranges(model, [name], [{name: nan}], "minmax") == {name: 0.0}
    assert collect_ranges(model, [], samples(model), "minmax") == {}  # a session asked for nothing returns all


@pytest.mark.parametrize("op", ["Relu", "HardSwish"])
@pytest.mark.parametrize("spread", [(-5.0, 4.0), (-1.4, 2.0), (0.5, 3.0), (-2.5, -0.2), (-0.9, 0.8)])
def test_an_activation_output_range_follows_from_its_input_range(op: str, spread: tuple[float, float]) -> None:
    """What onnxruntime computes on dense inputs spanning ``spread`` (the extremes widened to include 0): equal, but
    for HardSwish's minimum over inputs below -1.5, which is its function minimum, 1e-7 below the data's."""
    x = np.linspace(*spread, 100001, dtype=np.float32).reshape(1, -1)
    model = Model.from_proto(make_model([helper.make_node(op, ["x"], ["y"])], [tensor("x", [1, x.shape[1]])],
                                        [tensor("y", [1, x.shape[1]])], {}))
    y = run_onnx(model, {"x": x})["y"]
    low, high = through_activation(op, min(float(x.min()), 0.0), max(float(x.max()), 0.0))
    assert high == max(float(y.max()), 0.0)
    if op == "HardSwish" and spread[0] <= -1.5:
        assert low == -0.375 and 0 <= float(y.min()) - low < 1e-7
    else:
        assert low == min(float(y.min()), 0.0)


def test_activation_outputs_measured_with_their_inputs_are_not_reduced(monkeypatch: pytest.MonkeyPatch) -> None:
    """The detector's HardSwish and Relu outputs come from their inputs' ranges: the session reduces only the rest."""
    model = cleaned(text_detector(widths=(4, 8), neck=8))
    names = activations(model)
    derived = [t.name for node in model.graph.nodes if node.op in ("Relu", "HardSwish") for t in node.outputs]
    measured: list[list[str]] = []

    def counting(model: Model, names: list[str]) -> AbstractContextManager[list[str]]:
        measured.append(names)
        return reduced(model, names)

    monkeypatch.setattr(collect, "reduced", counting)
    lows, highs = collect.tensor_extremes(model, names, samples(model))
    assert len(derived) >= 3 and measured == [[n for n in names if n not in derived]]
    assert set(lows) == set(highs) == set(names)
