"""bias-correction: the mean output shift INT8 rounding leaves on a layer goes back into its bias."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import onnx
import pytest
from onnx import helper

from infer_compile.calibration import CalibrationData, CalibrationSettings
from infer_compile.calibration.collect import run_exposed
from infer_compile.core.ir import Model
from infer_compile.core.numerics import ort_session, random_inputs, run_onnx
from infer_compile.passes import PassContext, PassManager
from infer_compile.passes.autotune import isolate, quantized_layers
from infer_compile.passes.bias_correction import MIN_POSITIONS, MIN_SAMPLES, BiasCorrection, bias_corrections
from infer_compile.passes.quantize_int8 import QuantizeInt8
from tests.builders import inverted_residual, make_model, tensor, text_detector
from tests.precision_models import calibration, cleaned, held_out


def _biased_rounding(conv: bool = False) -> onnx.ModelProto:
    """x (non-negative) @ W + b where every weight but one per column is 0.0149 and that one is 1.27: per-channel
    int8 (scale 0.01) rounds all the small ones down to 0.01, a shift of -0.0049 * sum(x) on every output. With
    ``conv`` the same weights as a 1x1 convolution over a 4x4 image."""
    weight = np.full((32, 8), 0.0149, np.float32)
    weight[0] = 1.27
    if conv:
        nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Conv", ["r", "w", "b"], ["y"], name="fc")]
        return make_model(nodes, [tensor("x", ["batch", 32, 4, 4])], [tensor("y", ["batch", 8, 4, 4])],
                          {"w": weight.T.reshape(8, 32, 1, 1).copy(), "b": np.zeros(8, np.float32)})
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("MatMul", ["r", "w"], ["m"], name="fc"),
             helper.make_node("Add", ["m", "b"], ["y"], name="fc_bias")]
    return make_model(nodes, [tensor("x", ["batch", 32])], [tensor("y", ["batch", 8])],
                      {"w": weight, "b": np.zeros(8, np.float32)})


def _mean_shift(proto: onnx.ModelProto, correct: bool | None) -> tuple[float, dict]:
    model = cleaned(proto)
    options = {} if correct is None else {"bias_correction": correct}
    ctx = PassContext(target="trt", calibration=calibration(proto, count=20), options=options)
    result = PassManager([QuantizeInt8(), BiasCorrection()]).run(model, ctx)
    feeds = held_out(proto, seed=11)
    expected, got = run_onnx(Model.from_proto(proto), feeds)["y"], run_onnx(model, feeds)["y"]
    shift = np.moveaxis(expected - got, 1, -1).reshape(-1, expected.shape[1]).mean(axis=0)  # per channel
    return float(np.abs(shift).max()), result.records[-1].counts


def test_the_rounding_shift_goes_back_into_the_bias() -> None:
    proto = _biased_rounding()
    without, counts_off = _mean_shift(proto, correct=False)
    with_correction, counts = _mean_shift(proto, correct=True)
    assert counts == {"biases_corrected": 1} and not any(counts_off.values())
    assert without > 0.02 and with_correction < without / 5, (without, with_correction)  # 0.063 -> 0.0075


def test_by_default_convolutions_are_corrected_and_linear_layers_are_not() -> None:
    conv = _biased_rounding(conv=True)
    without, _ = _mean_shift(conv, correct=False)
    corrected, counts = _mean_shift(conv, correct=None)
    assert counts == {"biases_corrected": 1} and without > 0.02 and corrected < without / 5, (without, corrected)
    assert _mean_shift(_biased_rounding(), correct=None)[1] == {"biases_corrected": 0}


def _shift_of_each_layer_alone(quantized: Model, reference: Model, samples: list) -> dict[str, np.ndarray]:
    """The definition, computed the slow way: each INT8 layer alone (its input Q/DQ and rounded weights, no output
    quantizer) in its own onnxruntime session, fed the fp32 model's values of its input; the mean of fp32 output -
    INT8 output per channel."""
    layers = {}
    for index in quantized_layers(quantized.graph):
        node = quantized.graph.nodes[index]
        alone = isolate(quantized, index, output_quantizer=False)
        assert alone is not None
        layers[node.name] = (alone, ort_session(alone), node.outputs[0].name, 1 if "Conv" in node.op else -1)
    sums: dict[str, np.ndarray] = {}
    names = [n for alone, _, output, _ in layers.values() for n in [*(t.name for t in alone.inputs), output]]

    def consume(values: dict[str, np.ndarray]) -> None:
        for name, (alone, session, output, axis) in layers.items():
            got = session.run(None, {t.name: values[t.name] for t in alone.inputs})[0]
            diff = np.moveaxis(values[output] - got, axis, -1).reshape(-1, got.shape[axis]).astype(np.float64)
            total, count = sums.get(name, (0.0, 0))
            sums[name] = (total + diff.sum(axis=0), count + diff.shape[0])

    run_exposed(reference, names, samples, consume)
    return {name: total / count for name, (total, count) in sums.items()}


@pytest.mark.parametrize("proto", [text_detector(widths=(4, 8), neck=8), inverted_residual()],
                         ids=["strided-convs-and-transposed", "depthwise-and-gemm"])
def test_the_shifts_measured_in_one_session_are_each_layer_run_alone(proto: onnx.ModelProto) -> None:
    """One session of the fp32 graph with each layer's INT8 twin beside it gives what running every INT8 layer
    alone on the fp32 inputs gives: strided and padded convolutions, a transposed one, a depthwise one, a Gemm."""
    model = cleaned(proto)
    dims = {"batch": 2, "height": 64, "width": 96}
    samples = [random_inputs(model.inputs, seed=i, dims=dims) for i in range(3)]
    data = CalibrationData(samples, CalibrationSettings("synthetic"), "3 test samples")
    reference = QuantizeInt8().run(model, PassContext(target="trt", calibration=data)).handoff.reference
    expected = _shift_of_each_layer_alone(model, reference, samples)
    got = bias_corrections(model, reference, samples, min_positions=None)
    assert set(got) == set(expected) and len(got) >= 5
    for name, shift in expected.items():
        assert np.abs(shift).max() > 1e-4, name  # the rounding does shift every layer
        np.testing.assert_allclose(got[name], shift, rtol=0, atol=1e-3 * np.abs(shift).max() + 1e-7, err_msg=name)


@pytest.mark.parametrize(("side", "read"), [(64, 4), (128, MIN_SAMPLES)])
def test_samples_are_read_until_every_layer_mean_covers_enough_positions(side: int, read: int) -> None:
    """Samples are read until every layer's mean covers MIN_POSITIONS positions (at least MIN_SAMPLES): the
    detector's smallest layers (stride 4) see 16x16 positions of a 64x64 image (4 images for 1024), 32x32 of a
    128x128 one. No further sample is read (one image per run: a fixed batch of 1), and the shifts are the
    definition's on the samples read, not on one more."""
    proto = text_detector(widths=(4, 8), neck=8)
    for dim, size in zip(proto.graph.input[0].type.tensor_type.shape.dim, (1, 3, side, side), strict=True):
        dim.dim_value = size
    model = cleaned(proto)
    samples = [random_inputs(model.inputs, seed=i) for i in range(6)]
    data = CalibrationData(samples, CalibrationSettings("synthetic"), "6 test samples")
    reference = QuantizeInt8().run(model, PassContext(target="trt", calibration=data)).handoff.reference
    taken: list[int] = []

    def reading() -> Iterator[dict[str, np.ndarray]]:
        for index, sample in enumerate(samples):
            taken.append(index)
            yield sample

    assert MIN_POSITIONS == 1024
    got = bias_corrections(model, reference, reading())
    expected = _shift_of_each_layer_alone(model, reference, samples[:read])
    one_more = _shift_of_each_layer_alone(model, reference, samples[:read + 1])
    assert taken == list(range(read)) and set(got) == set(expected)
    for name, shift in expected.items():
        tolerance = 1e-2 * np.abs(shift).max() + 1e-6
        np.testing.assert_allclose(got[name], shift, rtol=0, atol=tolerance, err_msg=name)
        assert name == "deconv2" or np.abs(one_more[name] - shift).max() > 3 * tolerance, name  # tells them apart


def test_layers_the_fallback_returns_to_fp32_keep_their_own_bias() -> None:
    """The accuracy fallback's variants are corrected only where they run INT8: a layer back in fp32 has no rounding
    shift, and a correction added to it would be the error (the PP-OCRv4 detector with every layer back in fp32
    gave cosine 0.03 vs fp32)."""
    proto = _biased_rounding(conv=True)
    model = cleaned(proto)
    ctx = PassContext(target="trt", calibration=calibration(proto, count=20))
    quantized = QuantizeInt8().run(model, ctx)
    corrected = BiasCorrection().run(model, replace(ctx, earlier=(quantized,)))
    assert corrected.counts == {"biases_corrected": 1}
    feeds = held_out(proto, seed=11)
    expected = run_onnx(Model.from_proto(proto), feeds)["y"]
    all_fp32 = corrected.handoff.build(frozenset({"fc"}))
    assert not any(n.op == "QuantizeLinear" for n in all_fp32.graph.nodes)
    np.testing.assert_allclose(run_onnx(all_fp32, feeds)["y"], expected, rtol=1e-6, atol=1e-6)
    int8 = run_onnx(corrected.handoff.build(frozenset()), feeds)["y"]
    np.testing.assert_allclose(int8, run_onnx(model, feeds)["y"], rtol=0, atol=0)  # the INT8 variant stays corrected
