"""--precision auto: every precision the target runs is built and timed here; the fastest accurate one is kept."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import onnx
import pytest

from infer_compile.app.build import BuildOptions, BuildResult, compile_model
from infer_compile.app.verification import for_runner
from infer_compile.calibration import CalibrationSettings
from infer_compile.core.errors import AccuracyError, UserInputError
from infer_compile.core.ir import Model
from infer_compile.core.manifest import read_manifest
from infer_compile.core.numerics import TOLERANCES, compare_outputs, random_inputs, run_onnx, within
from infer_compile.targets import load_artifact


def _auto(source: Path, calib: CalibrationSettings, out: Path, budget: str) -> BuildResult:
    return compile_model(source, BuildOptions(target="onnxruntime", precision="auto", output=out, calibration=calib,
                                              pass_options={"accuracy_budget": budget}, tune_time=1.0))


def test_auto_builds_every_precision_and_keeps_one_that_meets_the_budget(
        tiny_cnn_onnx: Path, tiny_cnn_calib: CalibrationSettings, tmp_path: Path) -> None:
    result = _auto(tiny_cnn_onnx, tiny_cnn_calib, tmp_path / "m.onnx", "cosine>=0.999")
    rows = result.manifest.precision_choice
    assert [r["precision"] for r in rows] == ["fp32", "fp16", "int8"]  # what onnxruntime runs; int8: --calib given
    chosen = [r for r in rows if r["chosen"]]
    assert len(chosen) == 1 and chosen[0]["meets_budget"] and chosen[0]["cosine"] >= 0.999
    assert all("median_ms" in r for r in rows if r["meets_budget"])
    precision = chosen[0]["precision"]
    assert result.manifest.precision == precision == read_manifest(result.artifact).precision  # the table is written
    reference = Model.from_proto(onnx.load(tiny_cnn_onnx))
    feeds = random_inputs(reference.inputs, seed=3, dims={"batch": 2})
    runner = load_artifact(result.artifact)
    assert within(compare_outputs(run_onnx(reference, feeds), runner.run(for_runner(runner, feeds))),
                  TOLERANCES[precision])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.manifest.json"]  # no scratch left


def test_auto_needs_the_final_check(tiny_cnn_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="judges each precision by its final check, which is off"):
        compile_model(tiny_cnn_onnx, BuildOptions(target="onnxruntime", precision="auto", output=tmp_path / "m.onnx",
                                                  final_check=False))
    assert list(tmp_path.iterdir()) == []


def test_a_budget_no_precision_meets_fails_and_writes_nothing(
        tiny_cnn_onnx: Path, tiny_cnn_calib: CalibrationSettings, tmp_path: Path) -> None:
    with pytest.raises(AccuracyError, match="no precision builds within the accuracy budget"):
        _auto(tiny_cnn_onnx, tiny_cnn_calib, tmp_path / "m.onnx", "max-abs<=0")
    assert list(tmp_path.iterdir()) == []


def test_the_artifact_kept_is_the_candidate_judged_and_each_candidate_is_the_explicit_build(
        tiny_cnn_onnx: Path, tiny_cnn_calib: CalibrationSettings, tmp_path: Path) -> None:
    cache, out = tmp_path / "cache", tmp_path / "out" / "m.onnx"
    options = BuildOptions(target="onnxruntime", precision="auto", output=out, calibration=tiny_cnn_calib,
                           pass_options={"accuracy_budget": "cosine>=0.999"}, tune_time=1.0, cache_dir=cache)
    first = compile_model(tiny_cnn_onnx, options)
    assert first.manifest.autotune  # tuned as an explicit build is, before it was timed and kept
    again = compile_model(tiny_cnn_onnx, options)  # the candidates come from the cache (timing may pick another)
    assert again.cache == "hit"
    chosen = next(r["precision"] for r in again.manifest.precision_choice if r["chosen"])
    budget = options.pass_options if chosen in ("int8", "fp16") else {}  # what --precision CHOSEN takes
    explicit = compile_model(tiny_cnn_onnx, replace(options, precision=chosen, output=tmp_path / "m.onnx",
                                                    pass_options=budget))
    assert explicit.cache == "hit" and explicit.artifact.read_bytes() == again.artifact.read_bytes()
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.onnx", "m.onnx.manifest.json"]  # no scratch left


def test_without_an_output_the_kept_candidate_goes_beside_the_source(tiny_cnn_onnx: Path, tmp_path: Path) -> None:
    source = tmp_path / "m.onnx"
    source.write_bytes(tiny_cnn_onnx.read_bytes())
    result = compile_model(source, BuildOptions(target="onnxruntime", precision="auto", tune_time=0.0))
    assert result.artifact == tmp_path / "m.onnxruntime.onnx" and read_manifest(result.artifact).precision_choice
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnxruntime.onnx",
                                                        "m.onnxruntime.onnx.manifest.json"]
