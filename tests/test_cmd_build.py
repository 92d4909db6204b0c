"""`infer-compile build -c infer.toml`: a models x targets x precisions matrix in parallel processes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from infer_compile.app.build_config import load_config
from infer_compile.core.errors import UserInputError
from infer_compile.core.ir import load_onnx
from infer_compile.core.numerics import TOLERANCES, compare_outputs, random_inputs, run_onnx, within
from infer_compile.targets import load_artifact
from tests.artifact_helpers import assert_user_error, invoke, write_tiny_cnn

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

MATRIX = """\
output_dir = "out"
targets = ["onnxruntime"]
precisions = ["fp32", "fp16"]

[[models]]
path = "tiny_cnn.onnx"
input_shapes = { image = [2, 3, 32, 32] }

[[models]]
path = "broken.onnx"
precisions = ["fp32"]
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write_tiny_cnn(tmp_path / "tiny_cnn.onnx")
    (tmp_path / "broken.onnx").write_bytes(b"\x08\x07garbage")
    (tmp_path / "infer.toml").write_text(MATRIX)
    return tmp_path


@pytest.mark.slow
def test_matrix_builds_in_parallel_names_each_failure_then_hits_the_cache(project: Path) -> None:
    config, cache = project / "infer.toml", project / "cache"
    first = invoke("build", "-c", config, "-j", 2, "--cache-dir", cache, "--report", project / "build.json")
    assert first.exit_code == 1, first.output
    assert "broken/onnxruntime/fp32:" in first.stderr and "not a valid ONNX model" in first.stderr
    assert "1 of 3 job(s) failed" in first.stderr
    assert first.stdout.count("built") == 2 and "FAILED" in first.stdout

    source = load_onnx(project / "tiny_cnn.onnx")
    feeds = random_inputs(source.inputs, seed=0, dims={"batch": 2})
    reference = run_onnx(source, feeds)
    for precision in ("fp32", "fp16"):
        runner = load_artifact(project / "out" / f"tiny_cnn.onnxruntime.{precision}.onnx")
        assert runner.inputs[0].shape == (2, 3, 32, 32)  # the per-model input_shapes reached the build
        got = runner.run({"image": feeds["image"].astype(runner.inputs[0].dtype)})
        assert within(compare_outputs(reference, got), TOLERANCES[precision])

    report = json.loads((project / "build.json").read_text())
    assert report["schema"] == "infer-compile.build-matrix/1"
    statuses = {(j["model"], j["precision"]): j["status"] for j in report["jobs"]}
    assert statuses == {("tiny_cnn", "fp32"): "built", ("tiny_cnn", "fp16"): "built", ("broken", "fp32"): "failed"}
    assert report["jobs"][0]["report"]["schema"] == "infer-compile.build/2"

    second = invoke("build", "-c", config, "-j", 2, "--cache-dir", cache)
    assert second.exit_code == 1
    assert second.stdout.count("cached") == 2


def test_all_jobs_succeeding_exits_zero(project: Path) -> None:
    (project / "infer.toml").write_text(MATRIX.split("[[models]]\npath = \"broken")[0])
    result = invoke("build", "-c", project / "infer.toml", "-j", 1, "--no-cache")
    assert result.exit_code == 0, result.output
    assert not (project / "cache").exists()


@pytest.mark.parametrize("text,fragment", [
    ("targets = [\n", "not valid TOML"),
    ("target = 'onnxruntime'\n[[models]]\npath = 'm.onnx'\n", "infer.toml:1: target: unknown key"),
    ("[[models]]\npath = 'm.onnx'\nprecision = 'fp16'\n", "infer.toml:3: models[0].precision: unknown key"),
    ("[[models]]\npath = 'a.onnx'\n\n[[models]]\npath = 'b.onnx'\ntargets = ['tpu']\n",
     "infer.toml:6: models[1].targets: unknown target 'tpu'"),
    ("precisions = ['int4']\n[[models]]\npath = 'm.onnx'\n", "models[0].precisions: unknown precision 'int4'"),
    ("precisions = 'fp32'\n[[models]]\npath = 'm.onnx'\n", "infer.toml:1: precisions: expected list, got str"),
    ("output_dir = 'out'\n", "models: missing or not a list of tables"),
    ("[[models]]\nname = 'x'\n", "infer.toml:1: models[0].path: missing"),
    ("[[models]]\npath = 'm.onnx'\ninput_shapes = { image = [1, -3] }\n",
     "infer.toml:3: models[0].input_shapes: --input-shape 'image:1x-3' is not NAME:DIMS"),
    ("[[models]]\npath = 'm.onnx'\n[[models]]\npath = 'other/m.onnx'\n", "two jobs would write"),
    ("[[models]]\npath = 'm.onnx'\nshape_ranges = { batch = [8, 4, 1] }\n",
     "infer.toml:3: models[0].shape_ranges: shape range for 'batch' needs 1 <= MIN <= OPT <= MAX, got 8:4:1"),
    ("[[models]]\npath = 'm.onnx'\nshape_ranges = { batch = [0, 1, 4] }\n",
     "infer.toml:3: models[0].shape_ranges: shape range for 'batch' needs 1 <= MIN <= OPT <= MAX, got 0:1:4"),
])
def test_bad_config_names_file_line_and_key(tmp_path: Path, text: str, fragment: str) -> None:
    config = tmp_path / "infer.toml"
    config.write_text(text)
    result = invoke("build", "-c", config)
    assert_user_error(result, fragment)
    assert not (tmp_path / "build").exists()


def test_missing_config_file(tmp_path: Path) -> None:
    assert_user_error(invoke("build", "-c", tmp_path / "nope.toml"), "no such config file")


def test_example_config_builds_tiny_cnn_for_two_targets() -> None:
    jobs = load_config(EXAMPLES / "infer.toml", {"cache": False})
    assert {j.target for j in jobs} == {"onnxruntime", "openvino"}
    assert all(j.source == EXAMPLES / "tiny_cnn.onnx" and j.source.is_file() for j in jobs)


def test_config_error_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "infer.toml").write_text("[[models]]\npath = 3\n")
    with pytest.raises(UserInputError, match=r"infer.toml:2: models\[0\].path: expected str, got int"):
        load_config(tmp_path / "infer.toml", {"cache": False})


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_examples_folder_works_when_copied_with_infer_compile_on_path(tmp_path: Path) -> None:
    """examples/ copied into a project runs `infer-compile` from PATH; its build table shows paths relative to
    the working folder; without infer-compile on PATH it says what to do."""
    project = tmp_path / "project"
    shutil.copytree(EXAMPLES, project, ignore=shutil.ignore_patterns("build"))
    venv_bin = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{venv_bin}:{os.environ['PATH']}", "JOBS": "1"}
    built = subprocess.run(["make", "-C", str(project), "verify"], env=env, capture_output=True, text=True,
                           timeout=600)
    assert built.returncode == 0, built.stdout + built.stderr
    assert " build/tiny_cnn.onnxruntime.fp32.onnx" in built.stdout and str(project) + "/build" not in built.stdout
    missing = subprocess.run(["make", "-C", str(project), "clean", "verify"],
                             env={**env, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and "infer-compile: not found; pip install infer-compile" in missing.stderr


SHARDED = """\
targets = ["onnxruntime"]
precisions = ["fp32", "fp16"]

[[models]]
path = "tiny_cnn.onnx"

[[models]]
path = "tiny_cnn.onnx"
name = "wide"
input_shapes = { image = [4, 3, 32, 32] }
"""


def _runner_checkout(root: Path, name: str) -> Path:
    """A CI runner's checkout of the project: its own copy of the config and model."""
    folder = root / name
    write_tiny_cnn(folder / "tiny_cnn.onnx")
    (folder / "infer.toml").write_text(SHARDED)
    return folder


def test_list_jobs_as_a_ci_matrix_and_only(tmp_path: Path) -> None:
    config = _runner_checkout(tmp_path, "repo") / "infer.toml"
    listed = invoke("build", "-c", config, "--list-jobs", "--json")
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout) == {"include": [
        {"job": f"{model}/onnxruntime/{precision}", "model": model, "target": "onnxruntime", "precision": precision}
        for model in ("tiny_cnn", "wide") for precision in ("fp32", "fp16")]}
    only = invoke("build", "-c", config, "--list-jobs", "--json", "--only", "wide/*/fp16", "--only", "tiny_cnn/*")
    assert [entry["job"] for entry in json.loads(only.stdout)["include"]] == [
        "tiny_cnn/onnxruntime/fp32", "tiny_cnn/onnxruntime/fp16", "wide/onnxruntime/fp16"]
    assert_user_error(invoke("build", "-c", config, "--only", "wide/onnxruntime/int8"),
                      "--only wide/onnxruntime/int8: no job is named like that")
    assert_user_error(invoke("build", "-c", config, "--shard", "3/2"), "--shard '3/2' is not I/N")


@pytest.mark.parametrize("store", ["folder", "url"])
def test_two_shards_on_two_runners_share_one_cache(tmp_path: Path, store: str) -> None:
    """Two runners build a share each at the same time into one shared cache (a mounted folder, or an object
    store through fsspec: here its file:// store); a third runner then finds every job in the cache."""
    cache = tmp_path / "shared-cache"
    location = str(cache) if store == "folder" else cache.as_uri()
    command = [sys.executable, "-m", "infer_compile.app.cli", "build", "-c", "infer.toml", "-j", "1",
               "--cache-dir", location, "--report", "matrix.json"]
    runners = [_runner_checkout(tmp_path, f"runner{i}") for i in (1, 2, 3)]
    shards = [subprocess.Popen([*command, "--shard", f"{i}/2"], cwd=runners[i - 1], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True) for i in (1, 2)]
    for shard in shards:
        _, stderr = shard.communicate(timeout=600)
        assert shard.returncode == 0, stderr
    built = [[(job["model"], job["precision"]) for job in json.loads((runner / "matrix.json").read_text())["jobs"]]
             for runner in runners[:2]]
    assert built == [[("tiny_cnn", "fp32"), ("wide", "fp32")], [("tiny_cnn", "fp16"), ("wide", "fp16")]]
    last = subprocess.run(command, cwd=runners[2], capture_output=True, text=True, timeout=600)
    assert last.returncode == 0, last.stderr
    statuses = [job["status"] for job in json.loads((runners[2] / "matrix.json").read_text())["jobs"]]
    assert statuses == ["cached"] * 4
    for job in ("tiny_cnn.onnxruntime.fp32.onnx", "wide.onnxruntime.fp16.onnx"):
        built = (runners[2] / "build" / job).read_bytes()
        stored = (cache_entry_file(cache, job) if store == "folder"
                  else cache / "objects" / hashlib.sha256(built).hexdigest()).read_bytes()
        assert built == stored


def cache_entry_file(cache: Path, name: str) -> Path:
    (found,) = [path for path in (cache / "entries").glob(f"*/{name}")]
    return found
