"""initializer-dedup: identical constants merge; near-identical or differently typed ones do not."""

from __future__ import annotations

import numpy as np
from onnx import helper

from infer_compile.passes.initializer_dedup import InitializerDedup
from tests.builders import make_model, nested_if, tensor
from tests.passes_helpers import apply_pass, assert_nested_if_preserved, assert_same_outputs, assert_unchanged


def _two_adds(a: np.ndarray, b: np.ndarray):
    nodes = [helper.make_node("Add", ["x", "a"], ["s"]), helper.make_node("Mul", ["s", "b"], ["y"])]
    return make_model(nodes, [tensor("x", [4])], [tensor("y", [4])], {"a": a, "b": b})


def test_identical_constants_merge() -> None:
    values = np.arange(4, dtype=np.float32)
    proto = _two_adds(values, values.copy())
    model, result = apply_pass(InitializerDedup(), proto)
    assert result.counts == {"initializers_merged": 1}
    assert len(list(model.constants())) == 1
    assert_same_outputs(proto, model)


def test_identical_scalars_merge() -> None:
    # 0-d constants (exporters emit many: eps, scale factors) used to crash the byte comparison.
    proto = _two_adds(np.array(2.0, np.float32), np.array(2.0, np.float32))
    model, result = apply_pass(InitializerDedup(), proto)
    assert result.counts == {"initializers_merged": 1}
    assert_same_outputs(proto, model)


def test_different_bytes_are_kept_apart() -> None:
    a = np.array([0.0, 1.0, 2.0, 3.0], np.float32)
    b = a.copy()
    b[0] = -0.0  # equal as a value, different bytes: a division by it differs in sign
    assert_unchanged(InitializerDedup(), _two_adds(a, b))
    assert_unchanged(InitializerDedup(), _two_adds(a, a + 1e-7))


def test_duplicate_read_inside_if_bodies_is_merged_there_too() -> None:
    outer = [helper.make_node("Mul", ["x", "k_dup"], ["pre"])]
    _, result = assert_nested_if_preserved(InitializerDedup(), nested_if(outer=outer))
    assert result.counts == {"initializers_merged": 1}
