"""`infer-compile bench`: latency percentiles, throughput, batch sizes, --vs ratios, JSON; clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.artifact_helpers import assert_user_error, build_artifact, invoke, write_tiny_cnn


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("bench")
    dynamic = write_tiny_cnn(root / "tiny_cnn.onnx")
    fixed = write_tiny_cnn(root / "fixed.onnx", batch=1)
    return build_artifact(dynamic, root / "a.onnx").artifact, build_artifact(fixed, root / "fixed_b1.onnx").artifact


def bench_json(*args: object) -> dict:
    result = invoke("bench", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_json_reports_percentiles_and_throughput_per_batch_size(artifacts) -> None:
    artifact, _ = artifacts
    doc = bench_json(artifact, "-b", 1, "-b", 4, "-n", 20, "--warmup", 2)
    assert doc["schema"] == "infer-compile.bench/1"
    assert [r["batch"] for r in doc["results"]] == [1, 4]
    for r in doc["results"]:
        ms = r["latency_ms"]
        assert r["iterations"] == 20
        assert 0 < ms["min"] <= ms["p50"] <= ms["p90"] <= ms["p99"] <= ms["max"]
        # throughput is samples per second over the timed runs: batch * runs / total time
        assert r["throughput"] == pytest.approx(r["batch"] * 1000 / ms["mean"], rel=1e-6)
    assert doc["ratios"] == []


def test_vs_alternates_two_artifacts_and_reports_their_ratio(artifacts) -> None:
    artifact, other = artifacts
    doc = bench_json(artifact, "--vs", other, "-n", 10, "--warmup", 1)
    a, b = doc["results"]
    assert (a["artifact"], b["artifact"]) == (str(artifact), str(other))
    (ratio,) = doc["ratios"]
    assert ratio["p50_speedup"] == pytest.approx(b["latency_ms"]["p50"] / a["latency_ms"]["p50"])
    assert ratio["throughput_ratio"] == pytest.approx(a["throughput"] / b["throughput"])


def test_table_output_names_the_ratio(artifacts) -> None:
    artifact, _ = artifacts
    result = invoke("bench", artifact, "--vs", artifact, "-n", 5, "--warmup", 0)
    assert result.exit_code == 0, result.output
    assert "p50 ms" in result.stdout and "samples/s" in result.stdout
    assert "A: " in result.stdout and "the speed of" in result.stdout


def test_fixed_batch_artifact_refuses_another_batch(artifacts) -> None:
    _, fixed = artifacts
    assert_user_error(invoke("bench", fixed, "-b", 3, "-n", 2), "fixed batch of 1")


def test_bad_artifact_and_bad_counts(tmp_path: Path, artifacts) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_text("not a model")
    assert_user_error(invoke("bench", junk, "-n", 2), "cannot load it as a onnxruntime artifact")
    artifact, _ = artifacts
    assert invoke("bench", artifact, "-n", 0).exit_code == 2  # usage error from the option's range
    assert_user_error(invoke("bench", artifact, "-b", 0, "-n", 2), "must be at least 1")
