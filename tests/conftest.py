"""Fixtures shared by every test module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

CACHE_ENV = "INFER_COMPILE_CACHE_DIR"
# CLI builds autotune for a few seconds by default; tests opt in with --tune-time.
TUNE_ENV = "INFER_COMPILE_TUNE_TIME"


@pytest.fixture(scope="session", autouse=True)
def _session_build_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Covers module- and session-scoped fixtures: nothing in the tests writes to ~/.cache/infer-compile."""
    cache = tmp_path_factory.mktemp("session-build-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(cache))
        patch.setenv(TUNE_ENV, "0")
        yield cache


@pytest.fixture(autouse=True)
def build_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test starts with an empty build cache, so no test sees another's artifacts."""
    cache = tmp_path_factory.mktemp("build-cache")
    monkeypatch.setenv(CACHE_ENV, str(cache))
    return cache


@pytest.fixture(scope="module")
def tiny_cnn_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests.builders.tiny_cnn saved as an ONNX file (dynamic batch)."""
    import onnx

    from tests.builders import tiny_cnn

    path = tmp_path_factory.mktemp("tiny-cnn") / "tiny_cnn.onnx"
    onnx.save_model(tiny_cnn(), str(path))
    return path


@pytest.fixture(scope="module")
def tiny_cnn_calib(tiny_cnn_onnx: Path):  # -> CalibrationSettings (imported lazily)
    """Calibration data for INT8 builds of the tiny CNN: 16 seeded samples as --calib FOLDER (minmax)."""
    import numpy as np
    import onnx

    from infer_compile.calibration import CalibrationSettings
    from infer_compile.core.ir import Model
    from infer_compile.core.numerics import random_inputs

    (spec,) = Model.from_proto(onnx.load_model(str(tiny_cnn_onnx))).inputs
    folder = tiny_cnn_onnx.parent / "calib"
    folder.mkdir()
    for seed in range(16):
        np.save(folder / f"{seed:03d}.npy", random_inputs([spec], seed=100 + seed, dims={"batch": 1})[spec.name])
    return CalibrationSettings(folder, method="minmax")
