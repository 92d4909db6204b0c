"""The TensorRT target.

Without a GPU: the builder settings derived from options (profiles, precision, levels, compatibility),
the trtexec command, engine/platform compatibility rules, deferred-build bundles written through the
CLI and read back (their ONNX runs in onnxruntime and matches the source), and the clear errors when
TensorRT or the GPU is missing. With TensorRT + an NVIDIA GPU (marked ``gpu``): tiny CNN engines at
fp32/fp16/int8 against onnxruntime, and finalize.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from infer_compile.build import BuildOptions, compile_model
from infer_compile.calibration import CalibrationSettings
from infer_compile.cli import app
from infer_compile.errors import ExitCode, TargetUnavailableError, UnsupportedError, UserInputError
from infer_compile.ir import Model, file_digest, load_onnx
from infer_compile.numerics import TOLERANCES, compare_outputs, random_inputs, run_onnx, summarize, within
from infer_compile.targets import get_target, load_artifact
from infer_compile.targets.tensorrt import TensorRtTarget
from infer_compile.targets.tensorrt_bundle import finalize_bundle, read_bundle
from infer_compile.targets.tensorrt_settings import (
    BuilderSettings,
    BuildPlatform,
    InputProfile,
    check_engine_platform,
    check_feed_shapes,
    derive_settings,
    trtexec_command,
)
from tests.builders import tiny_cnn

# int8 builds calibrate on seeded synthetic samples: its loud warning is expected here.
pytestmark = pytest.mark.filterwarnings("ignore::infer_compile.calibration.readers.CalibrationWarning")
runner = CliRunner()
RANGE = {"batch": (1, 4, 8)}
CALIBRATION = CalibrationSettings("synthetic", max_samples=8)


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def source(tiny_cnn_onnx: Path) -> Path:
    """The tiny CNN saved as ONNX (conftest's shared fixture, under this module's name for it)."""
    return tiny_cnn_onnx


def bundle_build(source: Path, out: Path, precision: str, **options) -> Path:
    """A deferred build of ``source`` through the real pipeline (calibration included for int8)."""
    calibration = CALIBRATION if precision == "int8" else None
    return compile_model(source, BuildOptions(target="trt", precision=precision, output=out, defer=True,
                                              shape_ranges=RANGE, calibration=calibration, **options)).artifact


def optimized(source: Path, tmp_path: Path, precision: str) -> Model:
    """The final graph the pipeline hands TensorRT at ``precision`` (read back from a bundle)."""
    return load_onnx(read_bundle(bundle_build(source, tmp_path / f"{precision}.engine", precision)).onnx)


# --- builder settings: the seam that needs no TensorRT -------------------------------------------------------


def test_profile_comes_from_the_shape_ranges() -> None:
    settings = derive_settings(Model.from_proto(tiny_cnn()), "fp32", RANGE, {})
    assert settings.profiles == (InputProfile("image", (1, 3, 32, 32), (4, 3, 32, 32), (8, 3, 32, 32)),)
    assert settings.notes == ()


def test_dynamic_dim_without_a_range_is_built_as_one_and_noted() -> None:
    settings = derive_settings(Model.from_proto(tiny_cnn()), "fp32", {}, {})
    assert settings.profiles == (InputProfile("image", (1, 3, 32, 32), (1, 3, 32, 32), (1, 3, 32, 32)),)
    assert len(settings.notes) == 1 and "'batch'" in settings.notes[0] and "--shape-range" in settings.notes[0]


def test_static_model_needs_no_profile() -> None:
    assert derive_settings(Model.from_proto(tiny_cnn(batch=2)), "fp32", {}, {}).profiles == ()


@pytest.mark.parametrize(("dim", "hint"), [("bacth", "dynamic dimensions: batch"),
                                            ("image", "not input name")])
def test_profile_names_must_be_dynamic_dims_of_the_inputs(dim: str, hint: str) -> None:
    with pytest.raises(UserInputError, match=f"'{dim}' names no dynamic dimension") as caught:
        derive_settings(Model.from_proto(tiny_cnn()), "fp32", {dim: (1, 2, 4)}, {})
    assert hint in caught.value.hint


def test_profile_range_must_be_ordered() -> None:
    with pytest.raises(UserInputError, match="4:2:8"):
        derive_settings(Model.from_proto(tiny_cnn()), "fp32", {"batch": (4, 2, 8)}, {})


@pytest.mark.parametrize(("precision", "missing"), [("int8", "QuantizeLinear"), ("fp16", "float16")])
def test_reduced_precision_must_be_written_in_the_graph(precision: str, missing: str) -> None:
    # A strongly typed network builds the graph's own types: an fp32 graph cannot become an int8 engine.
    with pytest.raises(UnsupportedError, match=missing):
        derive_settings(Model.from_proto(tiny_cnn()), precision, RANGE, {})


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_pipeline_graphs_carry_their_precision(source: Path, tmp_path: Path, precision: str) -> None:
    settings = derive_settings(optimized(source, tmp_path, precision), precision, RANGE, {})
    assert settings.precision == precision and settings.tf32  # TF32 only where reduced precision was asked for
    assert not derive_settings(Model.from_proto(tiny_cnn()), "fp32", RANGE, {}).tf32


def test_skipping_the_fp16_pass_is_caught_before_tensorrt(source: Path, tmp_path: Path) -> None:
    with pytest.raises(UnsupportedError, match="no float16 tensors"):
        bundle_build(source, tmp_path / "m.engine", "fp16", skip_passes=["fp16"])


@pytest.mark.parametrize(("options", "fragment"), [({"opt_level": 6}, "--trt-opt-level 6"),
                                                   ({"workspace_mib": 0}, "--trt-workspace 0"),
                                                   ({"hardware_compat": "turing"}, "'turing'")])
def test_builder_options_are_validated(options: dict, fragment: str) -> None:
    with pytest.raises(UserInputError, match=fragment):
        derive_settings(Model.from_proto(tiny_cnn()), "fp32", RANGE, options)


def test_builder_options_reach_the_settings_and_survive_json() -> None:
    options = {"opt_level": 5, "workspace_mib": 2048, "hardware_compat": "ampere+", "version_compat": True,
               "timing_cache": "ci/trt.cache"}
    settings = derive_settings(Model.from_proto(tiny_cnn()), "fp32", RANGE, options)
    assert (settings.opt_level, settings.workspace_mib, settings.hardware_compat, settings.version_compat,
            settings.timing_cache) == (5, 2048, "ampere+", True, "ci/trt.cache")
    assert BuilderSettings.from_json(json.loads(json.dumps(settings.to_json()))) == settings


def test_unreadable_settings_are_rejected() -> None:
    with pytest.raises(UserInputError, match="frobnicate"):
        BuilderSettings.from_json({"precision": "fp32", "frobnicate": 1})


def test_trtexec_command_says_the_same_as_the_settings() -> None:
    settings = BuilderSettings("int8", (InputProfile("image", (1, 3, 32, 32), (4, 3, 32, 32), (8, 3, 32, 32)),),
                               tf32=True, workspace_mib=1024, opt_level=5, hardware_compat="same-cc",
                               version_compat=True, timing_cache="timing.cache")
    assert trtexec_command(settings, "model.onnx", "model.engine") == (
        "trtexec --onnx=model.onnx --saveEngine=model.engine --stronglyTyped --skipInference "
        "--minShapes=image:1x3x32x32 --optShapes=image:4x3x32x32 --maxShapes=image:8x3x32x32 "
        "--memPoolSize=workspace:1024 --builderOptimizationLevel=5 "
        "--hardwareCompatibilityLevel=sameComputeCapability --versionCompatible --timingCacheFile=timing.cache")


def test_trtexec_quotes_input_names_with_separators() -> None:
    settings = BuilderSettings("fp32", (InputProfile("input:0", (1, 3), (2, 3), (4, 3)),))
    assert "'--minShapes='\"'\"'input:0'\"'\"':1x3'" in trtexec_command(settings, "m.onnx", "m.engine")
    assert "--noTF32" in trtexec_command(settings, "m.onnx", "m.engine")


# --- engines built elsewhere: TensorRT version and GPU rules -----------------------------------------------

BUILT = BuildPlatform("10.8.0.43", "NVIDIA A10G", "8.6")


@pytest.mark.parametrize(("here", "settings", "problem"), [
    (BUILT, {}, None),
    (BuildPlatform("10.8.0.43", "NVIDIA RTX A6000", "8.6"), {}, None),
    (BuildPlatform("10.9.0.34", "NVIDIA A10G", "8.6"), {}, "exactly TensorRT 10.8.0.43"),
    (BuildPlatform("10.9.0.34", "NVIDIA A10G", "8.6"), {"version_compat": True}, None),
    (BuildPlatform("10.7.0.23", "NVIDIA A10G", "8.6"), {"version_compat": True}, "10.x >= 10.8.0.43"),
    (BuildPlatform("11.0.0.1", "NVIDIA A10G", "8.6"), {"version_compat": True}, "10.x >= 10.8.0.43"),
    (BuildPlatform("10.8.0.43", "NVIDIA H100", "9.0"), {}, "compute capability 8.6"),
    (BuildPlatform("10.8.0.43", "NVIDIA H100", "9.0"), {"hardware_compat": "ampere+"}, None),
    (BuildPlatform("10.8.0.43", "Tesla T4", "7.5"), {"hardware_compat": "ampere+"}, "Ampere or newer"),
    (BuildPlatform("10.8.0.43", "NVIDIA L4", "8.9"), {"hardware_compat": "same-cc"}, "compute capability 8.6"),
])
def test_engine_platform_rules(here: BuildPlatform, settings: dict, problem: str | None) -> None:
    rules = BuilderSettings("fp32", **settings)
    if problem is None:
        check_engine_platform(BUILT, here, rules)
        return
    with pytest.raises(TargetUnavailableError, match=problem) as caught:
        check_engine_platform(BUILT, here, rules)
    assert caught.value.exit_code == ExitCode.UNAVAILABLE and "NVIDIA A10G" in caught.value.message


def test_inputs_outside_the_profile_are_named() -> None:
    profiles = (InputProfile("image", (1, 3, 32, 32), (4, 3, 32, 32), (8, 3, 32, 32)),)
    check_feed_shapes(profiles, {"image": np.zeros((8, 3, 32, 32), np.float32)})
    with pytest.raises(UserInputError, match=r"16x3x32x32, outside the engine's profile 1x3x32x32 \.\. 8x3x32x32"):
        check_feed_shapes(profiles, {"image": np.zeros((16, 3, 32, 32), np.float32)})


# --- deferred builds: bundles through the CLI ---------------------------------------------------------------


@pytest.fixture(scope="module")
def deferred(source: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("trt-defer")
    cache = out / "ci.cache"
    cache.write_bytes(b"timing cache bytes from an earlier GPU build")
    result = invoke(source, "--target", "trt", "--defer", "-o", out / "model.engine", "--shape-range", "batch=1:4:8",
                    "--trt-opt-level", "5", "--trt-workspace", "512", "--trt-hardware-compat", "ampere+",
                    "--trt-version-compat", "--timing-cache", cache, "--no-tune")
    assert result.exit_code == 0, result.output
    return result, out / "model.trtbundle"


def test_defer_writes_a_bundle_and_prints_trtexec(deferred) -> None:
    result, bundle = deferred
    assert sorted(p.name for p in bundle.iterdir()) == ["manifest.json", "model.onnx", "settings.json", "timing.cache"]
    assert not bundle.with_suffix(".engine").exists()
    assert "trtexec --onnx=model.onnx --saveEngine=model.engine --stronglyTyped" in result.stdout
    assert f"infer-compile finalize {bundle}" in result.stdout
    beside = json.loads(bundle.with_name("model.trtbundle.manifest.json").read_text())
    assert (beside["target"], beside["format"], beside["precision"]) == ("trt", "trtbundle", "fp32")


def test_bundle_round_trips(deferred, source: Path) -> None:
    _, bundle = deferred
    found = read_bundle(bundle)
    assert found.settings == BuilderSettings(
        "fp32", (InputProfile("image", (1, 3, 32, 32), (4, 3, 32, 32), (8, 3, 32, 32)),), workspace_mib=512,
        opt_level=5, hardware_compat="ampere+", version_compat=True, timing_cache="timing.cache")
    assert found.engine_name == "model.engine"
    assert found.manifest["build"]["source"]["sha256"] == file_digest(source)
    assert (bundle / "timing.cache").read_bytes() == b"timing cache bytes from an earlier GPU build"
    reference = Model.from_proto(tiny_cnn())
    feeds = random_inputs(reference.inputs, seed=3, dims={"batch": 4})
    expected = run_onnx(reference, feeds)
    comparisons = compare_outputs(expected, run_onnx(load_onnx(found.onnx), feeds))
    assert within(expected, comparisons, TOLERANCES["fp32"]), summarize(comparisons)


def test_int8_bundle_carries_the_calibrated_qdq_graph(source: Path, tmp_path: Path) -> None:
    found = read_bundle(bundle_build(source, tmp_path / "q.engine", "int8"))
    graph = load_onnx(found.onnx)
    assert graph.op_histogram()["QuantizeLinear"] > 0 and found.settings.precision == "int8"
    reference = Model.from_proto(tiny_cnn())
    feeds = random_inputs(reference.inputs, seed=1, dims={"batch": 2})
    expected = run_onnx(reference, feeds)
    comparisons = compare_outputs(expected, run_onnx(graph, feeds))
    assert within(expected, comparisons, TOLERANCES["int8"]), summarize(comparisons)


def test_headline_int8_command_defers(source: Path, tmp_path: Path) -> None:
    result = invoke(source, "--target", "trt", "--int8", "--calib", "synthetic", "--defer", "-o", tmp_path / "m.engine",
                    "--shape-range", "batch=1:2:4", "--no-tune")
    assert result.exit_code == 0, result.output
    found = read_bundle(tmp_path / "m.trtbundle")
    assert found.settings.precision == "int8" and "QuantizeLinear" in load_onnx(found.onnx).op_histogram()


def test_damaged_bundles_are_rejected(deferred, tmp_path: Path) -> None:
    _, bundle = deferred
    copy = tmp_path / "copy.trtbundle"
    shutil.copytree(bundle, copy)
    with (copy / "model.onnx").open("ab") as fh:
        fh.write(b"\0")
    result = invoke("finalize", copy)
    assert result.exit_code == ExitCode.USER_ERROR and "does not match the bundle manifest" in result.stderr
    (copy / "manifest.json").unlink()
    result = invoke("finalize", copy)
    assert result.exit_code == ExitCode.USER_ERROR and "not a TensorRT build bundle" in result.stderr


def test_loading_a_bundle_says_to_finalize(deferred) -> None:
    _, bundle = deferred
    manifest = json.loads(bundle.with_name("model.trtbundle.manifest.json").read_text())
    with pytest.raises(UserInputError, match="deferred TensorRT build bundle") as caught:
        TensorRtTarget().load(bundle, manifest)
    assert "finalize" in caught.value.hint


def test_defer_is_only_for_tensorrt(source: Path, tmp_path: Path) -> None:
    result = invoke(source, "--target", "onnxruntime", "--defer", "-o", tmp_path / "m.onnx", "--no-tune")
    assert result.exit_code == ExitCode.USER_ERROR and "cannot defer" in result.stderr
    assert list(tmp_path.iterdir()) == []


# --- no TensorRT or no GPU here: one clear line, before any work ---------------------------------------------

needs_no_gpu = pytest.mark.skipif(get_target("trt").availability().available,
                                  reason="TensorRT and a GPU are present: the unavailable paths cannot be seen here")


@needs_no_gpu
def test_availability_names_what_is_missing() -> None:
    detail = get_target("tensorrt").availability().detail
    assert "tensorrt" in detail or "GPU" in detail or "driver" in detail, detail


@needs_no_gpu
def test_trt_without_gpu_fails_before_reading_the_model(tmp_path: Path) -> None:
    corrupt = tmp_path / "not_a_model.onnx"
    corrupt.write_bytes(b"garbage")  # exit 4, not 1: availability is checked before the model is touched
    result = invoke(corrupt, "--target", "trt", "-o", tmp_path / "out" / "m.engine")
    assert result.exit_code == ExitCode.UNAVAILABLE, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [result.stderr.splitlines()[0]] and "target 'trt' is not available here" in errors[0]
    assert "--defer" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


@needs_no_gpu
def test_finalize_without_gpu_is_one_clear_line(deferred, tmp_path: Path) -> None:
    _, bundle = deferred
    result = invoke("finalize", bundle, "-o", tmp_path / "m.engine")
    assert result.exit_code == ExitCode.UNAVAILABLE, result.output
    assert result.stderr.startswith("error: cannot build the engine here") and "GPU" in result.stderr
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(TargetUnavailableError):
        finalize_bundle(bundle, tmp_path / "m.engine")


# --- TensorRT + NVIDIA GPU ---------------------------------------------------------------------------------

_status = get_target("trt").availability()
needs_gpu = pytest.mark.skipif(not _status.available, reason=f"needs TensorRT and an NVIDIA GPU: {_status.detail}")


@pytest.fixture(scope="module")
def engines(source: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("trt-engines")
    return {p: compile_model(source, BuildOptions(
        target="trt", precision=p, output=out / f"{p}.engine", shape_ranges=RANGE,
        calibration=CALIBRATION if p == "int8" else None)).artifact for p in ("fp32", "fp16", "int8")}


def assert_matches_onnxruntime(engine: Path, precision: str) -> None:
    reference = Model.from_proto(tiny_cnn())
    feeds = random_inputs(reference.inputs, seed=5, dims={"batch": 4})
    expected = run_onnx(reference, feeds)
    comparisons = compare_outputs(expected, load_artifact(engine).run(feeds))
    assert within(expected, comparisons, TOLERANCES[precision]), summarize(comparisons)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engine_matches_onnxruntime(engines: dict[str, Path], precision: str) -> None:
    manifest = json.loads(engines[precision].with_name(f"{precision}.engine.manifest.json").read_text())
    assert manifest["tensorrt"]["gpu"] and manifest["tensorrt"]["compute_capability"]
    assert_matches_onnxruntime(engines[precision], precision)


@pytest.mark.gpu
@needs_gpu
def test_finalize_builds_the_bundle_and_fills_the_timing_cache(source: Path, tmp_path: Path) -> None:
    bundle = bundle_build(source, tmp_path / "m.engine", "int8")
    cache = tmp_path / "trt.cache"
    cache.write_bytes(b"not a timing cache")  # discarded with a warning, not a failure
    result = invoke("finalize", bundle, "--timing-cache", cache)
    assert result.exit_code == 0, result.output
    assert cache.read_bytes() != b"not a timing cache"
    assert_matches_onnxruntime(tmp_path / "m.engine", "int8")
