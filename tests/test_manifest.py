"""The artifact manifest: one type written by the build and read back by targets, inspect, run and the cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from infer_compile.core.manifest import (
    ArtifactFiles,
    BuildFacts,
    Manifest,
    manifest_path,
    read_manifest,
)
from infer_compile.core.shapes import ShapeRange
from infer_compile.targets import load_artifact
from tests.artifact_helpers import assert_user_error, build_artifact, invoke, write_tiny_cnn

FEEDS = {"image": np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float16)}  # fp16 I/O


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real fp16 build with a shape range: its manifest has every part (pass section, target fields, check)."""
    root = tmp_path_factory.mktemp("manifest")
    source = write_tiny_cnn(root / "tiny_cnn.onnx")
    return build_artifact(source, root / "a.onnx", precision="fp16", shape_ranges={"batch": (1, 2, 4)}).artifact


def copy_with_manifest(built: Path, folder: Path, edit) -> Path:
    """The built artifact copied into ``folder`` with its manifest's JSON changed by ``edit``."""
    artifact = folder / built.name
    shutil.copyfile(built, artifact)
    body = json.loads(manifest_path(built).read_text())
    edit(body)
    manifest_path(artifact).write_text(json.dumps(body))
    return artifact


def test_a_build_writes_what_the_type_reads_back(built: Path) -> None:
    written = json.loads(manifest_path(built).read_text())
    manifest = read_manifest(built)
    assert manifest is not None
    assert list(manifest.to_json().items()) == list(written.items())  # same keys, same order, same values
    assert Manifest.from_json(manifest.to_json()) == manifest
    assert (manifest.target, manifest.precision) == ("onnxruntime", "fp16")
    assert manifest.build.shape_ranges == {"batch": ShapeRange(1, 2, 4)}
    assert manifest.quantization is not None and manifest.quantization["nodes"]["fp16"] > 0
    assert manifest.final_check is not None and manifest.final_check["status"] == "passed"
    assert manifest.artifact is not None and manifest.artifact.files == ["a.onnx"]
    assert manifest.target_fields["format"] == "onnx" and "session_options" in manifest.target_fields
    assert {"onnxruntime", "onnx", "infer-compile"} <= set(manifest.build.tool_versions)


def test_a_manifest_of_the_first_release_still_loads(built: Path, tmp_path: Path) -> None:
    """The first releases wrote no schema, shape ranges or final check: such artifacts keep working."""
    def first_release(body: dict) -> None:
        for key in ("schema", "shape_ranges", "final_check"):
            del body[key]

    artifact = copy_with_manifest(built, tmp_path, first_release)
    manifest = read_manifest(artifact)
    assert manifest is not None and manifest.schema == 1
    assert manifest.build.shape_ranges == {} and manifest.final_check is None
    with load_artifact(built) as original, load_artifact(artifact) as old:
        np.testing.assert_array_equal(old.run(FEEDS)["logits"], original.run(FEEDS)["logits"])
    result = invoke("inspect", artifact)
    assert result.exit_code == 0 and "onnxruntime" in result.stdout, result.output


@pytest.mark.parametrize(("edit", "reason"), [
    (lambda m: m.update(schema=2), "schema 2; this infer-compile reads schema 1"),
    (lambda m: m.pop("target"), "no target named in it"),
    (lambda m: m.update(precision=16), "'precision' is not a JSON string"),
    (lambda m: m.update(passes="fp16"), "'passes' is not a JSON list"),
    (lambda m: m.update(passes=[1]), "'passes' is not a list of pass names"),
    (lambda m: m.update(shape_ranges={"batch": [4, 2, 1]}), "a shape range needs 1 <= MIN <= OPT <= MAX, got 4:2:1"),
    (lambda m: m.update(shape_ranges={"batch": [1, 2]}), "a shape range needs three integers MIN:OPT:MAX"),
    (lambda m: m.update(artifact={"file": "a.onnx", "files": "a.onnx"}), "'artifact' does not list"),
    (lambda m: m.update(outputs=[{"shape": [1]}]), "'outputs' is not a list of named tensors"),
    (lambda m: m.update(source=["x"]), "'source' is not a JSON object"),
    (lambda m: m.update(final_check="passed"), "'final_check' is not a JSON object"),
], ids=["newer-schema", "no-target", "precision", "passes", "pass-names", "range-order", "range-length",
        "artifact-files", "outputs", "source", "final-check"])
def test_a_damaged_manifest_is_one_clear_error(built: Path, tmp_path: Path, edit, reason: str) -> None:
    artifact = copy_with_manifest(built, tmp_path, edit)
    for command in ("inspect", "run"):
        result = invoke(command, artifact)
        assert_user_error(result, f"a.onnx.manifest.json: not a valid infer-compile manifest ({reason}",
                          "rebuild the artifact")
        assert len(result.stderr.strip().splitlines()) == 2, result.stderr  # the error and its hint


def test_what_passes_and_targets_record_is_declared() -> None:
    """A misspelt pass section, or a target field shadowing a common one, fails at once, not in a reader."""
    with pytest.raises(ValueError, match="autotuen"):
        BuildFacts(source={}, inputs=[], outputs=[], pass_sections={"autotuen": {}})
    build = BuildFacts(source={}, inputs=[], outputs=[])
    with pytest.raises(ValueError, match="precision"):
        Manifest.assemble(build, target="x", precision="fp32", artifact=ArtifactFiles("a", ["a"], None),
                          target_tools={}, target_fields={"precision": "int8"})


def test_target_tool_versions_join_the_builds() -> None:
    build = BuildFacts(source={}, inputs=[], outputs=[], tool_versions={"onnx": "1", "numpy": "2"})
    manifest = Manifest.assemble(build, target="x", precision="fp32", artifact=ArtifactFiles("a", ["a"], None),
                                 target_tools={"openvino": "3"}, target_fields={"format": "openvino-ir"})
    assert manifest.to_json()["tool_versions"] == {"onnx": "1", "numpy": "2", "openvino": "3"}
    assert manifest.to_json()["format"] == "openvino-ir"
