"""Where builds write: -o as a folder, suffixes per target, never the source, never a file we did not write,
unwritable or full output folders found before the build (read-only and full disks on a real tmpfs as root)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from infer_compile.core.artifacts import staged_output
from infer_compile.core.errors import UserInputError
from infer_compile.core.manifest import ArtifactFiles, BuildFacts, Manifest
from tests.artifact_helpers import assert_user_error, invoke, write_tiny_cnn
from tests.builders import make_model, tensor

TARGETS = ["onnxruntime", pytest.param("openvino", marks=pytest.mark.skipif(
    not __import__("importlib").util.find_spec("openvino"), reason="needs the [openvino] extra"))]
SUFFIX = {"onnxruntime": ".onnx", "openvino": ".xml"}


def compile_cli(model: Path, *args: object):
    return invoke(model, "--no-cache", "--no-tune", *args)


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator:
    """Mount small tmpfs file systems (root only): tmpfs(size, read_only=False) -> mount point."""
    mounted: list[Path] = []

    def mount(size: str, read_only: bool = False) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        point = tmp_path / f"fs{len(mounted)}"
        point.mkdir()
        options = f"size={size}" + (",ro" if read_only else "")
        if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True).returncode:
            pytest.skip("cannot mount a tmpfs here (no privilege in this container)")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        # Files a build closed just before can pin the mount for a moment ("target is busy", no fd or mapping of
        # ours left): retry briefly, then detach it lazily rather than fail a test that passed.
        for _ in range(20):
            if subprocess.run(["umount", str(point)], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        else:
            subprocess.run(["umount", "--lazy", str(point)], check=True)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("spelling", ["build/", "build"])
def test_existing_folder_means_into_it_and_keeps_its_files(tmp_path: Path, target: str, spelling: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    model = write_tiny_cnn(tmp_path / "m.onnx")
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "notes.txt").write_text("mine")
    monkeypatch.chdir(tmp_path)
    for _ in range(2):  # the second build replaces its own previous artifact
        result = compile_cli(model, "-t", target, "-o", spelling)
        assert result.exit_code == 0, result.output
    name = f"m{SUFFIX[target]}"
    assert (tmp_path / "build" / "notes.txt").read_text() == "mine"
    assert name in listing(tmp_path / "build") and f"{name}.manifest.json" in listing(tmp_path / "build")
    assert not [n for n in listing(tmp_path / "build") if ".partial-" in n]


def test_trailing_slash_creates_the_folder(tmp_path: Path) -> None:
    model = write_tiny_cnn(tmp_path / "m.onnx")
    result = compile_cli(model, "-o", f"{tmp_path / 'new' / 'dir'}/")
    assert result.exit_code == 0, result.output
    assert listing(tmp_path / "new" / "dir") == ["m.onnx", "m.onnx.manifest.json"]


def test_a_file_the_tool_did_not_write_is_never_replaced(tmp_path: Path) -> None:
    model = write_tiny_cnn(tmp_path / "m.onnx")
    theirs = tmp_path / "out" / "model.onnx"
    theirs.parent.mkdir()
    theirs.write_bytes(b"somebody's model")
    result = compile_cli(model, "-o", theirs)
    assert_user_error(result, f"{theirs} exists and was not written by infer-compile")
    assert theirs.read_bytes() == b"somebody's model" and listing(theirs.parent) == ["model.onnx"]


def test_commit_checks_every_file_before_moving_any(tmp_path: Path) -> None:
    """A side file (weights, .bin) landing on a foreign file stops the whole commit, artifact included."""
    out = tmp_path / "model.xml"
    (tmp_path / "model.bin").write_bytes(b"not ours")
    with pytest.raises(UserInputError, match=r"model\.bin exists and was not written"), staged_output(out) as stage:
        stage.artifact.write_bytes(b"xml")
        stage.sibling("model.bin").write_bytes(b"weights")
        stage.write_manifest(Manifest("openvino", "fp32", BuildFacts(source={}, inputs=[], outputs=[]),
                                      ArtifactFiles("model.xml", ["model.bin", "model.xml"], None)))
        stage.commit()
    assert listing(tmp_path) == ["model.bin"] and (tmp_path / "model.bin").read_bytes() == b"not ours"


@pytest.mark.parametrize("target", TARGETS)
def test_output_names_get_the_target_suffix(tmp_path: Path, target: str) -> None:
    model = write_tiny_cnn(tmp_path / "m.onnx")
    result = compile_cli(model, "-t", target, "-o", tmp_path / "out" / "model")
    assert result.exit_code == 0, result.output
    assert f"model{SUFFIX[target]}" in listing(tmp_path / "out")
    wrong = ".xml" if target == "onnxruntime" else ".onnx"
    result = compile_cli(model, "-t", target, "-o", tmp_path / "other" / f"model{wrong}")
    assert_user_error(result, f"{target} artifacts are named *{SUFFIX[target]}")
    assert not (tmp_path / "other").exists()


def test_ort_format_suffix_is_accepted(tmp_path: Path) -> None:
    result = compile_cli(write_tiny_cnn(tmp_path / "m.onnx"), "-o", tmp_path / "m.ort")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "m.ort.manifest.json").read_text())["format"] == "ort"


def test_output_equal_to_the_source_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = write_tiny_cnn(tmp_path / "m.onnx")
    before = model.read_bytes()
    monkeypatch.chdir(tmp_path / "..")
    for spelling in (model, Path(tmp_path.name) / "m.onnx", tmp_path / "." / "m.onnx"):
        assert_user_error(compile_cli(model, "-o", spelling), "would overwrite the source model")
    link = tmp_path / "link.onnx"
    link.symlink_to(model)
    assert_user_error(compile_cli(model, "-o", link), "would overwrite the source model")
    assert model.read_bytes() == before and listing(tmp_path) == ["link.onnx", "m.onnx"]


def test_config_build_into_the_models_own_folder_never_overwrites_it(tmp_path: Path) -> None:
    model = write_tiny_cnn(tmp_path / "x.onnxruntime.fp32.onnx")  # exactly the name the job would write
    before = model.read_bytes()
    (tmp_path / "infer.toml").write_text('output_dir = "."\ntargets = ["onnxruntime"]\n\n[[models]]\n'
                                         'path = "x.onnxruntime.fp32.onnx"\nname = "x"\n')
    result = invoke("build", "-c", tmp_path / "infer.toml", "-j", 1, "--no-cache")
    assert result.exit_code == 1, result.output
    assert "would overwrite the source model" in result.stderr
    assert model.read_bytes() == before and listing(tmp_path) == ["infer.toml", "x.onnxruntime.fp32.onnx"]


def test_report_to_an_unwritable_path_fails_before_the_build(tmp_path: Path) -> None:
    model = write_tiny_cnn(tmp_path / "m.onnx")
    (tmp_path / "a-file").write_text("")
    result = compile_cli(model, "-o", tmp_path / "out" / "m.onnx", "--report", tmp_path / "a-file" / "r.json")
    assert_user_error(result, f"cannot write the report to {tmp_path / 'a-file' / 'r.json'}")
    assert not (tmp_path / "out").exists()  # found before anything was built


def test_read_only_output_folder_fails_before_the_build(tmp_path: Path, tmpfs) -> None:
    model = write_tiny_cnn(tmp_path / "m.onnx")
    read_only = tmpfs("1m", read_only=True)
    for args in (("-o", read_only / "m.onnx"), ("-o", tmp_path / "ok.onnx", "--report", read_only / "r.json")):
        result = compile_cli(model, *args)
        assert_user_error(result, f"to {read_only}", "Read-only file system")
    assert not (tmp_path / "ok.onnx").exists()


def _megabyte_model(path: Path) -> Path:
    weights = np.random.default_rng(0).normal(size=(512, 512)).astype(np.float32)
    onnx.save_model(make_model([helper.make_node("MatMul", ["x", "w"], ["y"])], [tensor("x", [1, 512])],
                               [tensor("y", [1, 512])], {"w": weights}), str(path))
    return path


@pytest.mark.parametrize("target", TARGETS)
def test_full_disk_names_the_path_and_leaves_nothing(tmp_path: Path, tmpfs, target: str) -> None:
    model = _megabyte_model(tmp_path / "mm.onnx")
    small = tmpfs("256k")  # room for the probe, not for the 1 MiB of weights
    result = compile_cli(model, "-t", target, "-o", small / "m")
    assert_user_error(result, f"cannot write {small / ('m' + SUFFIX[target])}", "No space left on device")
    assert listing(small) == []
    full = tmpfs("64k")
    (full / "filler").write_bytes(b"\0" * (64 << 10))
    result = compile_cli(model, "-t", target, "-o", full / "m")
    assert_user_error(result, f"cannot write the artifact to {full / ('m' + SUFFIX[target])}", "No space left")
    assert listing(full) == ["filler"]


def test_calib_cache_never_replaces_a_file_it_did_not_write(tmp_path: Path, tiny_cnn_onnx: Path,
                                                          tiny_cnn_calib) -> None:
    calib = str(tiny_cnn_calib.source)
    config = tmp_path / "config.json"
    config.write_text('{"learning_rate": 0.1}\n')
    result = compile_cli(tiny_cnn_onnx, "--int8", "--calib", calib, "-o", tmp_path / "q.onnx", "--calib-cache", config)
    assert_user_error(result, f"--calib-cache {config}: exists and is not a file infer-compile wrote")
    assert config.read_text() == '{"learning_rate": 0.1}\n' and not (tmp_path / "q.onnx").exists()
    ranges = tmp_path / "ranges.json"
    for _ in range(2):  # written, then reused: our own file
        result = compile_cli(tiny_cnn_onnx, "--int8", "--calib", calib, "-o", tmp_path / "q.onnx", "--calib-cache",
                             ranges)
        assert result.exit_code == 0, result.output
    assert json.loads(ranges.read_text())["schema"].startswith("infer-compile.calibration/")


def test_report_replaces_only_an_earlier_report(tmp_path: Path) -> None:
    model = write_tiny_cnn(tmp_path / "m.onnx")
    theirs = tmp_path / "settings.json"
    theirs.write_text('{"theme": "dark"}\n')
    result = compile_cli(model, "-o", tmp_path / "out" / "m.onnx", "--report", theirs)
    assert_user_error(result, f"--report {theirs}: exists and is not a file infer-compile wrote")
    assert theirs.read_text() == '{"theme": "dark"}\n' and not (tmp_path / "out").exists()
    ours = tmp_path / "build.json"
    for _ in range(2):
        result = compile_cli(model, "-o", tmp_path / "out" / "m.onnx", "--report", ours)
        assert result.exit_code == 0, result.output
    assert json.loads(ours.read_text())["schema"].startswith("infer-compile.build/")
