"""`infer-compile inspect`: I/O, op histogram, parameters, precision and manifest of models and artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infer_compile.core.ir import load_onnx
from tests.artifact_helpers import assert_user_error, build_artifact, invoke, write_tiny_cnn


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inspect")
    source = write_tiny_cnn(root / "tiny_cnn.onnx")
    return {"source": source, "artifact": build_artifact(source, root / "a.onnx").artifact,
            "fp16": build_artifact(source, root / "a16.onnx", precision="fp16").artifact,
            "ort": build_artifact(source, root / "a.ort").artifact}


def inspect_json(path: Path) -> dict:
    result = invoke("inspect", path, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_source_model_histogram_and_parameters_match_the_graph(paths) -> None:
    info = inspect_json(paths["source"])
    model = load_onnx(paths["source"])
    assert info["kind"] == "model" and "manifest" not in info
    assert info["ops"] == dict(model.op_histogram())
    assert info["ops"]["Conv"] == 2 and info["ops"]["Identity"] == 1
    assert info["parameters"] == model.parameter_count
    assert info["precision"]["parameters_by_dtype"] == {"float32": model.parameter_count}
    assert info["inputs"] == [{"name": "image", "shape": ["batch", 3, 32, 32], "dtype": "float32"}]


def test_artifact_shows_its_manifest_and_optimized_graph(paths) -> None:
    info = inspect_json(paths["artifact"])
    assert info["kind"] == "artifact"
    assert info["manifest"]["target"] == "onnxruntime" and info["manifest"]["precision"] == "fp32"
    assert "Identity" not in info["ops"] and "Dropout" not in info["ops"]  # cleaned up by the passes


def test_fp16_artifact_precision_breakdown(paths) -> None:
    precision = inspect_json(paths["fp16"])["precision"]
    assert precision["parameters_by_dtype"].get("float16", 0) > 0


def test_non_graph_artifact_is_described_by_its_runner(paths) -> None:
    info = inspect_json(paths["ort"])  # ORT format: no frontend reads it, the target's runner does
    assert info["kind"] == "artifact" and "ops" not in info
    assert [i["name"] for i in info["inputs"]] == ["image"]
    assert [o["name"] for o in info["outputs"]] == ["logits"]


def test_table_output(paths) -> None:
    result = invoke("inspect", paths["artifact"])
    assert result.exit_code == 0, result.output
    for fragment in ("artifact", "image", "logits", "Conv", "parameters", "onnxruntime", "tool"):
        assert fragment in result.stdout


def test_bad_paths_are_clear_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00\x01garbage")
    assert_user_error(invoke("inspect", junk), "not a model format infer-compile recognises")
    assert_user_error(invoke("inspect", tmp_path / "absent.onnx"), "no such file")


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"target": 5}', '{"target": "tpu"}',
                                  '{"target": "onnxruntime", "inputs": "garbage"}'],
                         ids=["not-json", "list", "target-not-a-name", "unknown-target", "inputs-not-a-list"])
def test_corrupt_manifest_is_a_clear_error(paths, tmp_path: Path, text: str) -> None:
    artifact = tmp_path / "a.onnx"
    artifact.write_bytes(paths["artifact"].read_bytes())
    (tmp_path / "a.onnx.manifest.json").write_text(text)
    for command in ("inspect", "run"):
        assert_user_error(invoke(command, artifact), "a.onnx.manifest.json")
