"""Calibration data readers: each yields samples as ``{input_name: ndarray}`` feeds, lazily.

Every pass over the data (hashing, range collection, held-out checks) reads the samples again from
disk (or calls the user's function again), so memory does not grow with the sample count; a pass
over a subset (the held-out samples) reads only those files. ``open_reader`` picks a reader from what
the user typed (a folder of .npy/.npz files, a folder of images, ``pkg.mod:fn`` or ``synthetic``), and
``validated`` checks every sample against the model inputs (and for NaN/Inf), naming the file and
saying exactly what does not match.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from infer_compile.core.errors import BuildWarning, UserInputError
from infer_compile.core.feeds import conform, load_array_file
from infer_compile.core.ir import TensorSpec
from infer_compile.core.numerics import Feeds, random_inputs
from infer_compile.frontends.specs import load_entry_point

NUMPY_SUFFIXES = (".npy", ".npz")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")
_CALLABLE = re.compile(r"^[^:]+:[A-Za-z_]\w*$")  # pkg.mod:fn or path/to/file.py:fn


# Which sample positions a pass uses (readers skip reading the others where they can).
Keep = Callable[[int], bool]


class CalibrationWarning(BuildWarning):
    """Calibration data that will give poor ranges (synthetic data, too few samples)."""


@dataclass(frozen=True)
class ImagePreprocess:
    """How image files become model inputs: resize, center crop, scale, mean/std, channel order, layout."""

    resize: tuple[int, int] | None = None  # (height, width); None: the model's input size
    crop: tuple[int, int] | None = None  # center crop (height, width) after resizing
    scale: float = 1 / 255  # pixel values are multiplied by this first
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    channels: str = "rgb"  # or "bgr"
    layout: str | None = None  # "nchw" or "nhwc"; None: guessed from the input shape
    dtype: str | None = None  # None: the input's dtype

    @classmethod
    def parse(cls, items: list[str]) -> ImagePreprocess:
        """``["resize=256", "crop=224", "mean=0.485,0.456,0.406", ...]`` (repeated flags) or one space-separated
        spec (``["resize=256 crop=224 ..."]``, a quoted flag or a config string) -> ImagePreprocess."""
        fields: dict[str, object] = {}
        for item in (word for text in items for word in text.split()):  # one spec or one word each
            key, sep, value = item.partition("=")
            key = key.strip().lower()
            try:
                if not sep:
                    raise ValueError("expected key=value")
                fields[key] = _PARSERS[key](value.strip())
            except (KeyError, ValueError) as exc:
                keys = ", ".join(_PARSERS)
                raise UserInputError(f"--calib-preprocess '{item}' is not valid ({exc})",
                                     hint=f"keys: {keys}; e.g. resize=256 crop=224 mean=0.485,0.456,0.406") from None
        return cls(**fields)  # type: ignore[arg-type]

    def resolved(self, spec: TensorSpec) -> dict[str, Any]:
        """Every setting as applied to images for input ``spec``, defaults included (the manifest's record)."""
        layout = self.layout or guess_layout(spec)
        return {"resize": list(self.resize or _input_hw(spec, layout)), "crop": list(self.crop) if self.crop else None,
                "scale": self.scale, "mean": list(self.mean), "std": list(self.std), "channels": self.channels,
                "layout": layout, "dtype": self.dtype or np.dtype(spec.dtype).name}


def _size(value: str) -> tuple[int, int]:
    dims = [int(v) for v in value.lower().split("x")]
    if len(dims) == 1:
        dims *= 2
    if len(dims) != 2 or min(dims) <= 0:
        raise ValueError("size is N or HxW")
    return dims[0], dims[1]


def _floats(value: str) -> tuple[float, ...]:
    return tuple(float(v) for v in value.replace("/", ",").split(","))


def _choice(*allowed: str):
    def parse(value: str) -> str:
        if value.lower() not in allowed:
            raise ValueError(f"one of {'/'.join(allowed)}")
        return value.lower()
    return parse


def _dtype(value: str) -> str:
    return np.dtype(value).name


_PARSERS = {"resize": _size, "crop": _size, "scale": float, "mean": _floats, "std": _floats,
            "channels": _choice("rgb", "bgr"), "layout": _choice("nchw", "nhwc"), "dtype": _dtype}
PREPROCESS_KEYS = tuple(_PARSERS)


class NumpyFolderReader:
    """One sample per file: ``.npz`` with one array per input name, or ``.npy`` for single-input models."""

    def __init__(self, folder: Path, inputs: list[TensorSpec]) -> None:
        self.files = sorted(p for p in folder.iterdir() if p.suffix in NUMPY_SUFFIXES)
        self.inputs = inputs
        self.description = f"{len(self.files)} numpy files in {folder}"

    def samples(self, keep: Keep, stop: int | None = None) -> Iterator[tuple[int, Feeds]]:
        for index, path in enumerate(self.files[:stop]):
            if keep(index):
                yield index, self._load(path)

    def origin(self, index: int) -> str:
        return f"{self.files[index]} (sample {index})"

    def _load(self, path: Path) -> Feeds:
        data = load_array_file(path)  # allow_pickle=False: calibration folders are data, never code
        if isinstance(data, np.ndarray):
            if len(self.inputs) != 1:
                names = ", ".join(s.name for s in self.inputs)
                raise UserInputError(f"{path}: a .npy file holds one array but the model has inputs {names}",
                                     hint="save each sample as .npz with one array per input name")
            return {self.inputs[0].name: data}
        if len(self.inputs) == 1 and list(data) == ["arr_0"]:
            return {self.inputs[0].name: data["arr_0"]}
        return data


class ImageFolderReader:
    """Image files decoded with Pillow and preprocessed as ``ImagePreprocess`` says."""

    def __init__(self, folder: Path, inputs: list[TensorSpec], preprocess: ImagePreprocess) -> None:
        if len(inputs) != 1:
            raise UserInputError(f"{folder}: image folders feed one input, the model has {len(inputs)}",
                                 hint="give .npz samples or a pkg.mod:fn reader for multi-input models")
        self.files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        self.spec = inputs[0]
        self.preprocess = preprocess
        self.description = f"{len(self.files)} images in {folder}"
        self.details = {"preprocess": preprocess.resolved(self.spec)}

    def samples(self, keep: Keep, stop: int | None = None) -> Iterator[tuple[int, Feeds]]:
        try:
            from PIL import Image
        except ImportError:
            raise UserInputError("reading image folders needs Pillow, which is not installed",
                                 hint="pip install 'infer-compile[images]', or give .npy/.npz samples") from None
        layout = self.preprocess.layout or guess_layout(self.spec)
        height, width = _input_hw(self.spec, layout)
        for index, path in enumerate(self.files[:stop]):
            if not keep(index):
                continue
            try:
                with Image.open(path) as img:
                    rgb = img.convert("RGB")
            except OSError as exc:
                raise UserInputError(f"{path}: cannot decode the image ({exc})",
                                     hint="remove it or convert it to PNG/JPEG") from None
            size = self.preprocess.resize or (height, width)
            resized = np.asarray(rgb.resize((size[1], size[0]), Image.Resampling.BILINEAR))
            yield index, {self.spec.name: preprocess_image(resized, self.preprocess, layout, self.spec.dtype)}

    def origin(self, index: int) -> str:
        return f"{self.files[index]} (sample {index})"


def guess_layout(spec: TensorSpec) -> str:
    """NCHW when dim 1 is 3 (or 1), NHWC when the last dim is; NCHW otherwise."""
    shape = spec.shape or ()
    if len(shape) == 4 and shape[-1] in (1, 3) and shape[1] not in (1, 3):
        return "nhwc"
    return "nchw"


def _input_hw(spec: TensorSpec, layout: str) -> tuple[int, int]:
    shape = spec.shape or ()
    if len(shape) != 4:
        raise UserInputError(f"input '{spec.name}' is not an image batch (shape {spec.describe()})",
                             hint="image folders need a 4-D NCHW or NHWC input")
    height, width = shape[2:] if layout == "nchw" else shape[1:3]
    if not (isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0):
        return 224, 224  # dynamic H/W: the crop/resize options decide; 224 is the common default
    return height, width


def preprocess_image(rgb: np.ndarray, pre: ImagePreprocess, layout: str, dtype: np.dtype) -> np.ndarray:
    """HxWx3 uint8 RGB -> a batch of one image, cropped, normalised and laid out for the model."""
    image = rgb
    if pre.crop:
        top = max((image.shape[0] - pre.crop[0]) // 2, 0)
        left = max((image.shape[1] - pre.crop[1]) // 2, 0)
        image = image[top:top + pre.crop[0], left:left + pre.crop[1]]
    if pre.channels == "bgr":
        image = image[..., ::-1]
    with np.errstate(divide="ignore", invalid="ignore"):  # a zero std gives Inf/NaN, which validation names
        x = (image.astype(np.float32) * pre.scale - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
    if layout == "nchw":
        x = x.transpose(2, 0, 1)
    return x[None].astype(pre.dtype or dtype)


class CallableReader:
    """``pkg.mod:fn`` (or ``file.py:fn``): a function returning an iterable of feeds (or of arrays for one input).

    Called once per pass over the data: it must give the same samples every time (seed any randomness).
    """

    def __init__(self, target: str, inputs: list[TensorSpec]) -> None:
        fn = load_entry_point(target, "--calib")
        self.fn = fn
        self.inputs = inputs
        self.description = f"samples from {target}()"

    def samples(self, keep: Keep, stop: int | None = None) -> Iterator[tuple[int, Feeds]]:
        produced = self.fn()
        if isinstance(produced, dict | np.ndarray) or not isinstance(produced, Iterable):
            raise UserInputError(f"{self.description} returned {type(produced).__name__}, not an iterable of samples",
                                 hint="return (or yield) one {input_name: array} dict per sample")
        for index, sample in enumerate(islice(produced, stop)):  # every sample is produced; kept ones are used
            if not keep(index):
                continue
            if isinstance(sample, np.ndarray) and len(self.inputs) == 1:
                sample = {self.inputs[0].name: sample}
            yield index, sample

    def origin(self, index: int) -> str:
        return f"{self.description}, sample {index}"


class SyntheticReader:
    """Seeded random inputs: only for smoke tests, the ranges mean nothing for real data."""

    def __init__(self, inputs: list[TensorSpec], count: int, draw: Callable[[int], Feeds] | None = None) -> None:
        self.inputs = inputs
        self.count = count
        # seed -> one sample; the build draws them as its example inputs are (token ids across the vocabulary,
        # not only 0 and 1: calibrated on those, a T5 encoder's INT8 ranges missed most tokens).
        self.draw = draw or (lambda seed: random_inputs(inputs, seed=seed))
        self.description = f"{count} SYNTHETIC random samples"

    def samples(self, keep: Keep, stop: int | None = None) -> Iterator[tuple[int, Feeds]]:
        for seed in range(self.count if stop is None else min(stop, self.count)):
            if keep(seed):
                yield seed, self.draw(seed)

    def origin(self, index: int) -> str:
        return f"{self.description}, sample {index}"


Reader = NumpyFolderReader | ImageFolderReader | CallableReader | SyntheticReader


def open_reader(source: str, inputs: list[TensorSpec], *, preprocess: ImagePreprocess | None = None,
                synthetic_count: int = 32, synthetic: Callable[[int], Feeds] | None = None) -> Reader:
    """The reader for ``source``: a folder, ``pkg.mod:fn`` or ``synthetic`` (drawn by ``synthetic``, seed ->
    sample; default: ``random_inputs`` of ``inputs``)."""
    if source == "synthetic":
        return SyntheticReader(inputs, synthetic_count, synthetic)
    path = Path(source)
    if not path.exists() and _CALLABLE.match(source):
        return CallableReader(source, inputs)
    if not path.is_dir():
        raise UserInputError(f"--calib {source}: no such folder",
                             hint="give a folder of .npy/.npz or image files, pkg.mod:fn, or 'synthetic'")
    suffixes = {p.suffix.lower() for p in path.iterdir() if p.is_file()}
    if suffixes & set(NUMPY_SUFFIXES):
        return NumpyFolderReader(path, inputs)
    if suffixes & set(IMAGE_SUFFIXES):
        return ImageFolderReader(path, inputs, preprocess or ImagePreprocess())
    raise UserInputError(f"--calib {source}: the folder has no .npy, .npz or image files",
                         hint="save one sample per file with np.save / np.savez, or use images")


def validated(reader: Reader, inputs: list[TensorSpec], keep: Keep = lambda index: True,
              stop: int | None = None) -> Iterator[Feeds]:
    """The samples at the positions ``keep`` accepts (before ``stop``), each checked against the model
    inputs (names, dtypes, shapes, finite values); same-kind dtypes are converted (float64 -> float32).
    Errors name the sample's file (or index)."""
    names = {s.name for s in inputs}
    for index, sample in reader.samples(keep, stop):
        where = reader.origin(index)
        if not isinstance(sample, dict):
            raise UserInputError(f"{where}: got {type(sample).__name__}, expected a dict of arrays by input name",
                                 hint="yield {input_name: array} per sample")
        missing, unexpected = sorted(names - set(sample)), sorted(set(sample) - names)
        if missing or unexpected:
            detail = "; ".join(f"{what} {', '.join(listed)}" for what, listed in
                               (("missing", missing), ("unexpected", unexpected)) if listed)
            raise UserInputError(f"{where}: input names do not match the model ({detail})",
                                 hint="model inputs: " + ", ".join(s.describe() for s in inputs))
        yield {spec.name: _checked_array(np.asarray(sample[spec.name]), spec, where) for spec in inputs}


def _checked_array(array: np.ndarray, spec: TensorSpec, where: str) -> np.ndarray:
    if spec.shape is not None and array.ndim == len(spec.shape) - 1:
        array = array[None]  # a single sample without its batch axis
    try:
        array = conform(spec, array)
    except UserInputError as exc:
        raise UserInputError(f"{where}: {exc.message}", hint=exc.hint) from None
    # NaN/Inf would poison every range it reaches (and the accuracy check): refuse the sample.
    if array.dtype.kind in "fc" and not (finite := np.isfinite(array)).all():
        bad = int(array.size - np.count_nonzero(finite))
        raise UserInputError(f"{where}: input '{spec.name}' has {bad} NaN/Inf value(s) of {array.size}",
                             hint="calibration samples must be finite: fix or remove this sample "
                                  "(for images, check --calib-preprocess std)")
    return array
