"""The TensorRT target.

Without a GPU: the builder settings derived from options (profiles, precision, levels, compatibility),
the trtexec command, engine/platform compatibility rules, deferred-build bundles written through the
CLI and read back (their ONNX runs in onnxruntime and matches the source), and the clear errors when
TensorRT or the GPU is missing. With TensorRT + an NVIDIA GPU (marked ``gpu``): tiny CNN engines at
fp32/fp16/int8 against onnxruntime, and finalize.
"""

from __future__ import annotations

import json
import re
import shutil
from contextlib import closing
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from infer_compile.app.build import BuildOptions, compile_model
from infer_compile.app.cli import app
from infer_compile.calibration import CalibrationSettings
from infer_compile.core.artifacts import file_digest
from infer_compile.core.errors import ExitCode, TargetUnavailableError, UnsupportedError, UserInputError
from infer_compile.core.ir import Model, load_onnx
from infer_compile.core.manifest import read_manifest
from infer_compile.core.numerics import TOLERANCES, compare_outputs, random_inputs, run_onnx, summarize, within
from infer_compile.core.shapes import ShapeRange
from infer_compile.targets import get_target, load_artifact
from infer_compile.targets.tensorrt import TensorRtTarget
from infer_compile.targets.tensorrt_bundle import finalize_bundle, manifest_digest, read_bundle
from infer_compile.targets.tensorrt_runner import device_memory
from infer_compile.targets.tensorrt_settings import (
    BuilderSettings,
    BuildPlatform,
    InputProfile,
    check_build_platform,
    check_engine_platform,
    check_feed_shapes,
    derive_settings,
    trtexec_command,
)
from tests.builders import make_model, tensor, tiny_cnn

# int8 builds calibrate on seeded synthetic samples: its loud warning is expected here.
pytestmark = pytest.mark.filterwarnings("ignore::infer_compile.calibration.readers.CalibrationWarning")
runner = CliRunner()
RANGE = {"batch": ShapeRange(1, 4, 8)}
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
        derive_settings(Model.from_proto(tiny_cnn()), "fp32", {dim: ShapeRange(1, 2, 4)}, {})
    assert hint in caught.value.hint


def test_profile_range_must_be_ordered() -> None:
    with pytest.raises(UserInputError, match="4:2:8"):
        derive_settings(Model.from_proto(tiny_cnn()), "fp32", {"batch": ShapeRange(4, 2, 8)}, {})


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
                                                   ({"workspace_mib": 10**15}, "--trt-workspace 1000000000000000"),
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


@pytest.mark.parametrize(("field", "value", "fragment"), [
    ("precision", "int3", "precision 'int3'"),
    ("opt_level", 99, "--trt-opt-level 99"),
    ("opt_level", "3", "--trt-opt-level must be a whole number, not '3'"),
    ("opt_level", True, "--trt-opt-level must be a whole number, not True"),
    ("workspace_mib", 1e15, "--trt-workspace 1000000000000000.0"),
    ("workspace_mib", -1, "--trt-workspace -1"),
    ("hardware_compat", "any", "--trt-hardware-compat 'any'"),
    ("version_compat", "yes", "--trt-version-compat must be true or false"),
    ("timing_cache", 7, "--timing-cache must be a path"),
    ("profiles", [{"name": "image", "min": [8, 3], "opt": [4, 3], "max": [1, 3]}], "'image' axis 0 is 8:4:1"),
    ("profiles", [{"name": "image", "min": [1], "opt": [1, 3], "max": [1, 3]}], "mixes ranks 1/2/2"),
    ("profiles", [{"name": "image", "min": [1]}], "malformed profiles"),
])
def test_settings_from_json_obey_the_command_line_rules(field: str, value: object, fragment: str) -> None:
    # The rules live in BuilderSettings itself: the CLI path (derive_settings) and bundles share them.
    with pytest.raises(UserInputError, match=re.escape(fragment)):
        BuilderSettings.from_json({"precision": "fp32", field: value})


@pytest.mark.parametrize(("major", "typing"), [(10, " --stronglyTyped"), (11, "")])
def test_trtexec_command_says_the_same_as_the_settings(major: int, typing: str) -> None:
    # 10.x builds the graph's own types only with --stronglyTyped; 11.x always does and deprecated the flag.
    # Neither line has --int8/--calib: under --stronglyTyped 10.x turns --int8 off, and 11.x removed both.
    settings = BuilderSettings("int8", (InputProfile("image", (1, 3, 32, 32), (4, 3, 32, 32), (8, 3, 32, 32)),),
                               tf32=True, workspace_mib=1024, opt_level=5, hardware_compat="same-cc",
                               version_compat=True, timing_cache="timing.cache")
    assert trtexec_command(settings, "model.onnx", "model.engine", major) == (
        f"trtexec --onnx=model.onnx --saveEngine=model.engine{typing} --skipInference "
        "--minShapes=image:1x3x32x32 --optShapes=image:4x3x32x32 --maxShapes=image:8x3x32x32 "
        "--memPoolSize=workspace:1024 --builderOptimizationLevel=5 "
        "--hardwareCompatibilityLevel=sameComputeCapability --versionCompatible --timingCacheFile=timing.cache")


def test_trtexec_quotes_input_names_with_separators() -> None:
    settings = BuilderSettings("fp32", (InputProfile("input:0", (1, 3), (2, 3), (4, 3)),))
    assert "'--minShapes='\"'\"'input:0'\"'\"':1x3'" in trtexec_command(settings, "m.onnx", "m.engine", 10)
    assert "--noTF32" in trtexec_command(settings, "m.onnx", "m.engine", 10)


# --- engines built elsewhere: TensorRT version and GPU rules -----------------------------------------------

BUILT = BuildPlatform("10.8.0.43", "NVIDIA A10G", "8.6")


@pytest.mark.parametrize(("here", "settings", "problem"), [
    (BUILT, {}, None),
    (BuildPlatform("10.8.0.43", "NVIDIA RTX A6000", "8.6"), {}, None),
    (BuildPlatform("10.9.0.34", "NVIDIA A10G", "8.6"), {}, "exactly TensorRT 10.8.0.43"),
    (BuildPlatform("10.9.0.34", "NVIDIA A10G", "8.6"), {"version_compat": True}, None),
    (BuildPlatform("10.7.0.23", "NVIDIA A10G", "8.6"), {"version_compat": True}, "TensorRT >= 10.8.0.43"),
    # NVIDIA's 11.x "Engine Compatibility" page: version-compatible 10.x engines run on TensorRT 11.
    (BuildPlatform("11.4.0.106", "NVIDIA A10G", "8.6"), {"version_compat": True}, None),
    (BuildPlatform("11.4.0.106", "NVIDIA A10G", "8.6"), {}, "exactly TensorRT 10.8.0.43"),
    (BuildPlatform("12.0.0.1", "NVIDIA A10G", "8.6"), {"version_compat": True}, "10.x to 11.x only"),
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


def test_version_compat_reach_follows_nvidia_docs() -> None:
    # 10.x docs: "engines built with TensorRT 8 work with TensorRT 9 and TensorRT 10 runtimes" (from 8.6 on).
    rules = BuilderSettings("fp32", version_compat=True)
    old = BuildPlatform("8.6.1.6", "NVIDIA A10G", "8.6")
    check_engine_platform(old, BuildPlatform("10.13.0.35", "NVIDIA A10G", "8.6"), rules)
    with pytest.raises(TargetUnavailableError, match=re.escape("8.x to 10.x only")):
        check_engine_platform(old, BuildPlatform("11.1.0.106", "NVIDIA A10G", "8.6"), rules)


@pytest.mark.parametrize(("settings", "here", "problem"), [
    ({}, BuildPlatform("10.8.0.43", "Tesla P100", "6.0"), None),
    ({"hardware_compat": "same-cc"}, BuildPlatform("10.8.0.43", "NVIDIA A10G", "8.6"),
     "same-cc needs TensorRT >= 10.9; this is TensorRT 10.8.0.43"),
    ({"hardware_compat": "same-cc"}, BuildPlatform("10.9.0.34", "NVIDIA A10G", "8.6"), None),
    ({"hardware_compat": "same-cc"}, BuildPlatform("10.9.0.34", "Tesla T4", "7.5"), None),
    ({"hardware_compat": "same-cc"}, BuildPlatform("10.9.0.34", "Tesla V100", "7.0"),
     "built on Turing or newer GPUs (compute capability >= 7.5); this is Tesla V100 (sm 7.0)"),
    ({"hardware_compat": "ampere+"}, BuildPlatform("10.8.0.43", "Tesla T4", "7.5"),
     "built on Ampere or newer GPUs (compute capability >= 8.0); this is Tesla T4 (sm 7.5)"),
    ({"hardware_compat": "ampere+"}, BuildPlatform("11.4.0.106", "NVIDIA H100", "9.0"), None),
])
def test_build_platform_is_checked_before_building(settings: dict, here: BuildPlatform, problem: str | None) -> None:
    # TensorRT 10.8 has no HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY (AttributeError mid-build), and a
    # GPU too old for the level only gives "could not build the engine": one line before any work instead.
    rules = BuilderSettings("fp32", **settings)
    if problem is None:
        check_build_platform(rules, here)
        return
    with pytest.raises(TargetUnavailableError, match=re.escape(problem)) as caught:
        check_build_platform(rules, here)
    assert caught.value.exit_code == ExitCode.UNAVAILABLE


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
    line = "(TensorRT {}.x, in a copy of the bundle) trtexec --onnx=model.onnx --saveEngine=model.engine {}"
    assert line.format(10, "--stronglyTyped --skipInference") in result.stdout
    assert line.format(11, "--skipInference") in result.stdout
    assert "--int8" not in result.stdout and "--calib" not in result.stdout
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
    assert within(comparisons, TOLERANCES["fp32"]), summarize(comparisons)


def test_int8_bundle_carries_the_calibrated_qdq_graph(source: Path, tmp_path: Path) -> None:
    found = read_bundle(bundle_build(source, tmp_path / "q.engine", "int8"))
    graph = load_onnx(found.onnx)
    assert graph.op_histogram()["QuantizeLinear"] > 0 and found.settings.precision == "int8"
    reference = Model.from_proto(tiny_cnn())
    feeds = random_inputs(reference.inputs, seed=1, dims={"batch": 2})
    expected = run_onnx(reference, feeds)
    comparisons = compare_outputs(expected, run_onnx(graph, feeds))
    assert within(comparisons, TOLERANCES["int8"]), summarize(comparisons)


def test_headline_int8_command_defers(source: Path, tmp_path: Path) -> None:
    result = invoke(source, "--target", "trt", "--int8", "--calib", "synthetic", "--defer", "-o", tmp_path / "m.engine",
                    "--shape-range", "batch=1:2:4", "--no-tune")
    assert result.exit_code == 0, result.output
    found = read_bundle(tmp_path / "m.trtbundle")
    assert found.settings.precision == "int8" and "QuantizeLinear" in load_onnx(found.onnx).op_histogram()


def test_removed_manifest_is_not_a_bundle(deferred, tmp_path: Path) -> None:
    copy = shutil.copytree(deferred[1], tmp_path / "copy.trtbundle")
    (copy / "manifest.json").unlink()
    result = invoke("finalize", copy)
    assert result.exit_code == ExitCode.USER_ERROR and "not a TensorRT build bundle" in result.stderr


def edit_json(path: Path, change) -> None:
    body = json.loads(path.read_text())
    change(body)
    path.write_text(json.dumps(body))


def resign(bundle: Path) -> None:
    """Recompute every digest, as someone editing a bundle carefully would: only the rules then stop them."""
    def sign(manifest: dict) -> None:
        manifest["files"] = {name: file_digest(bundle / name) for name in manifest["files"]}
        manifest["sha256"] = manifest_digest(manifest)
    edit_json(bundle / "manifest.json", sign)


def assert_finalize_refuses(bundle: Path, *fragments: str) -> None:
    """finalize stops on the bundle (exit 1, one line) before it asks whether TensorRT is here."""
    result = invoke("finalize", bundle)
    assert result.exit_code == ExitCode.USER_ERROR, result.output
    lines = result.stderr.strip().splitlines()
    assert len([line for line in lines if line.startswith("error:")]) == 1 and "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    assert "cannot build the engine here" not in result.stderr and "not installed" not in result.stderr
    assert not bundle.with_name("model.engine").exists()


def _append(path: Path) -> None:
    with path.open("ab") as fh:
        fh.write(b"\0")


@pytest.mark.parametrize(("name", "damage"), [
    ("model.onnx", _append),
    ("timing.cache", lambda p: p.write_bytes(b"other timings")),
    ("settings.json", lambda p: edit_json(p, lambda s: s.update(timing_cache="/etc/passwd"))),
    ("settings.json", lambda p: edit_json(p, lambda s: s.update(opt_level=99))),
    ("manifest.json", lambda p: edit_json(p, lambda m: m.update(engine="../../evil.engine"))),
    ("manifest.json", lambda p: edit_json(p, lambda m: m["build"].update(target="openvino"))),
    ("manifest.json", lambda p: edit_json(p, lambda m: m["files"].pop("settings.json"))),
    ("timing.cache", Path.unlink),
])
def test_every_bundle_file_is_under_the_digest(deferred, tmp_path: Path, name: str, damage) -> None:
    copy = shutil.copytree(deferred[1], tmp_path / "copy.trtbundle")
    damage(copy / name)
    assert_finalize_refuses(copy, "tampered")
    with pytest.raises(UserInputError, match="tampered"):
        finalize_bundle(copy)  # the API too, before TensorRT is looked for


@pytest.mark.parametrize(("change", "fragment"), [
    (lambda s: s.update(opt_level=99), "settings.json: --trt-opt-level 99 is out of range"),
    (lambda s: s.update(workspace_mib=1e15), "settings.json: --trt-workspace 1000000000000000.0"),
    (lambda s: s.update(precision="int3"), "settings.json: precision 'int3'"),
    (lambda s: s.update(hardware_compat="volta+"), "settings.json: --trt-hardware-compat 'volta+'"),
    (lambda s: s["profiles"][0].update(min=[16, 3, 32, 32]), "'image' axis 0 is 16:4:8"),
    (lambda s: s.update(timing_cache="/tmp/trt.cache"), "names timing cache '/tmp/trt.cache'"),
    (lambda s: s.update(timing_cache="../timing.cache"), "names timing cache '../timing.cache'"),
])
def test_resigned_settings_pass_the_command_line_rules(deferred, tmp_path: Path, change, fragment: str) -> None:
    copy = shutil.copytree(deferred[1], tmp_path / "copy.trtbundle")
    edit_json(copy / "settings.json", change)
    resign(copy)
    assert_finalize_refuses(copy, fragment)


@pytest.mark.parametrize(("change", "fragment"), [
    (lambda m: m.update(engine="../../evil.engine"), "names engine '../../evil.engine'"),
    (lambda m: m.update(engine=".."), "names engine '..'"),
    (lambda m: m["files"].update({"../outside": m["files"]["model.onnx"]}), "lists '../outside'"),
    (lambda m: m["files"].update({"/etc/hostname": m["files"]["model.onnx"]}), "lists '/etc/hostname'"),
])
def test_resigned_manifest_paths_stay_inside_the_bundle(deferred, tmp_path: Path, change, fragment: str) -> None:
    copy = shutil.copytree(deferred[1], tmp_path / "copy.trtbundle")
    edit_json(copy / "manifest.json", change)
    edit_json(copy / "manifest.json", lambda m: m.update(sha256=manifest_digest(m)))
    assert_finalize_refuses(copy, fragment)


@pytest.mark.parametrize(("version", "fragment"), [("abc", "bundle version 'abc' is not a version number"),
                                                   (None, "bundle version None"), (1, "bundle format v1"),
                                                   (99, "bundle format v99")])
def test_bundle_version_is_checked_in_one_line(deferred, tmp_path: Path, version, fragment: str) -> None:
    copy = shutil.copytree(deferred[1], tmp_path / "copy.trtbundle")
    edit_json(copy / "manifest.json", lambda m: m.update(version=version))
    assert_finalize_refuses(copy, fragment)


def test_files_beside_the_listed_ones_are_allowed(deferred, tmp_path: Path) -> None:
    # trtexec users run the recorded line inside the bundle, which saves model.engine there.
    copy = shutil.copytree(deferred[1], tmp_path / "copy.trtbundle")
    (copy / "model.engine").write_bytes(b"an engine trtexec built")
    assert read_bundle(copy).settings.timing_cache == "timing.cache"


def test_loading_a_bundle_says_to_finalize(deferred) -> None:
    _, bundle = deferred
    with pytest.raises(UserInputError, match="deferred TensorRT build bundle") as caught:
        TensorRtTarget().load(bundle, read_manifest(bundle))
    assert "finalize" in caught.value.hint


def test_option_values_are_checked_before_the_model_is_read(tmp_path: Path) -> None:
    corrupt = tmp_path / "not_a_model.onnx"
    corrupt.write_bytes(b"garbage")
    result = invoke(corrupt, "--target", "trt", "--defer", "--trt-opt-level", "9", "-o", tmp_path / "m.engine")
    assert result.exit_code == ExitCode.USER_ERROR and "--trt-opt-level 9 is out of range" in result.stderr
    assert not (tmp_path / "m.trtbundle").exists()


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


def test_cuda_python_that_cannot_use_the_driver_is_passed_over() -> None:
    # cuda-python 13 on a machine whose driver it cannot use (here: none; in the field: a CUDA 12 driver) answers
    # cudaGetDeviceCount with cudaErrorInsufficientDriver: the runner asks before choosing it, then tries torch.
    runtime = pytest.importorskip("cuda.bindings.runtime", reason="cuda-python is not installed")
    torch = pytest.importorskip("torch", reason="torch is not installed")
    err, _ = runtime.cudaGetDeviceCount()
    if err == runtime.cudaError_t.cudaSuccess or torch.cuda.is_available():
        pytest.skip("cuda-python or torch can use a GPU here")
    with pytest.raises(TargetUnavailableError) as caught:
        device_memory()
    assert f"cuda-python cannot use this driver ({err.name})" in caught.value.message
    assert "torch has no CUDA" in caught.value.message
    assert "pip install 'cuda-python>=12.6,<13'" in caught.value.hint


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
    assert within(comparisons, TOLERANCES[precision]), summarize(comparisons)


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
    before = {p.name: p.read_bytes() for p in bundle.iterdir()}
    cache = tmp_path / "trt.cache"
    cache.write_bytes(b"not a timing cache")  # discarded with a warning, not a failure
    result = invoke("finalize", bundle, "--timing-cache", cache)
    assert result.exit_code == 0, result.output
    assert cache.read_bytes() != b"not a timing cache"
    assert {p.name: p.read_bytes() for p in bundle.iterdir()} == before  # finalize only reads the bundle
    read_bundle(bundle)  # and so it still verifies
    assert_matches_onnxruntime(tmp_path / "m.engine", "int8")


@pytest.mark.gpu
@needs_gpu
def test_data_dependent_output_shape_runs(tmp_path: Path) -> None:
    # NonZero's output length depends on the values: the engine says -1 there; the output allocator sizes it.
    proto = make_model([onnx.helper.make_node("NonZero", ["x"], ["where"])], [tensor("x", [6])],
                       [tensor("where", [1, None], onnx.TensorProto.INT64)])
    source = tmp_path / "nonzero.onnx"
    onnx.save(proto, source)
    engine = compile_model(source, BuildOptions(target="trt", output=tmp_path / "nonzero.engine")).artifact
    with closing(load_artifact(engine)) as runner:
        for values in ([0, 1, 0, 2, 3, 0], [1, 1, 1, 1, 1, 1], [0] * 6):
            feeds = {"x": np.array(values, np.float32)}
            np.testing.assert_array_equal(runner.run(feeds)["where"], run_onnx(Model.from_proto(proto), feeds)["where"])
        runner.close()  # twice is fine: the stream is destroyed once
