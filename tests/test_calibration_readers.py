"""Calibration readers, validation against the model inputs and the range cache."""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from infer_compile.calibration import CalibrationSettings, CalibrationWarning, ImagePreprocess, load_calibration
from infer_compile.calibration.cache import load_cached_ranges, save_ranges
from infer_compile.calibration.readers import preprocess_image
from infer_compile.core.errors import UserInputError
from infer_compile.core.ir import TensorSpec

IMAGE = TensorSpec("image", ("batch", 3, 8, 8), np.dtype(np.float32))
IDS = TensorSpec("ids", (1, 5), np.dtype(np.int64))


def load(source: str | Path, inputs: list[TensorSpec], **settings) -> list[dict[str, np.ndarray]]:
    return list(load_calibration(CalibrationSettings(source, **settings), inputs).samples)


def npy_folder(tmp_path: Path, arrays: list[np.ndarray]) -> Path:
    for i, array in enumerate(arrays):
        np.save(tmp_path / f"{i:03d}.npy", array)
    return tmp_path


def test_npy_folder_with_and_without_batch_axis(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    folder = npy_folder(tmp_path, [rng.standard_normal((2, 3, 8, 8)), rng.standard_normal((3, 8, 8))] * 10)
    data = load_calibration(CalibrationSettings(folder), [IMAGE])
    samples = list(data.samples)
    assert [s["image"].shape for s in samples[:2]] == [(2, 3, 8, 8), (1, 3, 8, 8)]
    assert all(s["image"].dtype == np.float32 for s in samples)  # float64 files converted
    assert data.count == 30


def test_the_data_digest_is_the_same_whether_hashed_while_loading_or_later(tmp_path: Path) -> None:
    """A build without --calib-cache loads the samples without hashing them; the digest, when asked for, is the
    one a --calib-cache build computes while loading, and tells different samples apart."""
    rng = np.random.default_rng(0)
    folder = npy_folder(tmp_path, [rng.standard_normal((1, 3, 8, 8)) for _ in range(3)])
    hashed = load_calibration(CalibrationSettings(folder, cache=tmp_path / "ranges.json"), [IMAGE])
    later = load_calibration(CalibrationSettings(folder), [IMAGE])
    assert hashed.summary.digest is not None and later.summary.digest is None
    assert later.digest() == hashed.digest() and later.count == hashed.count == 3
    np.save(folder / "001.npy", rng.standard_normal((1, 3, 8, 8)))
    assert load_calibration(CalibrationSettings(folder), [IMAGE]).digest() != hashed.digest()


def test_npz_folder_with_several_inputs(tmp_path: Path) -> None:
    for i in range(16):
        np.savez(tmp_path / f"{i}.npz", image=np.zeros((1, 3, 8, 8), np.float32), ids=np.ones((1, 5), np.int64))
    samples = load(tmp_path, [IMAGE, IDS])
    assert len(samples) == 16 and set(samples[0]) == {"image", "ids"}


def test_max_samples_limits_what_is_read(tmp_path: Path) -> None:
    folder = npy_folder(tmp_path, [np.zeros((1, 3, 8, 8), np.float32)] * 40)
    assert len(load(folder, [IMAGE], max_samples=20)) == 20


@pytest.mark.parametrize(("array", "message"), [
    (np.zeros((1, 3, 9, 8), np.float32),
     "input 'image' has shape [1, 3, 9, 8], the model expects image: float32[batchx3x8x8]"),
    (np.zeros((1, 3, 8, 8), np.int32), "input 'image' is int32, the model expects float32"),
    (np.zeros((8, 8), np.float32), "input 'image' has shape [8, 8]"),
])
def test_mismatches_are_named_exactly(tmp_path: Path, array: np.ndarray, message: str) -> None:
    folder = npy_folder(tmp_path, [array])
    with pytest.raises(UserInputError, match=r"000\.npy \(sample 0\): " + re.escape(message)):
        load(folder, [IMAGE])


def test_wrong_input_names(tmp_path: Path) -> None:
    np.savez(tmp_path / "0.npz", image=np.zeros((1, 3, 8, 8), np.float32), mask=np.ones((1, 5), np.int64))
    with pytest.raises(UserInputError, match="missing ids; unexpected mask"):
        load(tmp_path, [IMAGE, IDS])


def test_npy_for_a_multi_input_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="holds one array but the model has inputs image, ids"):
        load(npy_folder(tmp_path, [np.zeros((1, 3, 8, 8), np.float32)]), [IMAGE, IDS])


@pytest.mark.parametrize(("name", "save", "message"), [
    ("0.npy", lambda p: np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True), "pickled Python objects"),
    ("0.npz", lambda p: np.savez(p, image=np.array([{"a": 1}], dtype=object)),
     r"array 'image' in .*0\.npz holds pickled Python objects"),
    ("0.npy", lambda p: p.write_text("1,2,3\n"), r"0\.npy: not a \.npy/\.npz file \(no numpy header"),
], ids=["npy-objects", "npz-objects", "text-named-npy"])
def test_pickled_or_foreign_files_are_never_loaded(tmp_path: Path, name: str, save, message: str) -> None:
    save(tmp_path / name)
    with pytest.raises(UserInputError, match=message):
        load(tmp_path, [IMAGE])


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: p / "missing", "no such folder"),
    (lambda p: p, "the folder has no .npy, .npz or image files"),
])
def test_bad_sources(tmp_path: Path, make, message: str) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserInputError, match=message):
        load(str(make(tmp_path)), [IMAGE])


def test_too_few_samples_warns(tmp_path: Path) -> None:
    with pytest.warns(CalibrationWarning, match="only 2 calibration samples"):
        load(npy_folder(tmp_path, [np.zeros((1, 3, 8, 8), np.float32)] * 2), [IMAGE])


def test_synthetic_warns_loudly() -> None:
    with pytest.warns(CalibrationWarning, match="SYNTHETIC"):
        samples = load("synthetic", [IMAGE], max_samples=4)
    assert len(samples) == 4 and samples[0]["image"].shape == (1, 3, 8, 8)


@pytest.fixture
def calib_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "my_calib_data.py").write_text(textwrap.dedent("""
        import numpy as np

        def samples():
            for i in range(20):
                yield np.full((1, 3, 8, 8), i, np.float32)

        def not_iterable():
            return 3
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_calib_data"
    sys.modules.pop("my_calib_data", None)


def test_callable_reader(calib_module: str) -> None:
    samples = load(f"{calib_module}:samples", [IMAGE])
    assert len(samples) == 20 and float(samples[3]["image"][0, 0, 0, 0]) == 3.0


@pytest.mark.parametrize(("fn", "message"), [
    ("missing_fn", "has no callable named 'missing_fn'"),
    ("not_iterable", "returned int, not an iterable of samples"),
])
def test_callable_reader_errors(calib_module: str, fn: str, message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        load(f"{calib_module}:{fn}", [IMAGE])


def test_callable_reader_unknown_module() -> None:
    with pytest.raises(UserInputError, match="importing 'no_such_module_xyz' failed"):
        load("no_such_module_xyz:fn", [IMAGE])


def test_image_preprocessing_crop_normalise_layout() -> None:
    rgb = np.zeros((10, 12, 3), np.uint8)
    rgb[..., 0], rgb[..., 2] = 255, 51  # red channel full, blue 0.2
    pre = ImagePreprocess.parse(["crop=8", "mean=0.5/0/0", "std=0.5/1/1", "channels=bgr"])
    x = preprocess_image(rgb, pre, "nchw", np.dtype(np.float32))
    assert x.shape == (1, 3, 8, 8) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, 0, 0], [(0.2 - 0.5) / 0.5, 0.0, 1.0], atol=1e-6)  # BGR order
    assert preprocess_image(rgb, ImagePreprocess(), "nhwc", np.dtype(np.float32)).shape == (1, 10, 12, 3)


@pytest.mark.parametrize("item", ["resize", "crop=0", "mean=a/b", "layout=chw", "colour=rgb"])
def test_bad_preprocess_options(item: str) -> None:
    with pytest.raises(UserInputError, match="--calib-preprocess"):
        ImagePreprocess.parse([item])


def test_image_folder(tmp_path: Path) -> None:
    image = pytest.importorskip("PIL.Image", reason="Pillow is not installed (extra: images)")
    rng = np.random.default_rng(0)
    for i in range(16):
        image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    samples = load(tmp_path, [IMAGE], preprocess=ImagePreprocess.parse(["resize=10", "crop=8"]))
    assert len(samples) == 16 and samples[0]["image"].shape == (1, 3, 8, 8)
    assert samples[0]["image"].min() >= 0.0 and samples[0]["image"].max() <= 1.0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_refused_naming_the_file(tmp_path: Path, bad: float) -> None:
    arrays = [np.zeros((1, 3, 8, 8), np.float32) for _ in range(20)]
    arrays[13][0, 1, 2, 3] = bad
    with pytest.raises(UserInputError, match=r"013\.npy \(sample 13\): input 'image' has 1 NaN/Inf value\(s\) of 192"):
        load(npy_folder(tmp_path, arrays), [IMAGE])


def test_images_normalised_to_inf_are_refused(tmp_path: Path) -> None:
    image = pytest.importorskip("PIL.Image", reason="Pillow is not installed (extra: images)")
    image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(tmp_path / "cat.png")
    with pytest.raises(UserInputError, match=r"cat\.png \(sample 0\): input 'image' has 192 NaN/Inf") as info:
        load(tmp_path, [IMAGE], preprocess=ImagePreprocess.parse(["std=0/0/0"]))
    assert "--calib-preprocess std" in str(info.value.hint)


def test_samples_are_read_again_on_every_pass_not_kept(tmp_path: Path) -> None:
    folder = npy_folder(tmp_path, [np.full((1, 3, 8, 8), i, np.float32) for i in range(12)])
    data = load_calibration(CalibrationSettings(folder, max_samples=11), [IMAGE])
    calib, held = data.split()
    assert data.count == 11 and [int(s["image"][0, 0, 0, 0]) for s in held] == [4, 9]
    assert [int(s["image"][0, 0, 0, 0]) for s in calib] == [0, 1, 2, 3, 5, 6, 7, 8, 10]
    (folder / "010.npy").unlink()  # nothing was held in memory: the next pass reads the folder again
    with pytest.raises(UserInputError, match=r"010\.npy: no such input file"):
        list(data.samples)
    assert [int(s["image"][0, 0, 0, 0]) for s in held] == [4, 9]  # a held-out pass reads only its files


def test_range_cache_is_keyed(tmp_path: Path) -> None:
    path = tmp_path / "ranges.json"
    key = {"model_sha256": "m", "data_sha256": "d", "method": "entropy"}
    save_ranges(path, key, {"a": 1.5, "b": 2.0})
    assert load_cached_ranges(path, key, ["a", "b"]) == {"a": 1.5, "b": 2.0}
    assert load_cached_ranges(path, {**key, "data_sha256": "other"}, ["a"]) is None
    assert load_cached_ranges(path, key, ["a", "c"]) is None  # does not cover every tensor needed
    path.write_text("{broken")
    with pytest.raises(UserInputError, match="not a readable infer-compile file"):
        load_cached_ranges(path, key, ["a"])

