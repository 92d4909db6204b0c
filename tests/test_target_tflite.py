"""The TFLite target: a tiny CNN and a tiny transformer encoder at fp32, fp16 and INT8 (dynamic range and
full integer) run in LiteRT and match onnxruntime fp32; the runner takes and returns source-layout
arrays; no network access during conversion; the clear error when tensorflow is not installed."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper
from typer.testing import CliRunner

from infer_compile.app.build import BuildOptions, compile_model
from infer_compile.app.cli import app
from infer_compile.calibration import CalibrationSettings
from infer_compile.core.errors import ExitCode, UserInputError
from infer_compile.core.ir import Model, TensorSpec
from infer_compile.core.numerics import (
    TOLERANCES,
    Tolerance,
    compare_outputs,
    random_inputs,
    run_onnx,
    summarize,
    within,
)
from infer_compile.core.shapes import ShapeRange
from infer_compile.targets import load_artifact
from infer_compile.targets.tflite import TfliteRunner, split_batches, static_shapes
from infer_compile.targets.tflite_convert import _readable
from tests.builders import make_model, tensor
from tests.hidden_imports import run_cli_without

pytest.importorskip("onnx2tf", reason="the TFLite target needs the [tflite] extra and onnx2tf (--no-deps)")
pytest.importorskip("ai_edge_litert", reason="the TFLite target needs the [tflite] extra")

# What "matches onnxruntime fp32" means per build. fp16 stores half weights (computes in fp32);
# INT8 dynamic range quantizes weights only; full integer quantizes activations from 16 samples.
TOLERANCE: dict[str, Tolerance] = {"fp32": TOLERANCES["fp32"], "fp16": TOLERANCES["fp16"],
                                   "int8-dynamic": TOLERANCES["int8"], "int8-full": TOLERANCES["int8"]}
SEQ, HIDDEN = 8, 32


def tiny_encoder(seed: int = 0, heads: int = 2, ffn: int = 128, final_layernorm: bool = False) -> onnx.ModelProto:
    """One pre-LN transformer encoder block: 2-head attention, erf GELU FFN as PyTorch exports it
    (x / sqrt2 -> Erf -> +1 -> *x -> *0.5); 4096-element FFN weights so dynamic range quantizes them.
    ``final_layernorm``: a LayerNormalization after the FFN's residual, as BERT and ViT blocks end."""
    rng = np.random.default_rng(seed)

    def w(*shape: int, scale: float = 0.2) -> np.ndarray:
        return rng.normal(0, scale, shape).astype(np.float32)

    init = {"ln1_g": 1 + w(HIDDEN, scale=0.1), "ln1_b": w(HIDDEN, scale=0.05),
            "ln2_g": 1 + w(HIDDEN, scale=0.1), "ln2_b": w(HIDDEN, scale=0.05),
            **{f"w{p}": w(HIDDEN, HIDDEN) for p in "qkvo"}, **{f"b{p}": w(HIDDEN, scale=0.05) for p in "qkvo"},
            "w1": w(HIDDEN, ffn), "b1": w(ffn, scale=0.05), "w2": w(ffn, HIDDEN), "b2": w(HIDDEN, scale=0.05),
            "heads_shape": np.array([1, SEQ, heads, HIDDEN // heads], np.int64),
            "merged_shape": np.array([1, SEQ, HIDDEN], np.int64),
            "inv_sqrt_hd": np.array(1 / np.sqrt(HIDDEN // heads), np.float32),
            "sqrt2": np.array(np.sqrt(2), np.float32), "one": np.array(1, np.float32),
            "half": np.array(0.5, np.float32)}
    n = helper.make_node
    nodes = [n("LayerNormalization", ["x", "ln1_g", "ln1_b"], ["h"], axis=-1)]
    for p, perm in (("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]), ("v", [0, 2, 1, 3])):
        nodes += [n("MatMul", ["h", f"w{p}"], [f"{p}_mm"]), n("Add", [f"{p}_mm", f"b{p}"], [f"{p}_lin"]),
                  n("Reshape", [f"{p}_lin", "heads_shape"], [f"{p}_heads"]),
                  n("Transpose", [f"{p}_heads"], [f"{p}_t"], perm=perm)]
    nodes += [
        n("MatMul", ["q_t", "k_t"], ["scores"]), n("Mul", ["scores", "inv_sqrt_hd"], ["scaled"]),
        n("Softmax", ["scaled"], ["probs"], axis=-1), n("MatMul", ["probs", "v_t"], ["ctx"]),
        n("Transpose", ["ctx"], ["ctx_t"], perm=[0, 2, 1, 3]), n("Reshape", ["ctx_t", "merged_shape"], ["ctx_m"]),
        n("MatMul", ["ctx_m", "wo"], ["o_mm"]), n("Add", ["o_mm", "bo"], ["o_lin"]), n("Add", ["x", "o_lin"], ["res1"]),
        n("LayerNormalization", ["res1", "ln2_g", "ln2_b"], ["h2"], axis=-1),
        n("MatMul", ["h2", "w1"], ["f_mm"]), n("Add", ["f_mm", "b1"], ["f_lin"]),
        n("Div", ["f_lin", "sqrt2"], ["g_s"]), n("Erf", ["g_s"], ["g_erf"]), n("Add", ["g_erf", "one"], ["g_1"]),
        n("Mul", ["f_lin", "g_1"], ["g_m"]), n("Mul", ["g_m", "half"], ["gelu"]),
        n("MatMul", ["gelu", "w2"], ["f2_mm"]), n("Add", ["f2_mm", "b2"], ["f2_lin"]),
        n("Add", ["res1", "f2_lin"], ["res2" if final_layernorm else "y"]),
    ]
    if final_layernorm:
        nodes.append(n("LayerNormalization", ["res2", "ln1_g", "ln1_b"], ["y"], axis=-1))
    return make_model(nodes, [tensor("x", [1, SEQ, HIDDEN])], [tensor("y", [1, SEQ, HIDDEN])], init,
                      name="tiny_encoder")


@pytest.fixture(scope="module")
def network_attempts() -> Iterator[list[str]]:
    """Every name lookup or connect from this process while the module runs, refused and recorded
    (recorded too because onnx2tf swallows some exceptions)."""
    attempts: list[str] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(repr(args[:2]))
        raise OSError("network access attempted during a TFLite build")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", refuse)
        patch.setattr(socket.socket, "connect", refuse)
        patch.setattr(socket, "create_connection", refuse)
        yield attempts


@pytest.fixture(scope="module")
def encoder_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny-encoder") / "tiny_encoder.onnx"
    onnx.save_model(tiny_encoder(), str(path))
    return path


def encoder_samples() -> list[dict[str, np.ndarray]]:
    """Calibration samples for the encoder (read as --calib tests.test_target_tflite:encoder_samples)."""
    specs = Model.from_proto(tiny_encoder()).inputs
    return [random_inputs(specs, seed=100 + seed) for seed in range(16)]


def _cli_build(model: Path, out: Path, *flags: str) -> Path:
    result = CliRunner().invoke(app, [str(model), "-t", "tflite", "-o", str(out), "--no-cache", *flags])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def builds(network_attempts: list[str], tiny_cnn_onnx: Path, tiny_cnn_calib: CalibrationSettings,
           encoder_onnx: Path,
           tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """(model, build) -> artifact. Two CNN builds go through the CLI flags; the rest through the API."""
    out = tmp_path_factory.mktemp("tflite-out")
    cnn_calib_dir = str(tiny_cnn_calib.source)

    def api(source: Path, name: str, precision: str, calib: CalibrationSettings | None = None,
            **target_options: object) -> Path:
        options = BuildOptions(target="tflite", precision=precision, output=out / f"{name}.tflite",
                               calibration=calib, target_options=target_options)
        return compile_model(source, options).artifact

    return {
        ("cnn", "fp32"): api(tiny_cnn_onnx, "cnn-fp32", "fp32"),
        ("cnn", "fp16"): _cli_build(tiny_cnn_onnx, out / "cnn-fp16.tflite", "--fp16", "--keep-nchw"),
        ("cnn", "int8-dynamic"): api(tiny_cnn_onnx, "cnn-int8-dynamic", "int8", int8_mode="dynamic"),
        ("cnn", "int8-full"): _cli_build(tiny_cnn_onnx, out / "cnn-int8-full.tflite", "--int8", "--calib",
                                         cnn_calib_dir, "--tflite-int8-io"),
        ("encoder", "fp32"): api(encoder_onnx, "enc-fp32", "fp32"),
        ("encoder", "fp16"): api(encoder_onnx, "enc-fp16", "fp16"),
        ("encoder", "int8-dynamic"): api(encoder_onnx, "enc-int8-dynamic", "int8", int8_mode="dynamic"),
        ("encoder", "int8-full"): api(encoder_onnx, "enc-int8-full", "int8", CalibrationSettings(
            f"{__name__}:encoder_samples", method="minmax")),
    }


def _manifest(artifact: Path) -> dict:
    return json.loads(artifact.with_name(artifact.name + ".manifest.json").read_text())


def _source(key: tuple[str, str], tiny_cnn_onnx: Path, encoder_onnx: Path) -> Model:
    return Model.from_proto(onnx.load_model(str(tiny_cnn_onnx if key[0] == "cnn" else encoder_onnx)))


BUILDS = [(m, b) for m in ("cnn", "encoder") for b in TOLERANCE]


@pytest.mark.slow
@pytest.mark.parametrize("key", BUILDS, ids=["-".join(k) for k in BUILDS])
def test_matches_onnxruntime_fp32(key: tuple[str, str], builds: dict, tiny_cnn_onnx: Path,
                                  encoder_onnx: Path) -> None:
    source = _source(key, tiny_cnn_onnx, encoder_onnx)
    runner = load_artifact(builds[key])
    # Users feed the source model's arrays: same names, same (channel-first) shapes.
    assert [s.name for s in runner.inputs] == [s.name for s in source.inputs]
    assert runner.inputs[0].shape == ((1, 3, 32, 32) if key[0] == "cnn" else (1, SEQ, HIDDEN))
    feeds = [random_inputs(runner.inputs, seed=seed) for seed in range(8)]
    got = [runner.run(f) for f in feeds]
    ref = [run_onnx(source, f) for f in feeds]
    stacked_ref = {name: np.concatenate([r[name] for r in ref]) for name in ref[0]}
    stacked_got = {name: np.concatenate([g[name] for g in got]) for name in got[0]}
    comparisons = compare_outputs(stacked_ref, stacked_got)
    assert within(comparisons, TOLERANCE[key[1]]), summarize(comparisons)
    if key[0] == "cnn":
        assert summarize(comparisons)["top1_agreement"] == 1.0


@pytest.mark.slow
@pytest.mark.parametrize("key", BUILDS, ids=["-".join(k) for k in BUILDS])
def test_precision_is_in_the_artifact(key: tuple[str, str], builds: dict) -> None:
    manifest = _manifest(builds[key])
    types, build = manifest["tflite"]["tensor_types"], key[1]
    # The converter lowers precision, not our passes: the graph it gets has no fp16 casts or Q/DQ.
    assert not {"fp16", "quantize-int8", "accuracy-fallback"} & set(manifest["passes"])
    assert ("float16" in types) == (build == "fp16")
    assert ("int8" in types) == build.startswith("int8")
    if build == "int8-full":  # activations too: int8 tensors outnumber the float ones left at the borders
        assert types["int8"] > types.get("float32", 0)
    if build == "int8-dynamic":
        assert types["float32"] > types["int8"]


@pytest.mark.slow
def test_layout_is_recorded_and_undone(builds: dict) -> None:
    nhwc = _manifest(builds["cnn", "fp32"])["io"]["inputs"][0]
    nchw = _manifest(builds["cnn", "fp16"])["io"]["inputs"][0]  # built with --keep-nchw
    assert nhwc["transposed"] and nhwc["perm"] == [0, 2, 3, 1] and nhwc["shape"] == [1, 3, 32, 32]
    assert not nchw["transposed"] and nchw["perm"] is None
    # Without the manifest the artifact runs as TFLite sees it: channel-last.
    assert TfliteRunner(builds["cnn", "fp32"]).inputs[0].shape == (1, 32, 32, 3)
    assert TfliteRunner(builds["cnn", "fp16"]).inputs[0].shape == (1, 3, 32, 32)
    # A feature sequence is no image: it keeps its layout (onnx2tf alone would make it [1, HIDDEN, SEQ]).
    encoder = _manifest(builds["encoder", "fp32"])["io"]
    assert encoder["inputs"][0]["perm"] is None and encoder["outputs"][0]["perm"] is None
    assert TfliteRunner(builds["encoder", "fp32"]).inputs[0].shape == (1, SEQ, HIDDEN)


@pytest.mark.slow
def test_int8_io_and_calibration_recorded(builds: dict) -> None:
    from ai_edge_litert.interpreter import Interpreter

    full = _manifest(builds["cnn", "int8-full"])
    assert full["tflite"]["int8_mode"] == "full" and full["tflite"]["int8_io"]
    assert full["tflite"]["calibration_samples"] == 16
    details = Interpreter(model_path=str(builds["cnn", "int8-full"])).get_signature_runner().get_input_details()
    assert details["image"]["dtype"] == np.int8 and details["image"]["quantization"][0] > 0


@pytest.mark.slow
@pytest.mark.parametrize("build", list(TOLERANCE))
def test_erf_gelu_reaches_tflite_fused(build: str, builds: dict) -> None:
    """Fused by the pipeline at every precision (the target takes the fp32 stages): unfused, onnx2tf's erf
    stand-in breaks full INT8."""
    assert "gelu-fusion" in _manifest(builds["encoder", build])["passes"]


@pytest.mark.slow
def test_no_network_access(builds: dict, network_attempts: list[str]) -> None:
    assert network_attempts == []


def test_static_shapes_pin_symbolic_dims() -> None:
    image = TensorSpec("image", ("batch", 3, 32, 32), np.dtype(np.float32))
    assert static_shapes([image], {}) == {"image": (1, 3, 32, 32)}  # a leading batch dim defaults to 1
    assert static_shapes([image], {"batch": ShapeRange(1, 4, 8)}) == {"image": (4, 3, 32, 32)}  # --shape-range opt
    with pytest.raises(UserInputError, match="dynamic axis 2"):
        static_shapes([TensorSpec("image", (1, 3, "height", 32), np.dtype(np.float32))], {})


def test_calibration_batches_split_to_the_static_batch() -> None:
    sample = {"image": np.arange(4 * 3 * 2 * 2, dtype=np.float32).reshape(4, 3, 2, 2)}
    parts = list(split_batches(sample, {"image": (1, 3, 2, 2)}))
    assert len(parts) == 4 and all(p["image"].shape == (1, 3, 2, 2) for p in parts)
    np.testing.assert_array_equal(np.concatenate([p["image"] for p in parts]), sample["image"])
    with pytest.raises(UserInputError, match="calibration input 'image'"):
        list(split_batches(sample, {"image": (1, 3, 4, 4)}))


def test_full_int8_needs_calibration(tiny_cnn_onnx: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, [str(tiny_cnn_onnx), "-t", "tflite", "--int8", "-o", str(tmp_path / "m.tflite")])
    assert result.exit_code == ExitCode.USER_ERROR and "calibration" in result.output
    result = CliRunner().invoke(app, [str(tiny_cnn_onnx), "-t", "tflite", "--tflite-int8-io",
                                      "-o", str(tmp_path / "m.tflite")])
    assert result.exit_code == ExitCode.USER_ERROR and "--tflite-int8-io needs" in result.output
    # The converter quantizes, not our passes: their options would be silently ignored.
    result = CliRunner().invoke(app, [str(tiny_cnn_onnx), "-t", "tflite", "--fp16", "--keep-io-types",
                                      "-o", str(tmp_path / "m.tflite")])
    assert result.exit_code == ExitCode.USER_ERROR
    assert "--keep-io-types does not apply: this fp16 build for target 'tflite' does not run fp16" in result.output
    assert list(tmp_path.iterdir()) == []


def test_unavailable_without_tensorflow(tiny_cnn_onnx: Path, tmp_path: Path) -> None:
    proc = run_cli_without("tensorflow", [tiny_cnn_onnx, "-t", "tflite", "-o", tmp_path / "m.tflite", "--no-cache"])
    assert proc.returncode == ExitCode.UNAVAILABLE, proc.stderr
    # With or without litert-torch (the route for PyTorch modules only), an ONNX source needs the onnx2tf route.
    assert "tensorflow-cpu" in proc.stderr and "pip install 'infer-compile[tflite]'" in proc.stderr
    assert "pip install --no-deps onnx2tf==1.29.24" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_layernorm_after_the_fused_gelu_converts(network_attempts: list[str], tmp_path: Path) -> None:
    """Issue 17: onnx2tf's op renaming dropped the fused com.microsoft::Gelu's domain, shape inference lost every
    shape after it, and the LayerNormalization that ends a BERT/ViT block failed on a transposed axis."""
    path = tmp_path / "post_ln.onnx"
    onnx.save_model(tiny_encoder(final_layernorm=True), str(path))
    result = compile_model(path, BuildOptions(target="tflite", output=tmp_path / "m.tflite"))
    assert "gelu-fusion" in _manifest(result.artifact)["passes"]
    source = Model.from_proto(onnx.load_model(str(path)))
    feeds = random_inputs(source.inputs, seed=4)
    assert within(compare_outputs(run_onnx(source, feeds), load_artifact(result.artifact).run(feeds)),
                  TOLERANCES["fp32"])



def test_onnx2tf_errors_are_one_line_without_printed_tensors() -> None:
    message = ("Eager execution of tf.constant with unsupported shape. Tensor [1.012573   0.9867895  1.0640422  "
               "1.0104901\n 0.94643307 1.0 1.0 1.0 1.0] (converted from [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]) "
               "has shape (32,)")
    assert _readable(message) == ("Eager execution of tf.constant with unsupported shape. Tensor [...] "
                                  "(converted from [...]) has shape (32,)")


@pytest.mark.slow
def test_a_channel_last_keras_image_stays_channel_last(network_attempts: list[str], tmp_path: Path) -> None:
    """Issue 16 item 8: a Keras NHWC image input came out [1, 8, 3, 8] (onnx2tf took it for NCHW)."""
    keras = pytest.importorskip("keras", reason="needs the [tf] extra")
    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 3), batch_size=1, name="image")
    model = keras.Model(image, keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(
        keras.layers.Conv2D(6, 3, activation="relu")(image))))
    model.export(str(tmp_path / "saved"), verbose=False)
    result = compile_model(tmp_path / "saved", BuildOptions(target="tflite", output=tmp_path / "m.tflite"))
    assert _manifest(result.artifact)["io"]["inputs"][0]["perm"] is None
    assert TfliteRunner(result.artifact).inputs[0].shape == (1, 8, 8, 3)  # as TFLite itself sees it
    feeds = {"image": np.random.default_rng(0).normal(size=(1, 8, 8, 3)).astype(np.float32)}
    got = next(iter(load_artifact(result.artifact).run(feeds).values()))
    np.testing.assert_allclose(got, model(feeds["image"]).numpy(), atol=1e-5)
