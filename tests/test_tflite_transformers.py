"""Transformers to TFLite (issue 17): ViT, ConvNeXt, BERT, a MiniLM-class sentence encoder and a GPT-2-class
decoder, built from transformers configs (tiny, random weights, no downloads), through both routes, run in
LiteRT (ai-edge-litert) and compared with PyTorch on fresh inputs drawn like the calibration samples."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from infer_compile.app.build import BuildOptions, compile_model
from infer_compile.calibration import CalibrationSettings
from infer_compile.core.errors import UserInputError
from infer_compile.frontends.base import SourceOptions
from infer_compile.targets import load_artifact
from tests.hidden_imports import run_cli_without

pytest.importorskip("transformers", reason="the architectures are built from transformers configs ([dev] extra)")
pytest.importorskip("ai_edge_litert", reason="the TFLite target needs the [tflite] extra")
torch = pytest.importorskip("torch", reason="the sources are PyTorch modules ([torch] extra)")

from tests import hf_models  # noqa: E402  (imports torch)

pytestmark = pytest.mark.slow
# Against PyTorch on fresh inputs: cosine of the stacked outputs (issue 17's bars).
COSINE = {"fp32": 0.9999, "fp16": 0.999, "int8": 0.99}
HAS_LITERT_TORCH = all(__import__("importlib").util.find_spec(m) for m in ("litert_torch", "ai_edge_quantizer"))
HAS_ONNX2TF = all(__import__("importlib").util.find_spec(m) for m in ("onnx2tf", "tensorflow"))
needs_litert_torch = pytest.mark.skipif(not HAS_LITERT_TORCH, reason="needs the [tflite-torch] extra")
needs_onnx2tf = pytest.mark.skipif(not HAS_ONNX2TF, reason="needs the [tflite] extra and onnx2tf (--no-deps)")


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str, str], Path]:
    """(architecture, converter, precision) -> the artifact, built once per module."""
    out = tmp_path_factory.mktemp("tflite-transformers")
    built: dict[tuple[str, str, str], Path] = {}

    def get(arch: str, converter: str, precision: str) -> Path:
        key = (arch, converter, precision)
        if key not in built:
            kind = hf_models.TINY[arch][0]
            calib = CalibrationSettings(f"tests.hf_models:calib_{kind}") if precision == "int8" else None
            options = BuildOptions(target="tflite", precision=precision, output=out / f"{'-'.join(key)}.tflite",
                                   source=SourceOptions(python_entry=f"tests.hf_models:tiny_{arch}"), calibration=calib,
                                   target_options={"converter": converter})
            built[key] = compile_model(Path(hf_models.__file__), options).artifact
        return built[key]

    return get


def _manifest(artifact: Path) -> dict:
    return json.loads(artifact.with_name(artifact.name + ".manifest.json").read_text())


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def assert_matches_pytorch(arch: str, artifact: Path, precision: str) -> None:
    module, _ = hf_models.tiny(arch)
    runner = load_artifact(artifact)
    feeds = hf_models.samples(hf_models.TINY[arch][0], count=6, seed=500)  # not among the calibration samples
    with torch.no_grad():
        ref = np.stack([module(*[torch.from_numpy(v) for v in f.values()]).numpy() for f in feeds])
    got = np.stack([next(iter(runner.run(f).values())) for f in feeds])
    assert got.shape == ref.shape
    assert _cosine(ref, got) >= COSINE[precision], f"{arch} {precision}: cosine {_cosine(ref, got):.6f}"
    # The build measured it too, through the .tflite, on held-out calibration samples (INT8) or examples.
    check = _manifest(artifact)["final_check"]
    assert check["status"] == "passed"
    if precision == "int8":
        assert check["origin"] == "held-out calibration samples" and check["figures"]["cosine"] >= 0.99


# BERT fp32 is built by test_a_pytorch_user_needs_no_tensorflow (one build less).
LITERT_CASES = [(arch, precision) for arch in hf_models.TINY for precision in ("fp32", "int8")
                if (arch, precision) != ("bert", "fp32")]


@needs_litert_torch
@pytest.mark.parametrize(("arch", "precision"), LITERT_CASES, ids=["-".join(c) for c in LITERT_CASES])
def test_litert_torch_route(build: Callable, arch: str, precision: str) -> None:
    artifact = build(arch, "auto", precision)  # auto: a PyTorch module with litert-torch installed
    manifest = _manifest(artifact)
    assert manifest["converter"] == "litert-torch" and "PyTorch module" in manifest["converter_reason"]
    assert_matches_pytorch(arch, artifact, precision)
    if precision == "int8":
        assert manifest["tflite"]["tensor_types"].get("int8", 0) > 0


# The onnx2tf route on the architectures it failed on before issue 17: ViT (onnxsim's q/k/v merge), ConvNeXt
# (no serving_default signature), MiniLM (ReduceL2).
ONNX2TF_CASES = [("vit", "fp32"), ("convnext", "fp32"), ("minilm", "fp32")]


@needs_onnx2tf
@pytest.mark.parametrize(("arch", "precision"), ONNX2TF_CASES, ids=["-".join(c) for c in ONNX2TF_CASES])
def test_onnx2tf_route(build: Callable, arch: str, precision: str) -> None:
    artifact = build(arch, "onnx2tf", precision)
    manifest = _manifest(artifact)
    assert manifest["converter"] == "onnx2tf" and manifest["converter_reason"] == "--tflite-converter onnx2tf"
    assert_matches_pytorch(arch, artifact, precision)
    if arch == "minilm":
        assert manifest["tflite"]["onnx2tf_rewrites"] == {"ReduceL2": 1}


@pytest.mark.parametrize("converter", [pytest.param("auto", marks=needs_litert_torch),
                                       pytest.param("onnx2tf", marks=needs_onnx2tf)])
def test_images_become_nhwc_token_ids_stay(build: Callable, converter: str) -> None:
    from infer_compile.targets.tflite import TfliteRunner

    image = _manifest(build("vit", converter, "fp32"))["io"]["inputs"][0]
    assert image["perm"] == [0, 2, 3, 1] and image["shape"] == [1, 3, 32, 32]
    assert TfliteRunner(build("vit", converter, "fp32")).inputs[0].shape == (1, 32, 32, 3)  # as TFLite sees it
    tokens = _manifest(build("minilm", converter, "fp32"))["io"]["inputs"]
    assert [b["perm"] for b in tokens] == [None, None]


@needs_litert_torch
def test_a_pytorch_user_needs_no_tensorflow(tmp_path: Path) -> None:
    """The litert-torch route in an interpreter where tensorflow cannot be imported. (A plain torch module:
    transformers itself stumbles over the hidden package while probing for TensorFlow.)"""
    from tests import torch_models

    out = tmp_path / "encoder.tflite"
    proc = run_cli_without("tensorflow", ["--from-python", "tests.torch_models:build_encoder", "-t", "tflite",
                                          "-o", out, "--no-cache"])
    assert proc.returncode == 0, proc.stderr
    assert "litert-torch (a PyTorch module source and litert-torch is installed" in proc.stdout
    module, (example,) = torch_models.build_encoder()
    with torch.no_grad():
        expected = module.eval()(example).numpy()
    got = next(iter(load_artifact(out).run({"tokens": example.numpy()}).values()))
    assert _cosine(expected, got) >= COSINE["fp32"]


@needs_litert_torch
@pytest.mark.parametrize("saved", ["pt2", "python"])
def test_litert_torch_route_takes_model_outputs_as_saved(saved: str, tmp_path: Path) -> None:
    """A transformers model returning its ModelOutput (a dict: litert-torch names the output `logits`, the graph
    too), from --from-python and from a .pt2 program (whose module refuses eval()): both failed before."""
    module, example = hf_models.MODELS["convnext"].build()
    if saved == "pt2":
        source, python_entry = tmp_path / "convnext.pt2", None
        torch.export.save(torch.export.export(module, example), source)
    else:
        source, python_entry = Path(hf_models.__file__), "tests.hf_models:build_convnext"
    options = BuildOptions(target="tflite", output=tmp_path / "m.tflite", target_options={"converter": "litert-torch"},
                           source=SourceOptions(python_entry=python_entry))
    artifact = compile_model(source, options).artifact
    feeds = {"pixel_values": np.random.default_rng(7).normal(size=example[0].shape).astype(np.float32)}
    with torch.no_grad():
        expected = module(torch.from_numpy(feeds["pixel_values"])).logits.numpy()
    got = load_artifact(artifact).run(feeds)
    assert list(got) == ["logits"] and _cosine(expected, got["logits"]) >= COSINE["fp32"]


def test_litert_torch_route_refuses_other_sources(tiny_cnn_onnx: Path, tmp_path: Path) -> None:
    options = BuildOptions(target="tflite", output=tmp_path / "m.tflite", target_options={"converter": "litert-torch"})
    with pytest.raises(UserInputError, match="converts PyTorch modules only"):
        compile_model(tiny_cnn_onnx, options)
    assert list(tmp_path.iterdir()) == []


@needs_litert_torch
def test_int8_io_is_refused_on_the_litert_torch_route(tmp_path: Path) -> None:
    options = BuildOptions(target="tflite", precision="int8", output=tmp_path / "m.tflite",
                           source=SourceOptions(python_entry="tests.torch_models:build_encoder"),
                           calibration=CalibrationSettings("synthetic"), target_options={"int8_io": True})
    with pytest.raises(UserInputError, match="--tflite-int8-io applies to the onnx2tf route only"):
        compile_model(Path(hf_models.__file__), options)
    assert [p.name for p in tmp_path.iterdir() if p.suffix != ".log"] == []  # m.tflite.log: the exporter's output
