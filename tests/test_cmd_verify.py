"""`infer-compile verify`: artifact vs source on seeded or given inputs; exit 3 outside the budget."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from infer_compile.core.errors import ExitCode
from tests.artifact_helpers import assert_user_error, build_artifact, invoke, write_tiny_cnn


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("verify")
    source = write_tiny_cnn(root / "tiny_cnn.onnx")
    retrained = write_tiny_cnn(root / "retrained.onnx", seed=1)  # same architecture, other weights
    return {"source": source, "artifact": build_artifact(source, root / "a.onnx").artifact,
            "fp16": build_artifact(source, root / "a16.onnx", precision="fp16").artifact,
            "other": build_artifact(retrained, root / "other.onnx").artifact}


def test_matching_artifact_verifies_with_figures(models) -> None:
    result = invoke("verify", models["source"], models["artifact"], "--samples", 4, "--json",
                    "--budget", "cosine>=0.99999,top1-agreement>=1,max-abs<=1e-4")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["samples"] == 4
    assert doc["figures"]["cosine"] > 0.99999 and doc["figures"]["top1_agreement"] == 1.0
    assert doc["figures"]["max_abs"] < 1e-4


def test_fp16_artifact_passes_its_precision_tolerance_but_not_an_fp32_budget(models) -> None:
    ok = invoke("verify", models["source"], models["fp16"], "-n", 3)
    assert ok.exit_code == 0, ok.output
    assert "verified" in ok.stdout
    strict = invoke("verify", models["source"], models["fp16"], "-n", 3, "--budget", "max-abs<=1e-7")
    assert_user_error(strict, "accuracy budget 'max-abs<=1e-07' not met", code=ExitCode.ACCURACY)


def test_wrong_artifact_fails_the_budget_and_the_default_tolerance(models) -> None:
    budget = invoke("verify", models["source"], models["other"], "--budget", "cosine>=0.999")
    assert_user_error(budget, "cosine>=0.999 failed: cosine =", code=ExitCode.ACCURACY)
    default = invoke("verify", models["source"], models["other"])
    assert_user_error(default, "outputs differ beyond the fp32 tolerance", code=ExitCode.ACCURACY)


def test_given_inputs_are_used_as_one_sample(models, tmp_path: Path) -> None:
    np.savez(tmp_path / "in.npz", image=np.ones((5, 3, 32, 32), np.float32))
    result = invoke("verify", models["source"], models["artifact"], "-i", tmp_path / "in.npz", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["samples"] == 1


@pytest.mark.parametrize("budget,fragment", [("cos>=0.9", "unknown metric 'cos'"),
                                             ("cosine=0.9", "cannot read 'cosine=0.9'"),
                                             ("cosine>=high", "'high' is not a number")])
def test_bad_budget_fails_before_any_work(models, budget: str, fragment: str) -> None:
    assert_user_error(invoke("verify", models["source"], models["artifact"], "--budget", budget), fragment)


def test_bad_source_or_artifact(models, tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_text("garbage")
    assert_user_error(invoke("verify", models["source"], junk), "cannot load it as a onnxruntime artifact")
    assert_user_error(invoke("verify", tmp_path / "absent.onnx", models["artifact"]), "no such file")


def test_unrelated_source_is_refused_naming_both_interfaces(models, tmp_path: Path) -> None:
    from onnx import helper

    from tests.builders import make_model, tensor

    unrelated = tmp_path / "unrelated.onnx"
    onnx.save_model(make_model([helper.make_node("Relu", ["x"], ["y"])], [tensor("x", [1, 16])],
                               [tensor("y", [1, 16])]), str(unrelated))
    assert_user_error(invoke("verify", unrelated, models["artifact"]), "the artifact does not match the source model",
                      "source inputs x: float32[1x16]", "artifact inputs image: float32[")
