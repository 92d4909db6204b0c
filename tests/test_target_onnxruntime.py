"""The ONNX Runtime target: artifacts run and match the source model; .ort format; manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from infer_compile.app.build import BuildOptions, compile_model
from infer_compile.core import ir
from infer_compile.core.artifacts import file_digest
from infer_compile.core.errors import UserInputError
from infer_compile.core.ir import Model
from infer_compile.core.numerics import TOLERANCES, compare_outputs, random_inputs, run_onnx, within
from infer_compile.targets import get_target, load_artifact


@pytest.fixture(scope="module")
def source(tiny_cnn_onnx: Path) -> Path:
    """The tiny CNN saved as ONNX (conftest's shared fixture, under this module's name for it)."""
    return tiny_cnn_onnx


def _assert_matches_source(source: Path, artifact: Path, batch: int = 3) -> None:
    reference = Model.from_proto(onnx.load_model(str(source)))
    feeds = random_inputs(reference.inputs, seed=7, dims={"batch": batch})
    expected = run_onnx(reference, feeds)
    got = load_artifact(artifact).run(feeds)
    comparisons = compare_outputs(expected, got)
    assert within(comparisons, TOLERANCES["fp32"]), comparisons
    assert comparisons[0].top1_agreement == 1.0


def test_onnx_artifact_runs_and_matches_source(source: Path, tmp_path: Path) -> None:
    result = compile_model(source, BuildOptions(target="onnxruntime", output=tmp_path / "m.onnx"))
    assert result.files == [tmp_path / "m.onnx", tmp_path / "m.onnx.manifest.json"]
    assert result.nodes_after < result.nodes_before
    _assert_matches_source(source, tmp_path / "m.onnx")
    manifest = result.manifest.to_json()  # as written
    assert manifest["target"] == "onnxruntime" and manifest["format"] == "onnx"
    assert manifest["source"]["sha256"] == file_digest(source)
    assert manifest["artifact"]["sha256"] == file_digest(tmp_path / "m.onnx")
    assert manifest["inputs"][0]["shape"] == ["batch", 3, 32, 32]
    assert "identity-elimination" in manifest["passes"]
    assert manifest["tool_versions"]["onnxruntime"]


def test_ort_format_artifact(source: Path, tmp_path: Path) -> None:
    compile_model(source, BuildOptions(target="ort", output=tmp_path / "m.ort"))
    assert (tmp_path / "m.ort").read_bytes()[4:8] == b"ORTM"  # flatbuffer file identifier
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ort", "m.ort.manifest.json"]
    _assert_matches_source(source, tmp_path / "m.ort")


def test_external_data_artifact(source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ir, "EXTERNAL_DATA_THRESHOLD", 1024)
    result = compile_model(source, BuildOptions(output=tmp_path / "m.onnx"))
    assert result.manifest.target_fields["external_data"] == "m.onnx.data"
    assert (tmp_path / "m.onnx.data").is_file()
    _assert_matches_source(source, tmp_path / "m.onnx")


def test_pinned_input_shape(source: Path, tmp_path: Path) -> None:
    from infer_compile.frontends import SourceOptions

    result = compile_model(source, BuildOptions(output=tmp_path / "m.onnx",
                                                source=SourceOptions(input_shapes={"image": (2, 3, 32, 32)})))
    assert result.manifest.build.inputs[0]["shape"] == [2, 3, 32, 32]
    runner = load_artifact(tmp_path / "m.onnx")
    assert runner.inputs[0].shape == (2, 3, 32, 32)
    _assert_matches_source(source, tmp_path / "m.onnx", batch=2)


def test_failed_build_leaves_no_artifact(source: Path, tmp_path: Path) -> None:
    from infer_compile.frontends import SourceOptions

    with pytest.raises(UserInputError, match="unknown input"):
        compile_model(source, BuildOptions(output=tmp_path / "m.onnx",
                                           source=SourceOptions(input_shapes={"nope": (1,)})))
    assert list(tmp_path.iterdir()) == []


def test_target_declares_its_capabilities() -> None:
    target = get_target("onnxruntime")
    assert target.availability().available
    assert target.suffix == ".onnx" and target.dynamic_shapes
    assert {"fp32", "fp16", "int8"} <= target.precisions
    assert get_target("ort") is target


def test_session_settings_from_manifest_are_applied(source: Path, tmp_path: Path) -> None:
    compile_model(source, BuildOptions(output=tmp_path / "m.onnx",
                                       target_options={"session_options": {"intra_op_num_threads": 1}}))
    runner = load_artifact(tmp_path / "m.onnx")
    assert runner.session.get_session_options().intra_op_num_threads == 1
    feeds = random_inputs(runner.inputs, dims={"batch": 1})
    assert np.isfinite(runner.run(feeds)["logits"]).all()
