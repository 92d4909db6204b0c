"""One runner contract for every target's artifact (``infer_compile.load(path).run(...)``): names, dtypes and
shapes are checked against the artifact's inputs before the runtime runs, with the project's user error;
dynamic dims take any size; ``close()`` and ``with`` release the runner."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest

import infer_compile
from infer_compile.app.build import BuildOptions, compile_model
from infer_compile.core.errors import UserInputError
from infer_compile.core.ir import Model
from infer_compile.core.numerics import TOLERANCES, compare_outputs, run_onnx, within

SUFFIX = {"onnxruntime": ".onnx", "openvino": ".xml", "tflite": ".tflite"}
TARGETS = [
    "onnxruntime",
    pytest.param("openvino", marks=pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                                      reason="needs the [openvino] extra")),
    pytest.param("tflite", marks=[pytest.mark.slow, pytest.mark.skipif(
        importlib.util.find_spec("onnx2tf") is None or importlib.util.find_spec("ai_edge_litert") is None,
        reason="needs the [tflite] extra and onnx2tf")]),
]


@pytest.fixture(scope="module", params=TARGETS)
def artifact(request: pytest.FixtureRequest, tiny_cnn_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp(request.param) / f"m{SUFFIX[request.param]}"
    return compile_model(tiny_cnn_onnx, BuildOptions(target=request.param, output=out)).artifact


def _image(*shape: int, dtype: type = np.float32) -> np.ndarray:
    return np.random.default_rng(0).normal(size=shape).astype(dtype)


def _batch_is_dynamic(runner: infer_compile.targets.Runner) -> bool:
    return not isinstance(runner.inputs[0].shape[0], int)


def test_runs_and_matches_the_source(artifact: Path, tiny_cnn_onnx: Path) -> None:
    runner = infer_compile.load(artifact)
    batch = 3 if _batch_is_dynamic(runner) else 1  # TFLite artifacts have static shapes
    feeds = {"image": _image(batch, 3, 32, 32)}
    expected = run_onnx(Model.from_proto(onnx.load_model(str(tiny_cnn_onnx))), feeds)
    got = runner.run(feeds)
    assert got["logits"].shape == (batch, 10)
    assert within(compare_outputs(expected, got), TOLERANCES["fp32"])


@pytest.mark.parametrize(("feeds", "message"), [
    ({"imgae": _image(1, 3, 32, 32)}, r"no input named 'imgae'"),
    ({}, r"no data for input\(s\) 'image'"),
    ({"image": _image(1, 3, 32, 32, dtype=np.float64)}, r"input 'image' is float64, the artifact takes image: float32"),
    ({"image": _image(1, 3, 31, 32)}, r"input 'image' has shape \[1, 3, 31, 32\]"),
    ({"image": _image(3, 32, 32)}, r"input 'image' has shape \[3, 32, 32\]"),
    ({"image": _image(1, 3, 32, 32).tolist()}, r"input 'image' is a list, not a numpy array"),
    ([_image(1, 3, 32, 32)], r"must be a dict of numpy arrays by input name, not list"),
], ids=["misspelt-name", "missing", "float64", "static-dim", "rank", "list", "not-a-dict"])
def test_mistakes_are_the_same_user_error_for_every_target(artifact: Path, feeds: object, message: str) -> None:
    runner = infer_compile.load(artifact)
    with pytest.raises(UserInputError, match=message) as caught:
        runner.run(feeds)  # type: ignore[arg-type]
    assert "image: float32[" in str(caught.value)  # the message or its hint says what the artifact takes


def test_close_and_context_manager(artifact: Path) -> None:
    feeds = {"image": _image(1, 3, 32, 32)}
    with infer_compile.load(artifact) as runner:
        assert runner.run(feeds)["logits"].shape == (1, 10)
    with pytest.raises(UserInputError, match="closed"):
        runner.run(feeds)
    runner.close()  # twice is fine
