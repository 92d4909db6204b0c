"""`infer-compile run`: outputs of a real artifact on given or random inputs, and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from infer_compile.core.ir import load_onnx
from infer_compile.core.numerics import TOLERANCES, compare_outputs, random_inputs, run_onnx, within
from tests.artifact_helpers import assert_user_error, build_artifact, invoke, write_tiny_cnn


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("run")
    source = write_tiny_cnn(root / "tiny_cnn.onnx")
    return source, build_artifact(source, root / "tiny_cnn.ort.onnx").artifact


def source_outputs(source: Path, feeds: dict) -> dict:
    return run_onnx(load_onnx(source), feeds)


def assert_matches_source(source: Path, feeds: dict, out: Path) -> None:
    with np.load(out) as saved:
        got = {k: saved[k] for k in saved.files}
    ref = source_outputs(source, feeds)
    assert within(compare_outputs(ref, got), TOLERANCES["fp32"])


@pytest.mark.parametrize("form", ["bare", "named", "npz"])
def test_run_with_input_files_writes_outputs_matching_the_source(built, tmp_path: Path, form: str) -> None:
    source, artifact = built
    x = np.random.default_rng(3).standard_normal((2, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "inputs.npz", image=x)
    arg = {"bare": tmp_path / "x.npy", "named": f"image={tmp_path / 'x.npy'}", "npz": tmp_path / "inputs.npz"}[form]
    out = tmp_path / "out.npz"
    result = invoke("run", artifact, "--input", arg, "-o", out)
    assert result.exit_code == 0, result.output
    assert "logits" in result.stdout and "2x10" in result.stdout
    assert_matches_source(source, {"image": x}, out)


def test_run_without_inputs_uses_seeded_random_inputs(built, tmp_path: Path) -> None:
    source, artifact = built
    out = tmp_path / "out.npz"
    result = invoke("run", artifact, "--seed", 5, "--batch-size", 3, "-o", out)
    assert result.exit_code == 0, result.output
    assert "random inputs (seed 5)" in result.stderr
    specs = load_onnx(source).inputs
    assert_matches_source(source, random_inputs(specs, seed=5, dims={"batch": 3}), out)


def test_float64_input_is_cast_to_the_model_dtype(built, tmp_path: Path) -> None:
    source, artifact = built
    x = np.random.default_rng(4).standard_normal((1, 3, 32, 32))
    np.save(tmp_path / "x.npy", x)
    result = invoke("run", artifact, "-i", tmp_path / "x.npy", "-o", tmp_path / "out.npz")
    assert result.exit_code == 0, result.output
    assert_matches_source(source, {"image": x.astype(np.float32)}, tmp_path / "out.npz")


def test_damaged_artifact_is_a_clear_error(built, tmp_path: Path) -> None:
    _, artifact = built
    broken = tmp_path / artifact.name
    broken.write_bytes(artifact.read_bytes()[:100])
    (tmp_path / (artifact.name + ".manifest.json")).write_bytes(
        artifact.with_name(artifact.name + ".manifest.json").read_bytes())
    assert_user_error(invoke("run", broken), "cannot load it as a onnxruntime artifact")


def test_damaged_manifest_is_a_clear_error(built, tmp_path: Path) -> None:
    _, artifact = built
    copy = tmp_path / artifact.name
    copy.write_bytes(artifact.read_bytes())
    (tmp_path / (artifact.name + ".manifest.json")).write_text("{not json")
    assert_user_error(invoke("run", copy), "not a valid infer-compile manifest")


def test_unknown_file_type_and_missing_artifact(tmp_path: Path) -> None:
    odd = tmp_path / "model.weird"
    odd.write_bytes(b"\0" * 10)
    assert_user_error(invoke("run", odd), "cannot tell which target wrote it")
    assert_user_error(invoke("run", tmp_path / "absent.onnx"), "no such file")


@pytest.mark.parametrize("case,fragment", [
    ("pickled", "pickled Python objects"),
    ("npz-objects", "array 'image' in"),
    ("text", "not a .npy/.npz file (no numpy header"),
    ("shape", "has shape [1, 3, 16, 16]"),
    ("name", "the model has no input 'pixels'"),
    ("dtype", "is int64, the model expects float32"),
    ("two", "2 unnamed input file(s) but only 1"),
    ("output", "outputs are written as .npz"),
])
def test_bad_inputs_are_clear_errors(built, tmp_path: Path, case: str, fragment: str) -> None:
    _, artifact = built
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.savez(tmp_path / "obj.npz", image=np.array([{"a": 1}], dtype=object))
    (tmp_path / "text.npy").write_text("0.1 0.2 0.3\n")
    np.save(tmp_path / "small.npy", np.zeros((1, 3, 16, 16), np.float32))
    np.save(tmp_path / "ints.npy", np.zeros((1, 3, 32, 32), np.int64))
    np.save(tmp_path / "ok.npy", np.zeros((1, 3, 32, 32), np.float32))
    args = {
        "pickled": ["-i", tmp_path / "obj.npy"],
        "npz-objects": ["-i", tmp_path / "obj.npz"],
        "text": ["-i", tmp_path / "text.npy"],
        "shape": ["-i", tmp_path / "small.npy"],
        "name": ["-i", f"pixels={tmp_path / 'ok.npy'}"],
        "dtype": ["-i", tmp_path / "ints.npy"],
        "two": ["-i", tmp_path / "ok.npy", "-i", tmp_path / "ok.npy"],
        "output": ["-i", tmp_path / "ok.npy", "-o", tmp_path / "out.txt"],
    }[case]
    result = invoke("run", artifact, *args)
    assert_user_error(result, fragment)
    assert case.startswith(("pickled", "npz")) or "pickle" not in result.stderr  # text is not called a pickle
    assert not (tmp_path / "out.txt").exists()
