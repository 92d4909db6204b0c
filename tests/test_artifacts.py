"""Atomic artifact staging: complete artifacts or nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infer_compile.core.artifacts import staged_output
from infer_compile.core.manifest import BuildFacts, Manifest, manifest_path, read_manifest

MANIFEST = Manifest("x", "fp32", BuildFacts(source={}, inputs=[], outputs=[]), None)


def test_commit_moves_files_into_place_manifest_last(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "model.bin"
    with staged_output(out) as stage:
        stage.artifact.write_bytes(b"artifact")
        stage.sibling("model.bin.data").write_bytes(b"weights")
        stage.write_manifest(MANIFEST)
        order = [p.name for p in sorted(stage.dir.iterdir(), key=stage._commit_order)]
        files = stage.commit()
    assert order[-1] == "model.bin.manifest.json" and order[-2] == "model.bin"
    assert files[0] == out and out.read_bytes() == b"artifact"
    assert read_manifest(out) == MANIFEST
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.bin", "model.bin.data",
                                                            "model.bin.manifest.json"]


@pytest.mark.parametrize("interruption", [RuntimeError("failed"), KeyboardInterrupt()])
def test_failure_leaves_nothing_and_keeps_the_previous_artifact(tmp_path: Path, interruption) -> None:
    out = tmp_path / "model.bin"
    out.write_bytes(b"previous")
    with pytest.raises(type(interruption)), staged_output(out) as stage:
        stage.artifact.write_bytes(b"half")
        raise interruption
    assert out.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["model.bin"]


def test_manifest_path_is_beside_the_artifact(tmp_path: Path) -> None:
    assert manifest_path(tmp_path / "m.xml") == tmp_path / "m.xml.manifest.json"
    assert read_manifest(tmp_path / "m.xml") is None
    manifest_path(tmp_path / "m.xml").write_text(json.dumps({"target": "openvino"}))
    assert read_manifest(tmp_path / "m.xml") == Manifest("openvino", "fp32", BuildFacts({}, [], []),
                                                         None)
