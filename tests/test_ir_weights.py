"""Weightless exports (Model.to_proto(weights=False)) and onnxruntime sessions over the graph's own arrays."""

from __future__ import annotations

import gc

import numpy as np
import onnx
import pytest
from onnx import helper

from infer_compile.core.ir import WEIGHT_BYTES, Model
from infer_compile.core.numerics import TOLERANCES, compare_outputs, ort_session, random_inputs, within
from infer_compile.passes.shape_inference import ShapeInference
from tests.builders import make_model, tensor, tiny_cnn


@pytest.fixture
def model() -> Model:
    return Model.from_proto(tiny_cnn())


def full_outputs(model: Model, feeds: dict) -> dict:
    """The reference: a session from the model serialized with every weight inside."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.to_proto().SerializeToString(), options, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True))


def test_weightless_export_leaves_out_only_large_constants(model: Model) -> None:
    weights = {c.name for c in model.weight_constants()}
    assert weights and len(weights) < len(list(model.constants()))  # tiny_cnn has small constants too
    proto = model.to_proto(weights=False)
    for init in proto.graph.initializer:
        left_out = init.data_location == onnx.TensorProto.EXTERNAL
        assert left_out == (init.name in weights), init.name
        assert left_out or onnx.numpy_helper.to_array(init).nbytes < WEIGHT_BYTES
        assert not left_out or init.ByteSize() < 100  # shape, dtype and a location: no data
    assert all(c.data_location is None for c in model.constants())  # the model itself is unchanged


def test_session_over_shared_arrays_matches_full_model(model: Model) -> None:
    feeds = random_inputs(model.inputs, dims={"batch": 2})
    expected = full_outputs(model, feeds)
    session = ort_session(model)
    del model
    gc.collect()  # the session keeps the arrays it reads alive on its own
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True))
    assert within(compare_outputs(expected, got), TOLERANCES["fp32"])
    assert all(np.array_equal(expected[k], got[k]) for k in expected)


def test_shape_inference_keeps_the_weight_arrays(model: Model) -> None:
    feeds = random_inputs(model.inputs, dims={"batch": 2})
    expected = full_outputs(model, feeds)
    arrays = {c.name: c.values for c in model.weight_constants()}
    ShapeInference().run(model, None)
    after = {c.name: c for c in model.constants()}
    assert all(after[name].values is array for name, array in arrays.items())  # adopted, not copied
    assert all(t.shape is not None for t in model.graph.tensors().values())
    got = full_outputs(model, feeds)
    assert within(compare_outputs(expected, got), TOLERANCES["fp32"])


def test_other_dtypes_share_too() -> None:
    """int64 indices and float16 weights reach ORT as shared arrays as well."""
    rng = np.random.default_rng(0)
    table = rng.standard_normal((300, 8)).astype(np.float16)
    indices = rng.integers(0, 300, 200).astype(np.int64)
    proto = make_model([helper.make_node("Gather", ["table", "indices"], ["y"])], [], [tensor("y", [200, 8], 10)],
                       {"table": table, "indices": indices})
    model = Model.from_proto(proto)
    assert {c.name for c in model.weight_constants()} == {"table", "indices"}
    (got,) = ort_session(model).run(None, {})
    np.testing.assert_array_equal(got, table[indices])
