"""Reading model inputs from `.npy`/`.npz` files and writing outputs to `.npz`.

`--input` takes `x.npy` (the next input not yet given, in model order), `name=x.npy`, or
`inputs.npz` (arrays keyed by input name). Files are read with ``allow_pickle=False``:
infer-compile never unpickles data files.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from infer_compile.core.errors import UserInputError
from infer_compile.core.ir import TensorSpec
from infer_compile.core.numerics import Feeds

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK"  # an .npz is a zip archive
_HINT = "give --input x.npy, --input NAME=x.npy or --input inputs.npz (arrays keyed by input name)"


def load_array_file(path: Path) -> np.ndarray | dict[str, np.ndarray]:
    """The array(s) in a .npy/.npz file, read without unpickling; anything else is a one-line user error."""
    if not path.is_file():
        raise UserInputError(f"{path}: no such input file", hint=_HINT)
    try:
        with path.open("rb") as fh:
            head = fh.read(len(_NPY_MAGIC))
    except OSError as exc:
        raise UserInputError(f"{path}: cannot read it ({exc.strerror})", hint=_HINT) from exc
    # numpy falls back to unpickling files without its magic (and says "pickled"): a text or CSV file is not
    # a pickle, so name what the file is not before numpy gets to guess.
    if not head.startswith((_NPY_MAGIC, _ZIP_MAGIC)):
        raise UserInputError(f"{path}: not a .npy/.npz file (no numpy header; text or CSV data is not read)",
                             hint="save arrays with numpy.save / numpy.savez")
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            return np.asarray(data)  # np.load's result is untyped: a .npy gives an array (no copy here)
        with data:
            return {key: _npz_member(data, key, path) for key in data.files}
    except UserInputError:
        raise
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise _objects_error(path) from exc
        raise UserInputError(f"{path}: not a readable .npy/.npz file ({exc})", hint=_HINT) from exc
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise UserInputError(f"{path}: cannot read it as .npy/.npz ({exc})", hint=_HINT) from exc


def _npz_member(data: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    """One array of an .npz (numpy reads members lazily: an object array fails only here)."""
    try:
        return data[key]
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise _objects_error(path, key) from exc
        raise


def _objects_error(path: Path, key: str | None = None) -> UserInputError:
    what = f"array '{key}' in {path}" if key else str(path)
    return UserInputError(f"{what} holds pickled Python objects (dtype=object), which infer-compile never loads",
                          hint="save plain numeric arrays with numpy.save / numpy.savez")


def parse_inputs(values: list[str], specs: list[TensorSpec]) -> Feeds:
    """The feeds `--input` values describe, checked against the model's inputs."""
    names = [s.name for s in specs]
    raw: dict[str, np.ndarray] = {}
    positional: list[tuple[str, np.ndarray]] = []
    for value in values:
        name, sep, file = value.partition("=")
        if not sep or (name not in names and Path(value).is_file()):  # no NAME= (or '=' in a file name)
            name, file = "", value
        if name:
            array = load_array_file(Path(file))
            if isinstance(array, dict):
                raise UserInputError(f"--input {value}: NAME= takes a .npy file, not an .npz", hint=_HINT)
            raw[_known(name, names)] = array
            continue
        array = load_array_file(Path(file))
        if isinstance(array, dict):
            raw.update({_known(key, names, file): arr for key, arr in array.items()})
        else:
            positional.append((file, array))
    free = [n for n in names if n not in raw]
    if len(positional) > len(free):
        raise UserInputError(f"{len(positional)} unnamed input file(s) but only {len(free)} model input(s) left",
                             hint=f"model inputs: {', '.join(names)}; {_HINT}")
    raw.update({name: array for name, (_, array) in zip(free, positional, strict=False)})
    missing = [n for n in names if n not in raw]
    if missing:
        raise UserInputError(f"no data for model input(s): {', '.join(missing)}", hint=_HINT)
    return {spec.name: conform(spec, raw[spec.name]) for spec in specs}


def _known(name: str, names: list[str], file: str | None = None) -> str:
    if name not in names:
        where = f" (array in {file})" if file else ""
        raise UserInputError(f"the model has no input '{name}'{where}", hint=f"model inputs: {', '.join(names)}")
    return name


def conform(spec: TensorSpec, array: np.ndarray) -> np.ndarray:
    """``array`` checked against ``spec``'s rank and fixed dims; cast between widths of one kind (float64 ->
    float32), never across kinds (uint8 pixels into a float model usually need scaling the user must do)."""
    array = np.asarray(array)
    if not spec.accepts_shape(array.shape):
        raise UserInputError(f"input '{spec.name}' has shape {list(array.shape)}, the model expects "
                             f"{spec.describe()}", hint="fix the array's shape (batch and layout)")
    if array.dtype != spec.dtype:
        same_kind = {array.dtype.kind, spec.dtype.kind} <= set("f") or {array.dtype.kind, spec.dtype.kind} <= set("iu")
        if not same_kind:
            raise UserInputError(f"input '{spec.name}' is {array.dtype}, the model expects {spec.dtype}",
                                 hint=f"save it as {spec.dtype} (numpy .astype)")
        array = array.astype(spec.dtype)
    return array


def save_outputs(outputs: Feeds, path: Path) -> None:
    """Write ``outputs`` to an .npz atomically (readers never see half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, allow_pickle=False, **outputs)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
