"""Accuracy-aware fallback: the deliberately sensitive layer goes back to fp32 and the budget holds."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import helper

from infer_compile.calibration.collect import run_exposed
from infer_compile.core.budget import parse_budget
from infer_compile.core.capabilities import Capability
from infer_compile.core.errors import AccuracyError, ExitCode
from infer_compile.core.ir import Model
from infer_compile.core.numerics import Feeds, compare_outputs, in_dtypes, random_inputs, run_onnx, summarize
from infer_compile.passes import PassContext, PassManager, PipelineResult
from infer_compile.passes.accuracy_fallback import AccuracyFallback, HeldOutEvaluator
from infer_compile.passes.fp16 import Fp16Conversion
from infer_compile.passes.layer_sensitivity import _reads, rank_layers
from infer_compile.passes.quantize_int8 import QuantizeInt8
from tests.builders import make_model, nested_if, tensor, text_detector, tiny_cnn
from tests.passes_helpers import assert_nested_if_preserved
from tests.precision_models import calibration, cleaned, held_out, mixed_types, outlier_mlp


def build(proto: onnx.ModelProto, first=QuantizeInt8, **options) -> tuple[Model, PipelineResult]:
    model = cleaned(proto)
    ctx = PassContext(target="trt", calibration=calibration(proto, count=25), options=options)
    return model, PassManager([first(), AccuracyFallback()]).run(model, ctx)


def figures(proto: onnx.ModelProto, model: Model) -> dict:
    feeds = held_out(proto, seed=123)  # fresh inputs, not the held-out calibration samples
    return summarize(compare_outputs(run_onnx(Model.from_proto(proto), feeds), run_onnx(model, feeds, optimize=True)))


def test_with_fallback_off_accuracy_is_only_recorded() -> None:
    _, result = build(outlier_mlp(), fallback_limit=0.0)
    record = result.manifest["quantization"]
    assert record["accuracy"]["cosine"] < 0.99  # fc2's input range is ruined by the outlier channel
    assert "fallback" not in record and record["nodes"]["int8"] == 3


def test_without_budget_the_sensitive_layer_returns_to_fp32_to_meet_the_tolerance() -> None:
    """A plain INT8 build the final check would refuse is repaired, and says so."""
    proto = outlier_mlp()
    model, result = build(proto)
    record = result.manifest["quantization"]
    assert record["fallback"]["budget"] == "the int8 tolerance" and record["fallback"]["kept_fp32"] == ["fc2"]
    assert record["accuracy"]["within_tolerance"] and record["nodes"]["int8"] == 2
    assert figures(proto, model)["cosine"] >= 0.99  # holds on unseen inputs too


def test_the_sensitive_layer_returns_to_fp32_and_the_budget_holds() -> None:
    proto = outlier_mlp()
    model, result = build(proto, accuracy_budget="cosine>=0.999")
    record = result.manifest["quantization"]
    sensitivity = record["fallback"].pop("sensitivity")  # the error each layer adds in INT8
    assert record["fallback"] == {"budget": "cosine>=0.999", "kept_fp32": ["fc2"]}
    assert set(sensitivity) == {"fc1", "fc2", "fc3"} and max(sensitivity, key=sensitivity.get) == "fc2"
    assert record["accuracy"]["cosine"] >= 0.999 and record["nodes"]["int8"] == 2
    assert figures(proto, model)["cosine"] >= 0.999  # holds on unseen inputs too
    nodes = {n.name: n for n in model.graph.nodes}
    assert nodes["fc2"].inputs[1].name == "w2" and not nodes["fc2"].inputs[0].inputs[0].op.endswith("Linear")


def test_a_met_budget_changes_nothing() -> None:
    _, result = build(tiny_cnn(), accuracy_budget="top1-agreement>=0.9")
    assert result.manifest["quantization"]["fallback"]["kept_fp32"] == []


def test_an_unreachable_budget_fails_with_the_best_figure() -> None:
    with pytest.raises(AccuracyError, match=r"accuracy budget max-abs<=0 not met with up to 2 of 3 int8 layers back in "
                                            r"fp32: best cosine 0\.99\d+, .* with [12] back") as info:
        build(outlier_mlp(), accuracy_budget="max-abs<=0")
    assert info.value.exit_code == ExitCode.ACCURACY


def test_fp16_fallback_records_accuracy() -> None:
    proto = tiny_cnn()
    _, result = build(proto, Fp16Conversion, keep_io_types=True, accuracy_budget="cosine>=0.999")
    record = result.manifest["quantization"]
    assert record["accuracy"]["cosine"] >= 0.999 and record["fallback"]["kept_fp32"] == []


def test_nan_accuracy_never_passes() -> None:
    """Sqrt of a signed activation is NaN for fp32 too: no accuracy is known, so no budget or check passes."""
    w = (np.random.default_rng(0).standard_normal((32, 16)) / 6).astype(np.float32)
    proto = make_model([helper.make_node("MatMul", ["x", "w"], ["h"], name="fc"),
                        helper.make_node("Sqrt", ["h"], ["y"], name="sqrt")],
                       [tensor("x", ["batch", 32])], [tensor("y", ["batch", 16])], {"w": w})
    with pytest.raises(AccuracyError, match="is NaN: the fp32 model itself gives NaN/Inf outputs") as info:
        build(proto)  # no budget: the figure would only have been recorded
    assert info.value.exit_code == ExitCode.ACCURACY


def test_a_nan_output_is_the_worst_figure_whatever_the_order() -> None:
    ok, broken = np.ones((4, 10), np.float32), np.full((4, 10), np.nan, np.float32)
    for outputs in ({"a": ok, "b": broken}, {"b": broken, "a": ok}):
        figures = summarize(compare_outputs({"a": ok, "b": ok}, outputs))
        assert all(np.isnan(figures[k]) for k in ("cosine", "max_abs", "max_rel", "top1_agreement"))
        assert parse_budget("cosine>=0.9,max-abs<=1").check(figures)


@pytest.mark.parametrize("first", [QuantizeInt8, Fp16Conversion])
def test_models_with_types_numpy_lacks_are_measured(first) -> None:
    model, result = build(mixed_types(), first, accuracy_budget="cosine>=0.99")
    assert result.manifest["quantization"]["accuracy"]["cosine"] >= 0.99
    onnx.checker.check_model(model.to_proto(), full_check=True)


def test_nested_if_model_is_measured_and_preserved() -> None:
    proto = onnx.shape_inference.infer_shapes(nested_if(outer=[helper.make_node("MatMul", ["x", "w"], ["pre"])]))
    ctx = PassContext(target="onnxruntime", calibration=calibration(proto, count=25))
    quantization = QuantizeInt8().run(model := Model.from_proto(proto), ctx)
    quantized = model.to_proto()
    _, result = assert_nested_if_preserved(AccuracyFallback(), quantized, replace(ctx, earlier=(quantization,)),
                                           precision="int8")
    assert "accuracy" in result.manifest["quantization"]


def test_a_rewritten_graph_that_does_not_run_fails_the_accuracy_check() -> None:
    proto = tiny_cnn()
    broken = onnx.ModelProto()
    broken.CopyFrom(proto)
    flatten = next(n for n in broken.graph.node if n.op_type == "Flatten")
    flatten.op_type, flatten.input[:] = "Reshape", [flatten.input[0], "bad_shape"]
    broken.graph.initializer.append(onnx.numpy_helper.from_array(np.array([7, 5], np.int64), "bad_shape"))
    evaluator = HeldOutEvaluator(Model.from_proto(proto), calibration(proto, count=5).split()[1])
    with pytest.raises(AccuracyError, match="int8 graph does not run in onnxruntime"):
        evaluator.figures(Model.from_proto(broken))


def test_outputs_whose_shape_depends_on_the_values_are_compared() -> None:
    """NonZero's output width differs per sample: the held-out batches cannot be stacked along axis 0."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("NonZero", ["r"], ["where"])]
    proto = make_model(nodes, [tensor("x", [4, 8])], [tensor("where", [2, "n"], onnx.TensorProto.INT64)])
    model = Model.from_proto(proto)
    evaluator = HeldOutEvaluator(model, calibration(proto, count=10).split()[1])
    assert evaluator.figures(model)["max_abs"] == 0.0


def test_each_sample_is_judged_as_the_final_check_judges_it() -> None:
    """Pooled over the samples, one small sample's error disappears in the large ones' (cosine ~1); the final
    check compares sample by sample, so the fallback's figures and its tolerance verdict must too."""
    shape = [1, 64]
    reference = Model.from_proto(make_model([helper.make_node("Identity", ["x"], ["y"])], [tensor("x", shape)],
                                            [tensor("y", shape)]))
    relu = Model.from_proto(make_model([helper.make_node("Relu", ["x"], ["y"])], [tensor("x", shape)],
                                       [tensor("y", shape)]))
    rng = np.random.default_rng(0)
    large = [{"x": (10 + rng.random(shape)).astype(np.float32)} for _ in range(5)]  # Relu changes nothing
    small = {"x": (0.1 * rng.standard_normal(shape)).astype(np.float32)}  # Relu drops half of it
    figures = HeldOutEvaluator(reference, [*large, small]).figures(relu)
    assert figures["cosine"] < 0.9 and not figures["within_tolerance"]
    pooled = summarize(compare_outputs({"y": np.concatenate([s["x"] for s in [*large, small]])},
                                       {"y": np.maximum(np.concatenate([s["x"] for s in [*large, small]]), 0)}))
    assert pooled["cosine"] > 0.999  # what judging them pooled would have accepted


def test_reference_outputs_the_build_has_are_reused_for_the_same_samples() -> None:
    """The final check's reference outputs on the first held-out samples stand in for the fp32 run on them; a
    sample that is not the one they were computed on is run."""
    proto = outlier_mlp()
    model = Model.from_proto(proto)
    samples = list(calibration(proto, count=10).split()[1])
    assert len(samples) >= 2
    known = {"logits": np.full((4, 10), 7.0, np.float32)}  # not what the model computes: seen only if reused
    copy = {name: value.copy() for name, value in samples[0].items()}  # read again: equal, not the same object
    other = {name: value + 1 for name, value in samples[1].items()}
    expected = HeldOutEvaluator(model, samples, known=[(copy, known), (other, known)]).expected
    assert expected[0] is known
    np.testing.assert_allclose(expected[1]["logits"], run_onnx(model, samples[1])["logits"], rtol=1e-6)


def test_top1_agreement_is_pooled_over_the_samples_of_class_scores_only() -> None:
    proto = outlier_mlp()
    model = Model.from_proto(proto)
    samples = list(calibration(proto, count=10).split()[1])
    assert HeldOutEvaluator(model, samples).figures(model)["top1_agreement"] == 1.0  # logits [batch, 10]
    shape = [1, 3, 8, 8]  # an image-shaped output: no top-1
    identity = Model.from_proto(make_model([helper.make_node("Identity", ["x"], ["maps"])], [tensor("x", shape)],
                                           [tensor("maps", shape)]))
    images = [{"x": np.random.default_rng(i).random(shape, np.float32)} for i in range(3)]
    assert HeldOutEvaluator(identity, images).figures(identity)["top1_agreement"] is None


def _deep_outlier_mlp(sensitive: tuple[int, ...], layers: int = 8, width: int = 32) -> onnx.ModelProto:
    """``layers`` MatMul+ReLU layers; each layer in ``sensitive`` reads an input whose first channel is 1000x the
    others (the layer before scales it up, its own weight row down: fp32 computes the same), so per-tensor int8
    rounds its other channels to almost nothing, as in outlier_mlp."""
    rng = np.random.default_rng(0)
    weights = [(rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32) for _ in range(layers)]
    for index in sensitive:
        weights[index - 1][:, 0] *= 1000.0
        weights[index][0, :] /= 1000.0
    nodes, x = [], "x"
    for i in range(layers):
        nodes += [helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"], name=f"fc{i}"),
                  helper.make_node("Relu", [f"m{i}"], [f"r{i}"], name=f"relu{i}")]
        x = f"r{i}"
    nodes[-1].output[0] = "y"
    return make_model(nodes, [tensor("x", ["batch", width])], [tensor("y", ["batch", width])],
                      {f"w{i}": w for i, w in enumerate(weights)})


@pytest.fixture
def attempts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many fp32 layers each fallback attempt evaluated (the graphs the fallback judged, in order)."""
    tried: list[int] = []
    figures = HeldOutEvaluator.figures

    def counted(self: HeldOutEvaluator, model: Model, *, until_refused: bool = False) -> dict:
        if until_refused:
            tried.append(sum(1 for n in model.graph.nodes if n.op == "MatMul" and isinstance(n.inputs[1], gs.Constant)))
        return figures(self, model, until_refused=until_refused)

    monkeypatch.setattr(HeldOutEvaluator, "figures", counted)
    return tried


def test_a_fallback_that_cannot_pass_is_refused_after_the_most_it_may_return(attempts: list[int]) -> None:
    """One layer back in fp32 fails, then the most the fallback may return (half of 8) fails: refused without
    trying 2 (and, on a larger model, 8, 16, ...)."""
    with pytest.raises(AccuracyError, match=r"not met with up to 4 of 8 int8 layers back in fp32: best .* with 4 back"):
        build(_deep_outlier_mlp(sensitive=(2, 5)), accuracy_budget="max-abs<=0")
    assert attempts == [1, 4]


def test_a_fallback_that_can_pass_still_finds_the_fewest_layers(attempts: list[int]) -> None:
    """The most it may return passes: the counts below it are then searched as before (2, then bisected: 3)."""
    proto = _deep_outlier_mlp(sensitive=(2, 5))
    model, result = build(proto, accuracy_budget="cosine>=0.999")
    kept = result.manifest["quantization"]["fallback"]["kept_fp32"]
    assert attempts == [1, 4, 2, 3] and len(kept) == 4 and {"fc2", "fc5"} <= set(kept)
    assert figures(proto, model)["cosine"] >= 0.999


def _ranked_from_exposed_values(reference: Model, reduced: Model, candidates: list[str], samples: list[Feeds]
                                ) -> dict[str, float]:
    """The ranking's definition computed the slow way: every compared tensor of both graphs exposed, each graph in
    its own unoptimized session, the per-channel errors (last axis, vs the fp32 variance) in numpy float64."""
    ref_io, red_io = _reads(reference.graph, candidates), _reads(reduced.graph, candidates)
    values: dict[str, list[dict[str, np.ndarray]]] = {"ref": [], "red": []}
    for side, model, io in (("ref", reference, ref_io), ("red", reduced, red_io)):
        names = list(dict.fromkeys(n for inputs, output in io.values() for n in [*inputs, output]))
        run_exposed(model, names, [in_dtypes(s, model.inputs) for s in samples], values[side].append)

    def error(r: str, q: str) -> float:
        ref = np.concatenate([v[r].astype(np.float64).reshape(-1, v[r].shape[-1]) for v in values["ref"]])
        got = np.concatenate([v[q].astype(np.float64).reshape(-1, v[q].shape[-1]) for v in values["red"]])
        variance = ref.var(axis=0)
        floor = max(float(variance.max()), 1e-30) * 1e-6
        return float(np.mean(np.square(got - ref).mean(axis=0) / np.maximum(variance, floor)))

    return {name: error(ref_io[name][1], red_io[name][1])
            - max((error(r, q) for r, q in zip(ref_io[name][0], red_io[name][0], strict=True)), default=0.0)
            for name in candidates}


_ORT = frozenset({Capability.QDQ_PLACEMENT_QLINEAR, Capability.QDQ_ASYMMETRIC_ACTIVATIONS})


@pytest.mark.parametrize(("proto", "first", "capabilities", "dims"), [
    (outlier_mlp(), QuantizeInt8, frozenset(), {"batch": 8}),
    (_deep_outlier_mlp(sensitive=(2, 5)), QuantizeInt8, _ORT, {"batch": 8}),
    (text_detector(widths=(4, 8), neck=8), QuantizeInt8, _ORT, {"batch": 1, "height": 64, "width": 96}),
    (tiny_cnn(), Fp16Conversion, frozenset(), {"batch": 2}),
], ids=["int8-mlp", "int8-deep-mlp-ort", "int8-detector-ort", "fp16-cnn"])
def test_layers_are_ranked_in_one_session_as_from_their_exposed_values(proto: onnx.ModelProto, first, capabilities,
                                                                       dims: dict[str, int]) -> None:
    """Both graphs side by side in one session, reduced to per-channel sums there, rank the layers as exposing
    every layer's input and output of both graphs and comparing them in numpy does (the same order and errors)."""
    model = cleaned(proto)
    ctx = PassContext(target="onnxruntime", calibration=calibration(proto, count=8), capabilities=capabilities)
    state = first().run(model, ctx).handoff
    samples = [random_inputs(state.reference.inputs, seed=50 + i, dims=dims) for i in range(3)]
    ranked, added = rank_layers(state.reference, model, state.candidates, samples)
    expected = _ranked_from_exposed_values(state.reference, model, state.candidates, samples)
    assert set(added) == set(expected) == set(state.candidates) and len(added) >= 3
    # the same order, up to ties among errors the ranking rounds to 6 decimals (fp16: ~1e-8 each)
    assert all(expected[a] >= expected[b] - 1e-6 for a, b in itertools.pairwise(ranked)), (ranked, expected)
    for name, value in expected.items():
        assert added[name] == pytest.approx(value, rel=1e-3, abs=1e-5), name
