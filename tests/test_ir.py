"""The IR wrapper: loading/saving ONNX (incl. external data), metadata, clear errors on bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from infer_compile import ir
from infer_compile.errors import UserInputError
from infer_compile.ir import Model, load_onnx, save_onnx
from infer_compile.numerics import random_inputs, run_onnx
from tests.builders import tiny_cnn


def test_round_trip_keeps_graph_io_and_metadata(tmp_path: Path) -> None:
    proto = tiny_cnn()
    onnx.helper.set_model_props(proto, {"author": "tests"})
    model = Model.from_proto(proto)
    assert [s.describe() for s in model.inputs] == ["image: float32[batchx3x32x32]"]
    assert model.outputs[0].shape == ("batch", 10)
    assert model.opset == 17 and model.ir_version == proto.ir_version
    files = save_onnx(model, tmp_path / "m.onnx")
    assert files == [tmp_path / "m.onnx"]
    again = load_onnx(tmp_path / "m.onnx")
    assert again.metadata == {"author": "tests"}
    feeds = random_inputs(model.inputs, dims={"batch": 2})
    np.testing.assert_array_equal(run_onnx(model, feeds)["logits"], run_onnx(again, feeds)["logits"])


def test_large_models_use_external_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ir, "EXTERNAL_DATA_THRESHOLD", 1024)
    model = Model.from_proto(tiny_cnn())
    files = save_onnx(model, tmp_path / "big.onnx")
    assert [f.name for f in files] == ["big.onnx", "big.onnx.data"]
    assert files[1].stat().st_size > files[0].stat().st_size
    # Saving again must not append to the old data file.
    save_onnx(model, tmp_path / "big.onnx")
    assert (tmp_path / "big.onnx.data").stat().st_size == files[1].stat().st_size
    again = load_onnx(tmp_path / "big.onnx")
    feeds = random_inputs(model.inputs)
    np.testing.assert_array_equal(run_onnx(model, feeds)["logits"], run_onnx(again, feeds)["logits"])


def test_missing_external_data_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ir, "EXTERNAL_DATA_THRESHOLD", 1024)
    save_onnx(Model.from_proto(tiny_cnn()), tmp_path / "m.onnx")
    (tmp_path / "m.onnx.data").unlink()
    with pytest.raises(UserInputError, match="external weight data"):
        load_onnx(tmp_path / "m.onnx")


@pytest.mark.parametrize("content", [b"", b"not an onnx file at all \x00\xff", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64])
def test_corrupt_files_are_user_errors(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(UserInputError, match="not a valid ONNX model"):
        load_onnx(path)


def test_truncated_model_is_a_user_error(tmp_path: Path) -> None:
    data = tiny_cnn().SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserInputError, match=r"cut\.onnx"):
        load_onnx(path)


def test_model_statistics() -> None:
    model = Model.from_proto(tiny_cnn())
    assert model.op_histogram()["Conv"] == 2
    assert model.parameter_count == sum(
        int(np.prod(t.dims)) for t in tiny_cnn().graph.initializer)
    assert model.weight_bytes == 4 * model.parameter_count
