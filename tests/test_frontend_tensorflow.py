"""TensorFlow frontend: SavedModel, .keras and .h5 compiled through the CLI to ONNX Runtime, compared with TF."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from infer_compile.app.cli import app
from infer_compile.core.errors import ExitCode
from infer_compile.core.numerics import TOLERANCES, Feeds, compare_outputs, within
from infer_compile.targets import target_for_artifact

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
tf = pytest.importorskip("tensorflow", reason="the TensorFlow frontend needs the [tf] extra")
keras = pytest.importorskip("keras", reason="the TensorFlow frontend needs the [tf] extra")

# Keras 3 converts its own variables with np.array(x), which numpy 2 flags; nothing here to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
runner = CliRunner()


def two_branch_model():
    """Two inputs (an NHWC image and a vector), two outputs; Conv + BatchNorm with non-trivial statistics."""
    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 3), name="image")
    vector = keras.Input((5,), name="vector")
    bn = keras.layers.BatchNormalization()
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(bn(keras.layers.Conv2D(4, 3)(image))))
    y = keras.layers.Dense(3, activation="tanh")(vector)
    model = keras.Model([image, vector], [keras.layers.Dense(2)(x), y])
    bn.moving_mean.assign(np.linspace(-0.5, 0.5, 4).astype(np.float32))
    bn.moving_variance.assign(np.linspace(0.5, 2.0, 4).astype(np.float32))
    return model


def tiny_encoder(activation: str = "relu"):
    """A one-block Keras transformer encoder over (batch, 6, 8) features."""
    keras.utils.set_random_seed(1)
    tokens = keras.Input((6, 8), name="tokens")
    attended = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)(tokens, tokens)
    x = keras.layers.LayerNormalization()(tokens + attended)
    x = keras.layers.LayerNormalization()(x + keras.layers.Dense(8)(keras.layers.Dense(16, activation=activation)(x)))
    return keras.Model(tokens, x)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    folder = tmp_path_factory.mktemp("tf-files")
    model = two_branch_model()
    paths = {"keras": folder / "model.keras", "h5": folder / "model.h5", "savedmodel": folder / "saved",
             "truncated": folder / "broken.keras", "truncated_h5": folder / "broken.h5"}
    model.save(paths["keras"])
    model.save(paths["h5"])
    model.export(str(paths["savedmodel"]), verbose=False)
    for name, whole in (("truncated", "keras"), ("truncated_h5", "h5")):
        data = paths[whole].read_bytes()
        paths[name].write_bytes(data[: len(data) // 2])
    return model, paths


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def feeds(batch: int = 2) -> Feeds:
    rng = np.random.default_rng(batch)
    return {"image": rng.standard_normal((batch, 8, 8, 3)).astype(np.float32),
            "vector": rng.standard_normal((batch, 5)).astype(np.float32)}


def compile_and_run(out: Path, args: tuple, inputs: Feeds) -> tuple[Feeds, dict]:
    result = invoke(*args, "--target", "onnxruntime", "--no-tune", "-o", out)
    assert result.exit_code == 0, result.output
    target, manifest = target_for_artifact(out)
    return target.load(out, manifest).run(inputs), manifest.to_json()  # as written


def assert_matches_keras(model, inputs: Feeds, got: Feeds) -> None:
    expected = model([inputs["image"], inputs["vector"]], training=False)
    ref = {f"output_{i}": t.numpy() for i, t in enumerate(expected)}
    comparisons = compare_outputs(ref, got)
    assert within(comparisons, TOLERANCES["fp32"]), comparisons


@pytest.mark.parametrize(("kind", "extra"), [("keras", ()), ("h5", ()), ("savedmodel", ("--signature", "serve"))])
def test_each_format_matches_keras(saved: tuple, tmp_path: Path, kind: str, extra: tuple) -> None:
    model, paths = saved
    got, manifest = compile_and_run(tmp_path / "m.onnx", (paths[kind], *extra), feeds())
    assert_matches_keras(model, feeds(), got)
    source = manifest["source"]
    assert source["exporter"] == "tf2onnx" and source["export_max_abs"] < 1e-4
    assert source["signature"] == ("serve" if extra else "serving_default")
    assert {spec["shape"][0] for spec in [*manifest["inputs"], *manifest["outputs"]]} == {"batch"}  # not unk__N


def test_dynamic_batch_is_named_and_ranged(saved: tuple, tmp_path: Path) -> None:
    model, paths = saved
    out = tmp_path / "m.onnx"
    args = (paths["savedmodel"], "--dynamic", "image:0=batch", "--dynamic", "vector:0=batch",
            "--shape-range", "batch=1:4:8")
    _, manifest = compile_and_run(out, args, feeds())
    assert manifest["inputs"][0]["shape"] == ["batch", 8, 8, 3]
    assert manifest["shape_ranges"] == {"batch": [1, 4, 8]}
    target, manifest = target_for_artifact(out)
    artifact = target.load(out, manifest)
    for batch in (1, 5):
        assert_matches_keras(model, feeds(batch), artifact.run(feeds(batch)))


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == ExitCode.USER_ERROR, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error:") and lines[1].lstrip().startswith("hint:"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(("name", "extra", "fragments"), [
    ("savedmodel", ("--signature", "nope"), ("no signature 'nope'",)),
    ("truncated", (), ("broken.keras", "truncated or corrupt")),
    ("truncated_h5", (), ("broken.h5", "cannot load the Keras model")),
    ("savedmodel", ("--dynamic", "image:1=height"), ("axis 1 of image is not dynamic",)),
])
def test_bad_input_is_one_clear_line(saved: tuple, tmp_path: Path, name: str, extra: tuple, fragments: tuple) -> None:
    out = tmp_path / "m.onnx"
    assert_one_line_error(invoke(saved[1][name], *extra, "-o", out, "--no-tune"), *fragments)
    assert not out.exists()


def test_keras_transformer_encoder_savedmodel(tmp_path: Path) -> None:
    model = tiny_encoder()
    model.export(str(tmp_path / "encoder"), verbose=False)
    inputs = {"tokens": np.random.default_rng(7).standard_normal((2, 6, 8)).astype(np.float32)}
    got, _ = compile_and_run(tmp_path / "m.onnx", (tmp_path / "encoder",), inputs)
    ref = {"output_0": model(inputs["tokens"], training=False).numpy()}
    comparisons = compare_outputs(ref, got)
    assert within(comparisons, TOLERANCES["fp32"]), comparisons


def test_op_the_converter_cannot_express_is_one_clear_line(tmp_path: Path) -> None:
    # Keras 3's exact gelu becomes TF Erfc, which tf2onnx 1.17 emits as an ONNX op that does not exist.
    tiny_encoder(activation="gelu").export(str(tmp_path / "gelu"), verbose=False)
    assert_one_line_error(invoke(tmp_path / "gelu", "-o", tmp_path / "m.onnx", "--no-tune"),
                          "tf2onnx produced an invalid ONNX model", "Erfc")
