"""Shared checks for pass tests: run one pass on a proto, validate the result, compare numerics."""

from __future__ import annotations

import collections
import itertools

import numpy as np
import onnx

from infer_compile.core.ir import Model
from infer_compile.core.numerics import TOLERANCES, Feeds, compare_outputs, random_inputs, run_onnx, summarize, within
from infer_compile.passes.base import Pass, PassContext, PassResult


def apply_pass(pass_obj: Pass, proto: onnx.ModelProto, ctx: PassContext | None = None) -> tuple[Model, PassResult]:
    """Run ``pass_obj`` on a copy of ``proto``; the result must pass the full ONNX checker."""
    model = Model.from_proto(proto)
    result = pass_obj.run(model, ctx or PassContext())
    onnx.checker.check_model(model.to_proto(), full_check=True)
    return model, result


def assert_same_outputs(before_proto: onnx.ModelProto, after_model: Model, precision: str = "fp32",
                        feeds: Feeds | None = None) -> dict:
    """onnxruntime on the original and on the rewritten model agree within ``precision``'s tolerance
    (the rewritten model is fed the same values in the dtypes it takes: fp16 may retype inputs)."""
    before = Model.from_proto(before_proto)
    feeds = feeds if feeds is not None else random_inputs(before.inputs, seed=0)
    reference = run_onnx(before, feeds)
    dtypes = {spec.name: spec.dtype for spec in after_model.inputs}
    comparisons = compare_outputs(reference, run_onnx(after_model, {k: v.astype(dtypes[k]) for k, v in feeds.items()}))
    figures = summarize(comparisons)
    assert within(comparisons, TOLERANCES[precision]), figures
    return figures


def assert_nested_if_preserved(pass_obj: Pass, proto: onnx.ModelProto, ctx: PassContext | None = None,
                               precision: str = "fp32") -> tuple[Model, PassResult]:
    """``pass_obj`` on a ``tests.builders.nested_if`` model: the result passes the full checker, onnxruntime
    loads it, and it computes what the original did on every combination of the two branch conditions."""
    model, result = apply_pass(pass_obj, proto, ctx)
    x = random_inputs(Model.from_proto(proto).inputs, seed=0)["x"]
    for c1, c2 in itertools.product((True, False), repeat=2):
        feeds = {"x": x, "c1": np.array(c1), "c2": np.array(c2)}
        assert_same_outputs(proto, model, precision, feeds)
    return model, result


def op_counts(model: Model | onnx.ModelProto) -> collections.Counter[str]:
    """Op histogram of a model, IR or protobuf."""
    if isinstance(model, Model):
        return model.op_histogram()
    return collections.Counter(node.op_type for node in model.graph.node)


def assert_unchanged(pass_obj: Pass, proto: onnx.ModelProto,
                     ctx: PassContext | None = None) -> tuple[Model, PassResult]:
    """A negative case: the pass reports nothing and the graph keeps every node."""
    model, result = apply_pass(pass_obj, proto, ctx)
    assert not result.modified, result.counts
    assert op_counts(model) == op_counts(proto)
    return model, result


def assert_missed(pass_obj: Pass, proto: onnx.ModelProto, rule: str, reason: str,
                  ctx: PassContext | None = None) -> None:
    """A near-miss: the graph and its outputs stay as they were, and ``rule`` says exactly ``reason`` why."""
    model, result = assert_unchanged(pass_obj, proto, ctx)
    assert_same_outputs(proto, model)
    assert reason in result.misses.get(rule, {}), result.misses


def rand(rng: np.random.Generator, *shape: int, scale: float = 1.0) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)
