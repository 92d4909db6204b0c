"""A model over protobuf's 2 GiB limit, with external data, built end to end from its own folder.

Slow (writes 2.25 GiB, ~1 min) and memory-heavy, so deselected by default; run it with

    .venv/bin/python -m pytest -m large_model tests/test_large_model.py
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from infer_compile.app.cli import app
from tests.builders import CHAIN_WIDTH, chain_weights, write_chain_model

pytestmark = [pytest.mark.slow, pytest.mark.large_model]

LAYERS = 9  # 9 x 256 MiB = 2.25 GiB


def head_digest(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.sha256(fh.read(1 << 20)).hexdigest()


def test_a_model_over_2_gib_builds_from_its_own_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.disk_usage(tmp_path).free < 6 << 30:
        pytest.skip("needs 6 GiB of free disk for the model and its artifact")
    source = write_chain_model(tmp_path / "models", LAYERS)
    data = source.with_name("big.onnx.data")
    before = (data.stat().st_size, head_digest(data))
    monkeypatch.chdir(source.parent)  # as users run it: the source's own big.onnx.data is in the working dir

    result = CliRunner().invoke(app, ["big.onnx", "-o", "out/big.onnx", "--target", "onnxruntime", "--no-cache",
                                      "--no-tune"])

    assert result.exit_code == 0, result.output
    out = source.parent / "out"
    assert sorted(p.name for p in out.iterdir()) == ["big.onnx", "big.onnx.data", "big.onnx.manifest.json"]
    assert (data.stat().st_size, head_digest(data)) == before  # the source's data file is untouched
    x = np.random.default_rng(1).standard_normal((2, CHAIN_WIDTH), dtype=np.float32)
    expected = x
    for weight in chain_weights(source):
        expected = expected @ weight
    got = ort.InferenceSession(str(out / "big.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)
