"""shape-inference: every intermediate tensor gets a shape and dtype; numerics untouched."""

from __future__ import annotations

from infer_compile.passes.shape_inference import ShapeInference
from tests.builders import nested_if, tiny_cnn
from tests.passes_helpers import apply_pass, assert_nested_if_preserved, assert_same_outputs


def test_annotates_intermediate_tensors() -> None:
    proto = tiny_cnn(batch=1)
    model, result = apply_pass(ShapeInference(), proto)
    assert result.counts["shapes_inferred"] == 12
    tensors = model.graph.tensors()
    assert tuple(tensors["c2"].shape) == (1, 16, 16, 16)
    assert tuple(tensors["flat"].shape) == (1, 16)
    assert_same_outputs(proto, model)


def test_symbolic_batch_is_propagated() -> None:
    model, _ = apply_pass(ShapeInference(), tiny_cnn(batch="n"))
    assert tuple(model.graph.tensors()["pool"].shape) == ("n", 16, 1, 1)


def test_second_run_changes_nothing() -> None:
    model, _ = apply_pass(ShapeInference(), tiny_cnn())
    _, result = apply_pass(ShapeInference(), model.to_proto())
    assert not result.modified


def test_nested_if_bodies_keep_working() -> None:
    model, _ = assert_nested_if_preserved(ShapeInference(), nested_if())
    assert list(model.graph.tensors()["s"].shape) == [2, 4]  # a value only the bodies read
