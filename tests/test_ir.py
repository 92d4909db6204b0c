"""The IR wrapper: loading/saving ONNX (incl. external data), metadata, clear errors on bad files."""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np
import onnx
import pytest

from infer_compile.core import ir
from infer_compile.core.errors import UserInputError
from infer_compile.core.ir import Model, load_onnx, save_onnx
from infer_compile.core.numerics import random_inputs, run_onnx
from tests.builders import make_model, tensor, tiny_cnn


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


def test_single_file_holds_every_weight_exactly(tmp_path: Path) -> None:
    """Weights are streamed into the .onnx after the graph; onnx reads back the same tensors and types."""
    rng = np.random.default_rng(0)
    inits = {"f16": rng.standard_normal((40, 30)).astype(np.float16), "i64": rng.integers(0, 40, (300,)),
             "mask": rng.integers(0, 2, (2000,)).astype(bool), "small": np.float32([1.5, -2.0])}
    nodes = [onnx.helper.make_node("Gather", ["f16", "i64"], ["g"]),
             onnx.helper.make_node("Not", ["mask"], ["m"]), onnx.helper.make_node("Mul", ["small", "small"], ["s"])]
    proto = make_model(nodes, [], [tensor("g", [300, 30], onnx.TensorProto.FLOAT16),
                                   tensor("m", [2000], onnx.TensorProto.BOOL), tensor("s", [2])], inits)
    assert save_onnx(Model.from_proto(proto), tmp_path / "m.onnx") == [tmp_path / "m.onnx"]
    again = onnx.load(str(tmp_path / "m.onnx"))
    onnx.checker.check_model(again)
    got = {t.name: onnx.numpy_helper.to_array(t) for t in again.graph.initializer}
    assert got.keys() == inits.keys()
    for name, array in inits.items():
        assert got[name].dtype == array.dtype and np.array_equal(got[name], array), name
    outputs = run_onnx(load_onnx(tmp_path / "m.onnx"), {})
    np.testing.assert_array_equal(outputs["g"], inits["f16"][inits["i64"]])


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


def external_model(folder: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Model, Path]:
    monkeypatch.setattr(ir, "EXTERNAL_DATA_THRESHOLD", 1024)
    model = Model.from_proto(tiny_cnn())
    folder.mkdir(exist_ok=True)
    save_onnx(model, folder / "m.onnx")
    return model, folder / "m.onnx"


def backing(array: np.ndarray) -> object:
    """The object whose memory ``array`` views."""
    while isinstance(array, np.ndarray) and array.base is not None:
        array = array.base
    return array.obj if isinstance(array, memoryview) else array


def test_external_weights_are_mapped_not_copied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, path = external_model(tmp_path, monkeypatch)
    data = path.with_name("m.onnx.data").read_bytes()
    loaded = load_onnx(path)
    weights = {c.name: c.values for c in loaded.weight_constants()}
    assert weights and all(isinstance(backing(w), mmap.mmap) for w in weights.values())
    weights["w2"][...] = 0  # copy-on-write pages: the user's data file never changes
    assert path.with_name("m.onnx.data").read_bytes() == data
    feeds = random_inputs(model.inputs)
    loaded = load_onnx(path)
    np.testing.assert_array_equal(run_onnx(model, feeds)["logits"], run_onnx(loaded, feeds)["logits"])


def test_saving_from_the_source_folder_does_not_see_its_data_file(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """`cd models && infer-compile m.onnx -o out/m.onnx`: m.onnx.data in the working folder is the source's."""
    _, path = external_model(tmp_path, monkeypatch)
    source_data = path.with_name("m.onnx.data").read_bytes()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    files = save_onnx(load_onnx("m.onnx"), Path("out/m.onnx"))
    assert [str(f) for f in files] == ["out/m.onnx", "out/m.onnx.data"]
    assert path.with_name("m.onnx.data").read_bytes() == source_data
    monkeypatch.chdir("/")
    again = load_onnx(tmp_path / "out" / "m.onnx")
    assert all(c.values.ctypes.data % 64 == 0 for c in again.weight_constants())  # aligned for mapping


def test_external_tensors_that_cannot_be_views_are_read(tmp_path: Path) -> None:
    """A Constant node's tensor and a misaligned float32 offset both live in the data file too."""
    rng = np.random.default_rng(0)
    table, bias = rng.standard_normal((64, 8)).astype(np.float32), rng.standard_normal((64, 8)).astype(np.float32)
    proto = make_model([onnx.helper.make_node("Constant", [], ["c"], value=onnx.numpy_helper.from_array(bias)),
                        onnx.helper.make_node("Add", ["table", "c"], ["y"])], [], [tensor("y", [64, 8])],
                       {"table": table})
    onnx.external_data_helper.convert_model_to_external_data(proto, location="m.onnx.data", size_threshold=0,
                                                             convert_attribute=True)
    onnx.save_model(proto, str(tmp_path / "m.onnx"))
    data = tmp_path / "m.onnx.data"
    data.write_bytes(b"\0" + data.read_bytes())  # every offset one byte later: no float32 view possible
    proto = onnx.load_model(str(tmp_path / "m.onnx"), load_external_data=False)
    for t in onnx.external_data_helper._get_all_tensors(proto):
        for entry in t.external_data:
            if entry.key == "offset":
                entry.value = str(int(entry.value) + 1)
    onnx.save_model(proto, str(tmp_path / "m.onnx"))
    np.testing.assert_array_equal(run_onnx(load_onnx(tmp_path / "m.onnx"), {})["y"], table + bias)


@pytest.mark.parametrize("location", ["../outside.data", "/etc/passwd", "sub/../../outside.data"])
def test_external_data_outside_the_model_folder_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           location: str) -> None:
    _, path = external_model(tmp_path / "model", monkeypatch)
    (tmp_path / "outside.data").write_bytes(path.with_name("m.onnx.data").read_bytes())
    proto = onnx.load_model(str(path), load_external_data=False)
    for init in proto.graph.initializer:
        for entry in init.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save_model(proto, str(path))
    with pytest.raises(UserInputError, match="points outside the model's folder"):
        load_onnx(path)


def test_external_data_shorter_than_its_tensors_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, path = external_model(tmp_path, monkeypatch)
    data = path.with_name("m.onnx.data")
    data.write_bytes(data.read_bytes()[:-100])
    with pytest.raises(UserInputError, match=r"cannot read its external weight data .*needs .* bytes at offset"):
        load_onnx(path)


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
