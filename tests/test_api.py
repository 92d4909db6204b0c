"""The Python API: infer_compile.compile(...) -> Artifact and infer_compile.load(path) -> Runner."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import infer_compile
from infer_compile.core.errors import UserInputError
from infer_compile.core.ir import load_onnx
from infer_compile.core.numerics import TOLERANCES, compare_outputs, random_inputs, run_onnx, within
from tests.artifact_helpers import write_tiny_cnn


def test_compile_then_load_runs_like_the_source(tmp_path: Path, build_cache: Path) -> None:
    source = write_tiny_cnn(tmp_path / "m.onnx")
    artifact = infer_compile.compile(source, target="onnxruntime", output=tmp_path / "out" / "m.onnx",
                                     skip_passes=["constant-folding"], report=tmp_path / "build.json")
    assert isinstance(artifact, infer_compile.Artifact)
    assert artifact.path.is_file() and artifact.target == "onnxruntime" and not artifact.cached
    assert artifact.manifest["precision"] == "fp32"
    report = json.loads((tmp_path / "build.json").read_text())
    assert report["schema"] == "infer-compile.build/2" and report["artifact"]["sha256"]
    assert "constant-folding" not in [p["name"] for p in report["passes"]]
    assert report["precision"]["layers"] and set(report["precision"]["layers"].values()) == {"fp32"}

    runner = infer_compile.load(artifact.path)
    feeds = random_inputs(runner.inputs, seed=2, dims={"batch": 3})
    reference = run_onnx(load_onnx(source), feeds)
    assert within(compare_outputs(reference, runner.run(feeds)), TOLERANCES["fp32"])

    again = infer_compile.compile(source, target="onnxruntime", output=tmp_path / "out" / "m.onnx",
                                  skip_passes=["constant-folding"])
    assert again.cached and list((build_cache / "entries").iterdir())  # the default cache, like the CLI
    assert again.report()["cache"] == "hit" and again.report()["precision"]["layers"] is None


def test_cache_can_be_turned_off(tmp_path: Path, build_cache: Path) -> None:
    source = write_tiny_cnn(tmp_path / "m.onnx")
    artifact = infer_compile.compile(source, target="onnxruntime", output=tmp_path / "m.ort.onnx", cache=False)
    assert artifact.result.cache == "off" and not (build_cache / "entries").exists()


def test_bad_calls_raise_clear_errors(tmp_path: Path) -> None:
    source = write_tiny_cnn(tmp_path / "m.onnx")
    with pytest.raises(UserInputError, match=r"unknown option 'optimise'"):
        infer_compile.compile(source, optimise=True)
    with pytest.raises(UserInputError, match="unknown target 'tpu'"):
        infer_compile.compile(source, target="tpu")
    with pytest.raises(UserInputError, match="no such file"):
        infer_compile.load(tmp_path / "absent.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_text("junk")
    with pytest.raises(UserInputError, match="cannot load it as a onnxruntime artifact"):
        infer_compile.load(junk)
    with pytest.raises(UserInputError, match="shape range for 'batch' needs 1 <= MIN <= OPT <= MAX, got 8:4:1"):
        infer_compile.compile(source, shape_ranges={"batch": (8, 4, 1)}, cache=False)
    assert not (tmp_path / "m.onnxruntime.onnx").exists()


def test_import_stays_light() -> None:
    code = "import sys, infer_compile; print(sorted(m for m in ('onnx', 'onnxruntime', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
