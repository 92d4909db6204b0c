"""`infer-compile triton` and `--triton-repo`: a Triton model repository from real artifacts.

Every config.pbtxt written here is parsed with Triton's own model-config schema (``model_config_pb2`` from the
tritonclient wheel, installed by `make install`; strict: an unknown field, a wrong type or enum value fails) and
read back field by field against the artifact; the repository's model file is run in its real runtime and
compared with the source. A Triton server loads the repository where one is installed.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from infer_compile.app.triton import MARKER, config_text, existing_versions
from infer_compile.core.ir import load_onnx
from infer_compile.core.manifest import Manifest, manifest_path
from infer_compile.core.numerics import TOLERANCES, compare_outputs, random_inputs, run_onnx, within
from infer_compile.core.shapes import ShapeRange
from infer_compile.targets import get_target
from tests.artifact_helpers import assert_user_error, build_artifact, invoke, write_tiny_cnn

_TOKEN = re.compile(r'\s*(?:#[^\n]*\n\s*)*("(?:[^"\\]|\\.)*"|[{}\[\]:,]|[^\s{}\[\]:,"#]+)')


def triton_model_config() -> Any:
    """Triton's ModelConfig message class, from tritonclient's generated module (read from its file: the
    ``tritonclient.grpc`` package itself insists on the grpc extra's pins, which the schema does not need)."""
    found = importlib.util.find_spec("tritonclient")
    if found is None or not found.submodule_search_locations:
        return None
    path = Path(next(iter(found.submodule_search_locations))) / "grpc" / "model_config_pb2.py"
    spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ModelConfig


MODEL_CONFIG = triton_model_config()


def read_pbtxt(text: str) -> dict[str, Any]:
    """Protobuf text format as nested dicts, every field's values in a list (repeated or not); first parsed
    with Triton's schema, when tritonclient is installed (`make install` installs it)."""
    if MODEL_CONFIG is not None:
        from google.protobuf import text_format

        text_format.Parse(text, MODEL_CONFIG())  # raises on anything Triton's schema does not have
    tokens = [m.group(1) for m in _TOKEN.finditer(text)]
    position = 0

    def value(token: str) -> Any:
        if token.startswith('"'):
            return json.loads(token)
        return int(token) if re.fullmatch(r"-?\d+", token) else token

    def message(end: str | None) -> dict[str, Any]:
        nonlocal position
        fields: dict[str, Any] = {}
        while position < len(tokens) and tokens[position] != end:
            name = tokens[position]
            position += 1
            if tokens[position] == ":":
                position += 1
            fields.setdefault(name, []).extend(values())
            if position < len(tokens) and tokens[position] == ",":
                position += 1
        position += 1  # the closing brace
        return fields

    def values() -> list[Any]:
        nonlocal position
        token = tokens[position]
        position += 1
        if token == "{":
            return [message("}")]
        if token != "[":
            return [value(token)]
        items = []
        while tokens[position] != "]":
            items += values()
            if tokens[position] == ",":
                position += 1
        position += 1
        return items

    return message(None)


def parameters(config: dict[str, Any]) -> dict[str, str]:
    return {p["key"][0]: p["value"][0]["string_value"][0] for p in config.get("parameters", [])}


@pytest.fixture(scope="module")
def ort_artifact(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("triton")
    source = write_tiny_cnn(root / "tiny_cnn.onnx")
    result = build_artifact(source, root / "out" / "tiny_cnn.onnx", shape_ranges={"batch": ShapeRange(1, 4, 8)})
    return source, result.artifact


def test_an_onnxruntime_artifact_becomes_a_model_triton_batches(ort_artifact, tmp_path: Path) -> None:
    source, artifact = ort_artifact
    repo = tmp_path / "repo"
    result = invoke("triton", artifact, "--repo", repo, "--name", "cnn")
    assert result.exit_code == 0, result.output
    assert sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*")) == [
        "cnn", "cnn/1", "cnn/1/model.onnx", "cnn/config.pbtxt"]
    text = (repo / "cnn" / "config.pbtxt").read_text()
    assert text.startswith(MARKER + "\n")
    config = read_pbtxt(text)
    assert config["name"] == ["cnn"] and config["platform"] == ["onnxruntime_onnx"]
    assert config["max_batch_size"] == [8]  # the batch range's max; dims leave the batch out
    assert config["input"] == [{"name": ["image"], "data_type": ["TYPE_FP32"], "dims": [3, 32, 32]}]
    assert config["output"] == [{"name": ["logits"], "data_type": ["TYPE_FP32"], "dims": [10]}]
    assert config["instance_group"] == [{"kind": ["KIND_CPU"]}]
    assert config["dynamic_batching"] == [{"preferred_batch_size": [4, 8]}]
    # The served file is the artifact, running as the source does (batch 3: inside the range, not a preferred size).
    import onnxruntime as ort

    session = ort.InferenceSession(str(repo / "cnn" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = random_inputs(load_onnx(source).inputs, seed=1, dims={"batch": 3})
    served = dict(zip(["logits"], session.run(["logits"], feeds), strict=True))
    assert within(compare_outputs(run_onnx(load_onnx(source), feeds), served), TOLERANCES["fp32"])


def test_a_second_write_adds_the_next_version_and_leaves_everything_else(ort_artifact, tmp_path: Path) -> None:
    _, artifact = ort_artifact
    repo = tmp_path / "repo"
    assert invoke("triton", artifact, "--repo", repo).exit_code == 0  # name: the artifact's
    foreign = {repo / "tiny_cnn" / "README.md": "ours, not the tool's", repo / "other" / "config.pbtxt": "name: \"x\"",
               repo / "tiny_cnn" / "1" / "labels.txt": "cat\ndog\n"}
    for path, content in foreign.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    first = (repo / "tiny_cnn" / "1" / "model.onnx").read_bytes()
    result = invoke("triton", artifact, "--repo", repo)
    assert result.exit_code == 0, result.output
    assert (repo / "tiny_cnn" / "2" / "model.onnx").read_bytes() == first
    assert (repo / "tiny_cnn" / "1" / "model.onnx").read_bytes() == first
    assert all(path.read_text() == content for path, content in foreign.items())
    assert not list((repo / "tiny_cnn").glob(".infer-compile-*"))  # no staging folder left behind


def test_an_existing_version_is_never_overwritten(ort_artifact, tmp_path: Path) -> None:
    _, artifact = ort_artifact
    repo = tmp_path / "repo"
    assert invoke("triton", artifact, "--repo", repo, "--version", 3).exit_code == 0
    (repo / "tiny_cnn" / "3" / "model.onnx").write_bytes(b"served")
    assert_user_error(invoke("triton", artifact, "--repo", repo, "--version", 3), "never overwritten",
                      "--triton-version")
    assert (repo / "tiny_cnn" / "3" / "model.onnx").read_bytes() == b"served"
    assert invoke("triton", artifact, "--repo", repo).exit_code == 0
    assert (repo / "tiny_cnn" / "4" / "model.onnx").is_file()  # the default: highest + 1


def test_a_config_pbtxt_the_tool_did_not_write_is_refused(ort_artifact, tmp_path: Path) -> None:
    _, artifact = ort_artifact
    config = tmp_path / "repo" / "tiny_cnn" / "config.pbtxt"
    config.parent.mkdir(parents=True)
    config.write_text('name: "tiny_cnn"\nbackend: "python"\n')
    assert_user_error(invoke("triton", artifact, "--repo", tmp_path / "repo"), "not written by infer-compile")
    assert config.read_text() == 'name: "tiny_cnn"\nbackend: "python"\n'
    assert [p.name for p in config.parent.iterdir()] == ["config.pbtxt"]


def copy_with_manifest(artifact: Path, folder: Path, **fields: Any) -> Path:
    """A copy of ``artifact`` whose manifest says what another target would have written."""
    folder.mkdir()
    copy = folder / artifact.name
    copy.write_bytes(artifact.read_bytes())
    body = json.loads(manifest_path(artifact).read_text())
    manifest_path(copy).write_text(json.dumps({**body, **fields}))
    return copy


@pytest.mark.parametrize(("fields", "message"), [
    ({"target": "tflite"}, "no standard backend for tflite"),
    ({"target": "trt", "format": "trtbundle"}, "deferred TensorRT bundle"),
])
def test_artifacts_triton_cannot_serve_are_refused_in_one_line(ort_artifact, tmp_path: Path, fields, message) -> None:
    _, artifact = ort_artifact
    copy = copy_with_manifest(artifact, tmp_path / "other", **fields)
    assert_user_error(invoke("triton", copy, "--repo", tmp_path / "repo"), message)
    assert not (tmp_path / "repo").exists()


def test_compile_with_triton_repo_serves_what_it_built(tmp_path: Path) -> None:
    source = write_tiny_cnn(tmp_path / "tiny_cnn.onnx")
    repo = tmp_path / "repo"
    result = invoke(source, "-t", "onnxruntime", "--no-tune", "--shape-range", "batch=1:2:4", "-o", tmp_path / "m.onnx",
                    "--triton-repo", repo, "--triton-name", "classifier", "--triton-version", 7)
    assert result.exit_code == 0, result.output
    assert (repo / "classifier" / "7" / "model.onnx").read_bytes() == (tmp_path / "m.onnx").read_bytes()
    assert read_pbtxt((repo / "classifier" / "config.pbtxt").read_text())["max_batch_size"] == [4]


def test_compile_refuses_a_target_triton_cannot_serve_before_building(tmp_path: Path) -> None:
    source = write_tiny_cnn(tmp_path / "tiny_cnn.onnx")
    result = invoke(source, "-t", "tflite", "-o", tmp_path / "m.tflite", "--triton-repo", tmp_path / "repo")
    assert_user_error(result, "no standard backend for tflite")
    assert not (tmp_path / "m.tflite").exists() and not (tmp_path / "repo").exists()
    assert_user_error(invoke(source, "--triton-name", "x"), "--triton-name needs --triton-repo")


def test_a_build_config_with_triton_repo_serves_every_job(tmp_path: Path) -> None:
    write_tiny_cnn(tmp_path / "tiny_cnn.onnx")
    (tmp_path / "infer.toml").write_text('triton_repo = "serve"\ntargets = ["onnxruntime"]\nprecisions = ["fp32"]\n'
                                         '[[models]]\npath = "tiny_cnn.onnx"\nname = "cnn"\n')
    result = invoke("build", "-c", tmp_path / "infer.toml", "-j", 1)
    assert result.exit_code == 0, result.output
    served = tmp_path / "serve" / "cnn_onnxruntime_fp32"
    assert (served / "1" / "model.onnx").read_bytes() == (tmp_path / "build" / "cnn.onnxruntime.fp32.onnx").read_bytes()
    assert read_pbtxt((served / "config.pbtxt").read_text())["name"] == ["cnn_onnxruntime_fp32"]


def test_an_openvino_artifact_becomes_an_openvino_model(tmp_path: Path) -> None:
    if not (status := get_target("openvino").availability()).available:
        pytest.skip(status.detail)
    source = write_tiny_cnn(tmp_path / "tiny_cnn.onnx")
    artifact = build_artifact(source, tmp_path / "out" / "tiny_cnn.xml", target="openvino",
                              target_options={"ov_config": {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": 1}}
                              ).artifact
    result = invoke("triton", artifact, "--repo", tmp_path / "repo")
    assert result.exit_code == 0, result.output
    version = tmp_path / "repo" / "tiny_cnn" / "1"
    assert sorted(p.name for p in version.iterdir()) == ["model.bin", "model.xml"]
    config = read_pbtxt((version.parent / "config.pbtxt").read_text())
    assert config["backend"] == ["openvino"] and config["max_batch_size"] == [0]  # no batch range: no batching
    assert config["input"][0]["dims"] == [-1, 3, 32, 32]
    assert parameters(config) == {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": "1"}
    import openvino as ov

    compiled = ov.Core().compile_model(str(version / "model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    feeds = random_inputs(load_onnx(source).inputs, seed=2, dims={"batch": 2})
    served = {"logits": np.asarray(compiled(feeds)[compiled.outputs[0]])}
    assert within(compare_outputs(run_onnx(load_onnx(source), feeds), served), TOLERANCES["fp32"])


def test_tensorrt_config_text_from_a_manifest() -> None:
    body = {"target": "trt", "precision": "fp16", "format": "engine",
            "inputs": [{"name": "ids", "shape": ["batch", 128], "dtype": "int64"}],
            "outputs": [{"name": "scores", "shape": ["batch", 2], "dtype": "float16"}],
            "shape_ranges": {"batch": [1, 16, 16]}, "artifact": {"file": "m.engine", "files": ["m.engine"],
                                                                  "sha256": None}}
    config = read_pbtxt(config_text(Manifest.from_json(body), "bert"))
    assert config["platform"] == ["tensorrt_plan"] and config["instance_group"] == [{"kind": ["KIND_GPU"]}]
    assert config["max_batch_size"] == [16] and config["dynamic_batching"] == [{"preferred_batch_size": [16]}]
    assert config["input"][0]["data_type"] == ["TYPE_INT64"] and config["input"][0]["dims"] == [128]
    assert config["output"][0]["data_type"] == ["TYPE_FP16"]
    # A first dim that is not a dynamic batch shared by every tensor stays in dims; Triton does not batch.
    body["outputs"][0]["shape"] = [1, 2]
    config = read_pbtxt(config_text(Manifest.from_json(body), "bert"))
    assert config["max_batch_size"] == [0] and "dynamic_batching" not in config
    assert config["input"][0]["dims"] == [-1, 128] and config["output"][0]["dims"] == [1, 2]


def test_our_config_of_another_interface_is_not_replaced(ort_artifact, tmp_path: Path) -> None:
    _, artifact = ort_artifact
    repo = tmp_path / "repo"
    assert invoke("triton", artifact, "--repo", repo).exit_code == 0
    config = (repo / "tiny_cnn" / "config.pbtxt").read_text()
    other = copy_with_manifest(artifact, tmp_path / "other",
                               outputs=[{"name": "logits", "shape": ["batch", 5], "dtype": "float32"}])
    assert_user_error(invoke("triton", other, "--repo", repo), "other inputs, outputs or backend")
    assert (repo / "tiny_cnn" / "config.pbtxt").read_text() == config
    assert existing_versions(repo / "tiny_cnn") == [1]


def test_configs_parse_with_tritons_own_schema(ort_artifact, tmp_path: Path) -> None:
    if MODEL_CONFIG is None:
        pytest.skip("tritonclient is not installed (make install puts it in the venv, --no-deps)")
    from google.protobuf import json_format, text_format

    _, artifact = ort_artifact
    assert invoke("triton", artifact, "--repo", tmp_path, "--name", "cnn").exit_code == 0
    parsed = text_format.Parse((tmp_path / "cnn" / "config.pbtxt").read_text(), MODEL_CONFIG())
    config = json_format.MessageToDict(parsed, preserving_proto_field_name=True)  # enums by name
    assert config == {"name": "cnn", "platform": "onnxruntime_onnx", "max_batch_size": 8,
                      "input": [{"name": "image", "data_type": "TYPE_FP32", "dims": ["3", "32", "32"]}],
                      "output": [{"name": "logits", "data_type": "TYPE_FP32", "dims": ["10"]}],
                      "instance_group": [{"kind": "KIND_CPU"}],
                      "dynamic_batching": {"preferred_batch_size": [4, 8]}}
    with pytest.raises(text_format.ParseError):  # the schema is strict: a misspelt field fails
        text_format.Parse('name: "x"\nmax_batch_sise: 8\n', MODEL_CONFIG())


def test_a_triton_server_serves_the_repository(ort_artifact, tmp_path: Path) -> None:
    """Triton's in-process server (the ``tritonserver`` Python package ships in NVIDIA's Triton containers,
    not on PyPI) loads the repository and answers as our runner does. docs/gpu-check.md step 9 runs it."""
    tritonserver = pytest.importorskip(
        "tritonserver", reason="no Triton server here: the tritonserver package ships in NVIDIA's Triton "
                               "containers (nvcr.io/nvidia/tritonserver), not on PyPI; docs/gpu-check.md step 9")
    source, artifact = ort_artifact
    assert invoke("triton", artifact, "--repo", tmp_path, "--name", "cnn").exit_code == 0
    server = tritonserver.Server(model_repository=str(tmp_path)).start(wait_until_ready=True)
    try:
        feeds = random_inputs(load_onnx(source).inputs, seed=3, dims={"batch": 2})
        [response] = list(server.model("cnn").infer(inputs=feeds))
        served = {"logits": np.from_dlpack(response.outputs["logits"])}
        assert within(compare_outputs(run_onnx(load_onnx(source), feeds), served), TOLERANCES["fp32"])
    finally:
        server.stop()

