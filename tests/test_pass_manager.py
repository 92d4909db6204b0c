"""PassManager: ordering, records, requirement skips, failure attribution, per-pass verification."""

from __future__ import annotations

import itertools

import numpy as np
import onnx_graphsurgeon as gs
import pytest

from infer_compile.core.capabilities import Capability
from infer_compile.core.errors import AccuracyError, ExitCode, PassError, UserInputError
from infer_compile.core.ir import Model
from infer_compile.passes import Pass, PassContext, PassManager, PassResult, build_pipeline
from tests.builders import tiny_cnn


class ScaleFirstConv(Pass):
    """Deliberately wrong: scales the first Conv's weights, changing the outputs."""

    name = "scale-first-conv"
    description = "test pass that breaks numerics"

    def __init__(self, factor: float) -> None:
        self.factor = factor

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        conv = next(n for n in model.graph.nodes if n.op == "Conv")
        weight = conv.inputs[1]
        weight.values = (weight.values * self.factor).astype(np.float32)
        return PassResult({"scaled": 1})


class Explodes(Pass):
    name = "explodes"
    description = "test pass that raises"

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        raise RuntimeError("boom")


class NeedsCalibration(Pass):
    name = "needs-calibration"
    description = "test pass with a requirement"
    requires = frozenset({Capability.CALIBRATION})

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        raise AssertionError("must not run without calibration data")


def _model() -> Model:
    return Model.from_proto(tiny_cnn(batch=1))


def test_records_counts_times_and_node_counts() -> None:
    records = PassManager(build_pipeline()).run(_model(), PassContext()).records
    assert [r.name for r in records] == ["shape-inference", "constant-folding", "identity-elimination",
                                         "dead-node-elimination", *[r.name for r in records[4:]]]
    by_name = {r.name: r for r in records}
    assert by_name["identity-elimination"].counts == {"identity": 1, "dropout": 1}
    assert by_name["identity-elimination"].nodes_before - by_name["identity-elimination"].nodes_after == 2
    assert by_name["constant-folding"].status == "applied"
    assert all(r.seconds >= 0 for r in records)
    # Node counts chain: each pass starts where the previous one ended.
    for prev, cur in itertools.pairwise(records):
        assert cur.nodes_before == prev.nodes_after


def test_pass_missing_a_requirement_is_skipped_with_reason() -> None:
    records = PassManager([NeedsCalibration()]).run(_model(), PassContext()).records
    assert records[0].status == "skipped"
    assert records[0].reason == f"needs {Capability.CALIBRATION}"


def test_failure_names_the_pass_and_what_ran_before() -> None:
    manager = PassManager([*build_pipeline()[:2], Explodes()])
    with pytest.raises(PassError) as info:
        manager.run(_model(), PassContext())
    assert info.value.pass_name == "explodes"
    assert info.value.ran_before == ["shape-inference", "constant-folding"]
    assert "boom" in str(info.value)
    assert "--skip-pass explodes" in info.value.hint


def test_verify_passes_accepts_exact_rewrites_and_records_figures() -> None:
    records = PassManager(build_pipeline(), verify=True).run(_model(), PassContext()).records
    verified = [r for r in records if r.verification]
    assert verified, "modified passes carry verification figures"
    for r in verified:
        assert r.verification["max_abs"] < 1e-5
        assert r.verification["cosine"] > 0.999999


def test_verify_passes_stops_at_the_first_pass_that_breaks_numerics() -> None:
    passes = [*build_pipeline()[:2], ScaleFirstConv(1.5), ScaleFirstConv(1.0)]
    with pytest.raises(AccuracyError) as info:
        PassManager(passes, verify=True).run(_model(), PassContext())
    assert "scale-first-conv" in str(info.value)
    assert info.value.exit_code == ExitCode.ACCURACY


def test_without_verification_a_wrong_pass_goes_unnoticed() -> None:
    # The counterpart of the test above: proves the verification is what catches it.
    records = PassManager([ScaleFirstConv(1.5)]).run(_model(), PassContext()).records
    assert records[0].status == "applied"


def test_unknown_skip_pass_is_a_user_error() -> None:
    with pytest.raises(UserInputError, match="no-such-pass"):
        build_pipeline(skip=["no-such-pass"])


def test_skip_pass_removes_it_from_the_pipeline() -> None:
    names = [p.name for p in build_pipeline(skip=["constant-folding"])]
    assert "constant-folding" not in names and "shape-inference" in names


def test_manager_leaves_graph_valid_for_graphsurgeon() -> None:
    model = _model()
    PassManager(build_pipeline()).run(model, PassContext())
    assert isinstance(model.graph, gs.Graph)
    assert {n.op for n in model.graph.nodes}.isdisjoint({"Identity", "Dropout"})


def test_verify_passes_feeds_retyped_inputs_in_their_new_dtype() -> None:
    # fp16 without --keep-io-types turns the float32 input into float16.
    model = _model()
    records = PassManager(build_pipeline("fp16"), verify=True).run(model, PassContext()).records
    assert model.inputs[0].dtype == np.float16
    fp16 = next(r for r in records if r.name == "fp16")
    assert fp16.verification["cosine"] > 0.999
