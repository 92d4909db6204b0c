"""The final check every build ends with, the example inputs it runs on, and the one tolerance judgement."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import infer_compile.app.build
import infer_compile.app.build_steps
from infer_compile.app.examples import Examples, example_inputs, graph_inputs, reference_outputs
from infer_compile.core.errors import AccuracyError, UserInputError
from infer_compile.core.ir import Model
from infer_compile.core.numerics import (
    TOLERANCES,
    compare_output,
    compare_outputs,
    out_of_tolerance,
    tolerance_for,
    within,
)
from infer_compile.passes import build_pipeline
from tests.artifact_helpers import assert_user_error, invoke
from tests.builders import make_model, tensor, tiny_cnn
from tests.test_pass_manager import ScaleFirstConv

# --- the judgement: relative, above an absolute floor of float noise --------------------------------------


@pytest.mark.parametrize("precision", sorted(TOLERANCES))
def test_all_zero_constant_or_nan_outputs_never_pass(precision: str) -> None:
    ref = np.random.default_rng(0).normal(0, 0.01, (4, 10)).astype(np.float32)  # small: max abs of zeros < 0.05
    for got in (np.zeros_like(ref), np.full_like(ref, ref.mean()), np.where(ref > 0, np.nan, ref)):
        assert not within([compare_output("y", ref, got)], TOLERANCES[precision]), got


@pytest.mark.parametrize("precision", sorted(TOLERANCES))
def test_a_near_zero_output_within_float_noise_passes(precision: str) -> None:
    """A probability map of ~6e-6 (PP-OCRv4's detector on random input) differing by reassociation noise: its
    relative figures are noise (cosine 0.999996, error 0.024x its spread), its absolute error is not."""
    rng = np.random.default_rng(3)
    ref = (6e-6 * rng.random((1, 1, 64, 64))).astype(np.float32)
    got = ref + rng.normal(0, 6e-8, ref.shape).astype(np.float32)
    comparison = compare_output("y", ref, got)
    assert comparison.cosine < TOLERANCES["fp32"].min_cosine or TOLERANCES["fp32"].error(comparison) > 1e-3
    assert within([comparison], TOLERANCES[precision])
    assert not within([compare_output("y", ref, got + 2e-5)], TOLERANCES[precision])  # just above the floor


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_offset_output_that_lost_its_variation_fails_even_with_cosine_near_one(precision: str) -> None:
    ref = 100 + np.random.default_rng(0).normal(0, 1, 1000)
    comparison = compare_output("y", ref, np.full_like(ref, 100.0))
    assert comparison.cosine > 0.9999
    assert not within([comparison], TOLERANCES[precision])


@pytest.mark.parametrize("precision,noise", [("fp32", 1e-6), ("fp16", 1e-3), ("int8", 2e-2)])
def test_rounding_noise_of_each_precision_passes(precision: str, noise: float) -> None:
    rng = np.random.default_rng(1)
    ref = rng.normal(0, 3, (8, 100))
    assert within([compare_output("y", ref, ref + rng.normal(0, noise * 3, ref.shape))], TOLERANCES[precision])


@pytest.mark.parametrize(("name", "shape", "scores"), [
    ("output_0", (4, 10), True),  # [batch, classes]
    ("logits", (1, 16, 128), True),  # a language model's per-token scores, named so by its source
    ("detections.cls_scores", (1, 8, 4), True),
    ("output_0", (1, 8, 256), False),  # a YOLO-style head: boxes and scores per anchor
    ("last_hidden_state", (1, 16, 32), False),
    ("output_0", (4, 1), False),
])
def test_top1_agreement_only_for_class_scores(name: str, shape: tuple, scores: bool) -> None:
    ref = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    assert (compare_output(name, ref, ref.copy()).top1_agreement is not None) is scores


def test_matching_infinities_pass_and_a_new_nan_fails() -> None:
    ref = np.array([1.0, np.inf, -np.inf, 2.0])
    assert within([compare_output("y", ref, ref.copy())], TOLERANCES["fp32"])
    assert not within([compare_output("y", ref, np.array([1.0, np.inf, np.nan, 2.0]))], TOLERANCES["fp32"])


def test_finite_outputs_and_outputs_with_matching_infinities_get_the_same_figures() -> None:
    """Finite outputs take a shorter path; a matching infinity, which compares as 0 and is left out of the
    reference's spread and scale, must leave every figure of the finite values as it was."""
    rng = np.random.default_rng(3)
    ref = rng.normal(size=1000).astype(np.float32)
    got = ref + rng.normal(scale=0.01, size=1000).astype(np.float32)
    finite = compare_output("y", ref, got)
    r, g = ref.astype(np.float64), got.astype(np.float64)
    assert finite.max_abs == np.abs(r - g).max() and finite.scale == np.abs(r).max() and finite.spread == r.std()
    assert finite.cosine == pytest.approx(np.dot(r, g) / np.linalg.norm(r) / np.linalg.norm(g), abs=1e-12)
    with_inf = compare_output("y", np.append(ref, np.inf), np.append(got, np.inf))
    for figure in ("max_abs", "max_rel", "cosine", "spread", "scale"):
        assert getattr(with_inf, figure) == pytest.approx(getattr(finite, figure), rel=1e-12), figure


def test_sequence_outputs_compare_element_wise_and_optionals_by_presence() -> None:
    rng = np.random.default_rng(2)
    ref = {"seq": [rng.normal(size=(2, 3)), rng.normal(size=(4,))], "opt": None}
    same = compare_outputs(ref, {"seq": [a.copy() for a in ref["seq"]], "opt": None})
    assert [c.name for c in same] == ["seq[0]", "seq[1]"] and within(same, TOLERANCES["fp32"])
    changed = compare_outputs(ref, {"seq": [ref["seq"][0], np.zeros(4)], "opt": None})
    assert out_of_tolerance(changed, TOLERANCES["fp32"])[0].startswith("output 'seq[1]'")
    for got in ({"seq": ref["seq"][:1], "opt": None}, {"seq": ref["seq"], "opt": np.ones(1)},
                {"seq": ref["seq"][0], "opt": None}):
        with pytest.raises(AccuracyError, match=r"output '(seq|opt)' is"):
            compare_outputs(ref, got)


def test_an_output_the_graph_computes_in_float16_is_held_to_fp16_tolerance_in_any_build() -> None:
    rng = np.random.default_rng(3)
    ref = rng.normal(0, 1, (8, 64))
    got = ref + rng.normal(0, 1e-3, ref.shape)  # float16 rounding: beyond fp32's tolerance, within fp16's
    half = compare_output("y", ref.astype(np.float16), got.astype(np.float16))
    assert within([half], TOLERANCES["fp32"]) and not within([compare_output("y", ref, got)], TOLERANCES["fp32"])
    assert tolerance_for(TOLERANCES["int8"], half) == TOLERANCES["int8"]  # never tighter than the build's own
    assert not within([compare_output("y", ref.astype(np.float16), np.zeros((8, 64), np.float16))],
                      TOLERANCES["fp32"])


# --- example inputs ------------------------------------------------------------------------------------------


def sample_rate_model(*, with_mode_switch: bool = True) -> onnx.ModelProto:
    """y = (x + arange(sr // 1000)) * (1 if sr == 16000 else 2): runs only when sr // 1000 == 16.

    Without the mode switch nothing in the graph says which sample rate it takes.
    """
    nodes = [helper.make_node("Div", ["sr", "thousand"], ["n"]),
             helper.make_node("Range", ["zero", "n", "one"], ["steps"]),
             helper.make_node("Cast", ["steps"], ["ramp"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["x", "ramp"], ["shifted"])]
    inits = {"thousand": np.array(1000, np.int64), "zero": np.array(0, np.int64), "one": np.array(1, np.int64)}
    if with_mode_switch:
        nodes += [helper.make_node("Equal", ["sr", "rate"], ["is_16k"]),
                  helper.make_node("Where", ["is_16k", "gain_16k", "gain_other"], ["gain"]),
                  helper.make_node("Mul", ["shifted", "gain"], ["y"])]
        inits |= {"rate": np.array(16000, np.int64), "gain_16k": np.array(1.0, np.float32),
                  "gain_other": np.array(2.0, np.float32)}
    else:
        nodes.append(helper.make_node("Identity", ["shifted"], ["y"]))
    return make_model(nodes, [tensor("x", [1, 16]), tensor("sr", [], TensorProto.INT64)], [tensor("y", [1, 16])],
                      inits)


def test_integer_inputs_follow_what_the_graph_does_with_them() -> None:
    table = np.zeros((50, 4), np.float32)
    model = Model.from_proto(make_model(
        [helper.make_node("Gather", ["table", "ids"], ["rows"]), helper.make_node("Equal", ["sr", "rate"], ["is"]),
         helper.make_node("Cast", ["is"], ["y"], to=TensorProto.FLOAT)],
        [tensor("ids", [64], TensorProto.INT64), tensor("sr", [], TensorProto.INT64)],
        [tensor("rows", [64, 4]), tensor("y", [])], {"table": table, "rate": np.array(8000, np.int64)}))
    feeds = graph_inputs(model, seed=3)
    assert feeds["sr"].shape == () and int(feeds["sr"]) == 8000
    assert feeds["ids"].min() >= 0 and feeds["ids"].max() < 50 and feeds["ids"].max() > 1  # the table's range


def test_shape_and_axes_operands_get_values_valid_for_any_data() -> None:
    model = Model.from_proto(make_model(
        [helper.make_node("Expand", ["x", "shape"], ["wide"]), helper.make_node("Unsqueeze", ["wide", "axes"], ["y"]),
         helper.make_node("Reshape", ["x", "flat"], ["z"])],
        [tensor("x", [2, 3]), tensor("shape", [2], TensorProto.INT64), tensor("axes", [2], TensorProto.INT64),
         tensor("flat", [2], TensorProto.INT64)],
        [tensor("y", [1, 1, 2, 3]), tensor("z", [1, 6])]))
    feeds = graph_inputs(model)
    assert feeds["shape"].tolist() == [1, 1] and feeds["axes"].tolist() == [0, 1] and feeds["flat"].tolist() == [1, -1]
    outputs = reference_outputs(model, Examples([feeds], "random", generated=True))[0]
    assert outputs["y"].shape == (1, 1, 2, 3) and outputs["z"].shape == (1, 6)


def test_int64_scalar_sample_rate_builds_and_checks(tmp_path: Path) -> None:
    source = tmp_path / "vad.onnx"
    onnx.save_model(sample_rate_model(), str(source))
    out = tmp_path / "vad.out.onnx"
    result = invoke(source, "-o", out, "--verify-passes", "--no-tune")
    assert result.exit_code == 0, result.output
    assert "final check" in result.stdout and "passed" in result.stdout
    assert json.loads((tmp_path / "vad.out.onnx.manifest.json").read_text())["final_check"]["status"] == "passed"


def test_reference_failing_on_generated_inputs_asks_for_inputs_which_then_work(tmp_path: Path) -> None:
    source = tmp_path / "vad.onnx"
    onnx.save_model(sample_rate_model(with_mode_switch=False), str(source))
    out = tmp_path / "vad.out.onnx"
    refused = invoke(source, "-o", out, "--no-tune")
    assert_user_error(refused, "does not run in onnxruntime on generated example inputs", "--inputs FILE.npz")
    assert not out.exists()
    np.savez(tmp_path / "inputs.npz", x=np.ones((1, 16), np.float32), sr=np.array(16000, np.int64))
    built = invoke(source, "-o", out, "--no-tune", "--inputs", tmp_path / "inputs.npz")
    assert built.exit_code == 0, built.output
    assert "--inputs inputs.npz" in built.stdout


def test_inputs_file_is_checked_against_the_model(tmp_path: Path) -> None:
    model = Model.from_proto(sample_rate_model())
    np.savez(tmp_path / "extra.npz", x=np.ones((1, 16), np.float32), sr=np.array(16000), rate=np.array(1))
    with pytest.raises(Exception, match="no input"):
        example_inputs(model, given=tmp_path / "extra.npz")
    np.savez(tmp_path / "objects.npz", x=np.array(["not", "numbers"], dtype=object), sr=np.array(16000))
    with pytest.raises(Exception, match="pickled Python objects"):  # the .npz member is read lazily: still caught
        example_inputs(model, given=tmp_path / "objects.npz")
    np.save(tmp_path / "one.npy", np.ones((1, 16), np.float32))
    with pytest.raises(Exception, match=r"a \.npy holds one array"):
        example_inputs(model, given=tmp_path / "one.npy")


def sequence_model(*, element_shape: tuple[int, ...] | None = (2, 3)) -> onnx.ModelProto:
    """y = concat(seq, axis 0) + 1, and the sum split back into a sequence of rows: sequence input and output."""
    element = helper.make_tensor_type_proto(TensorProto.FLOAT, None if element_shape is None else list(element_shape))
    graph = helper.make_graph(
        [helper.make_node("ConcatFromSequence", ["seq"], ["cat"], axis=0),
         helper.make_node("Add", ["cat", "one"], ["y"]),
         helper.make_node("SplitToSequence", ["y"], ["rows"], axis=0, keepdims=0)],
        "sequences", [helper.make_value_info("seq", helper.make_sequence_type_proto(element))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "m"]),
         helper.make_value_info("rows", helper.make_sequence_type_proto(
             helper.make_tensor_type_proto(TensorProto.FLOAT, ["m"])))],
        [helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_sequence_inputs_get_generated_examples_and_sequence_outputs_are_checked(tmp_path: Path) -> None:
    feeds = graph_inputs(Model.from_proto(sequence_model()))
    assert [a.shape for a in feeds["seq"]] == [(2, 3), (2, 3)] and feeds["seq"][0].dtype == np.float32
    source = tmp_path / "seq.onnx"
    onnx.save_model(sequence_model(), str(source))
    out = tmp_path / "seq.out.onnx"
    result = invoke(source, "-o", out, "--no-tune")
    assert result.exit_code == 0, result.output
    check = json.loads((tmp_path / "seq.out.onnx.manifest.json").read_text())["final_check"]
    assert check["status"] == "passed" and check["origin"].startswith("random")


def test_sequence_of_unknown_rank_asks_for_inputs_which_can_be_given_in_process(tmp_path: Path) -> None:
    model = Model.from_proto(sequence_model(element_shape=None))
    with pytest.raises(UserInputError, match="sequence of tensors of unknown rank"):
        graph_inputs(model)
    given = {"seq": [np.ones((3, 2), np.float32), np.zeros((1, 2), np.float32)]}
    examples = example_inputs(model, given=given)
    assert examples.origin == "the given inputs" and not examples.generated
    assert [r["y"].shape for r in reference_outputs(model, examples)] == [(4, 2)]
    with pytest.raises(UserInputError, match="no input"):
        example_inputs(model, given={**given, "extra": np.ones(1)})
    source = tmp_path / "seq.onnx"
    onnx.save_model(sequence_model(element_shape=None), str(source))
    built = infer_compile.app.build.compile_model(source, infer_compile.app.build.BuildOptions(
        target="onnxruntime", output=tmp_path / "seq.out.onnx", inputs=given))
    assert built.manifest.final_check["origin"] == "the given inputs"


# --- the check on every build ---------------------------------------------------------------------------------


@pytest.fixture
def broken_pipeline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real pipeline with a test-only pass that scales a weight (a wrong rewrite) after batchnorm folding."""
    def pipeline(precision: str = "fp32", skip: list[str] | None = None, stages=None):
        passes = build_pipeline(precision, skip or [], stages)
        at = next(i for i, p in enumerate(passes) if p.name == "batchnorm-folding") + 1
        return [*passes[:at], ScaleFirstConv(1.05), *passes[at:]]

    monkeypatch.setattr(infer_compile.app.build_steps, "build_pipeline", pipeline)


def test_broken_pass_fails_the_build_naming_it_and_writes_nothing(broken_pipeline, tiny_cnn_onnx: Path,
                                                                  tmp_path: Path, build_cache: Path) -> None:
    out = tmp_path / "out" / "model.onnx"
    result = invoke(tiny_cnn_onnx, "-o", out, "--no-tune")
    assert_user_error(result, "final check failed", "first pass that breaks it is 'scale-first-conv'",
                      code=3)
    assert not out.parent.exists() or not any(out.parent.iterdir())
    assert not any(p.is_file() for p in build_cache.rglob("*"))


def test_no_final_check_skips_it(broken_pipeline, tiny_cnn_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.onnx"
    result = invoke(tiny_cnn_onnx, "-o", out, "--no-tune", "--no-final-check")
    assert result.exit_code == 0, result.output
    assert "off (--no-final-check)" in result.stdout
    assert "final_check" not in json.loads((tmp_path / "model.onnx.manifest.json").read_text())


def test_cost_and_figures_are_in_the_table_and_report(tiny_cnn_onnx: Path, tmp_path: Path) -> None:
    result = invoke(tiny_cnn_onnx, "-o", tmp_path / "m.onnx", "--no-tune", "--report", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())["final_check"]
    assert report["status"] == "passed" and report["seconds"] > 0 and report["precision"] == "fp32"
    assert report["figures"]["cosine"] > 0.99999
    assert f"passed in {report['seconds']:.2f} s" in result.stdout


def test_all_zero_artifact_fails_verify(tmp_path: Path) -> None:
    source = tmp_path / "src.onnx"
    onnx.save_model(tiny_cnn(), str(source))
    zeros = tiny_cnn()
    (output,) = zeros.graph.output
    for node in zeros.graph.node:
        node.output[:] = ["raw" if name == output.name else name for name in node.output]
    zeros.graph.initializer.append(onnx.numpy_helper.from_array(np.zeros((), np.float32), "nothing"))
    zeros.graph.node.append(helper.make_node("Mul", ["raw", "nothing"], [output.name]))
    onnx.save_model(zeros, str(tmp_path / "zeros.onnx"))
    result = invoke("verify", source, tmp_path / "zeros.onnx")
    assert_user_error(result, "outputs differ beyond the fp32 tolerance", "cosine 0.000000", code=3)


def test_int8_build_checks_on_held_out_samples_and_reports_the_artifacts_accuracy(tiny_cnn_onnx: Path, tiny_cnn_calib,
                                                                                   tmp_path: Path) -> None:
    from infer_compile.calibration.options import describe_precision
    from tests.artifact_helpers import build_artifact

    result = build_artifact(tiny_cnn_onnx, tmp_path / "q.onnx", precision="int8", calibration=tiny_cnn_calib)
    check = result.manifest.final_check
    assert (check["origin"], check["samples"], check["precision"]) == ("held-out calibration samples", 3, "int8")
    line = describe_precision(result.manifest.quantization, check)
    assert f"the artifact vs fp32: cosine {check['figures']['cosine']:.6f}" in line


def test_config_and_api_turn_it_off(tiny_cnn_onnx: Path, tmp_path: Path) -> None:
    import infer_compile
    from infer_compile.app.build_config import load_config

    config = tmp_path / "infer.toml"
    config.write_text(f'final_check = false\n[[models]]\npath = "{tiny_cnn_onnx}"\n'
                      f'[[models]]\npath = "{tiny_cnn_onnx}"\nname = "checked"\nfinal_check = true\n')
    assert [job.options.final_check for job in load_config(config, {"cache": False})] == [False, True]
    artifact = infer_compile.compile(tiny_cnn_onnx, "onnxruntime", output=tmp_path / "m.onnx", final_check=False,
                                     cache=False)
    assert "final_check" not in artifact.manifest and artifact.report()["final_check"] is None


def test_openvino_is_judged_at_the_precision_it_computes_in() -> None:
    from infer_compile.core.manifest import Manifest
    from infer_compile.targets import get_target

    def judged(precision: str, inference_precision: str) -> str:
        manifest = {"target": "openvino", "precision": precision, "inference_precision": inference_precision}
        return openvino.check_precision(Manifest.from_json(manifest))

    openvino = get_target("openvino")
    assert judged("fp32", "f32") == "fp32"
    assert judged("fp16", "bf16") == "bf16"
    assert judged("fp16", "f16") == "fp16"
    assert judged("int8", "bf16") == "int8"
