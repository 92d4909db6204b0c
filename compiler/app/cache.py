"""Content-addressed build cache: identical inputs give the identical artifact, so build it once.

The key hashes everything a build depends on: the source model's bytes (with its external weight
files), every ``BuildOptions`` field (file-valued options such as calibration data by content), the
artifact's file name (targets write it into their files), the target, tool/library versions, the
infer-compile code itself, and the hardware the target builds for (e.g. the GPU for TensorRT).

An entry is a folder ``entries/<key>/`` holding the artifact files and ``entry.json``. Writers fill
a private temporary folder and rename it into place (atomic on one file system), so a reader sees
a complete entry or none, and of two concurrent writers of one key the second simply drops its copy.
The folder may be shared by CI runners (same file system per writer: the temp folder lives inside).

``entry.json`` records the sha256 of every file (the manifest too); a hit checks the copies it
delivers against them, and an entry that fails (truncated, edited, or naming files outside itself)
is discarded with a warning and rebuilt. Temporary folders of killed writers are swept on the next store.

A URL (``s3://bucket/cache``, ``gs://...``, ``file:///mnt/cache``) is an object store reached through fsspec
(``ObjectStoreCache``): files are stored once under ``objects/<sha256>`` (content-addressed: concurrent writers
write the same bytes) and an entry is one object, ``entries/<key>.json``, written last (an object store's PUT is
atomic), so readers see complete entries only; a hit checks every file's sha256 as above.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import json
import mmap
import os
import re
import secrets
import shutil
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infer_compile.core.artifacts import (
    OWNER_PATTERN,
    file_digest,
    is_bare_name,
    owned_tempname,
    staged_output,
    sweep_stale,
)
from infer_compile.core.errors import BuildWarning, UserInputError
from infer_compile.targets.base import cpu_identity

if TYPE_CHECKING:
    from infer_compile.app.build import BuildOptions, BuildResult
    from infer_compile.targets import Target

CACHE_ENV = "INFER_COMPILE_CACHE_DIR"
ENTRY_FORMAT = 2  # 2: entry.json records a sha256 per file
ENTRY_FILE = "entry.json"
# Options that say where results go, not what they are.
_NOT_IN_KEY = frozenset({"output", "cache_dir"})
# The import packages infer-compile consists of (repository folders in a checkout, one tree in a wheel).
_PACKAGES = ("infer_compile", "infer_compile.passes", "infer_compile.targets", "infer_compile.calibration")
# Temporary folders in tmp/: key prefix, then owned_tempname's owner fields.
_TEMP_PATTERN = re.compile(r"[0-9a-f]{16}-" + OWNER_PATTERN)


def default_cache_dir() -> Path | str:
    """$INFER_COMPILE_CACHE_DIR (a folder or an object store URL), else $XDG_CACHE_HOME/infer-compile, else
    ~/.cache/infer-compile."""
    if location := os.environ.get(CACHE_ENV):
        return location if "://" in location else Path(location).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "infer-compile"


def canonical(value: Any) -> Any:
    """A JSON-able stand-in for ``value`` that changes whenever its content does.

    Dataclass fields that name outputs of the build (not inputs) opt out with
    ``field(metadata={"cache_key": False})``.
    """
    if isinstance(value, Path):
        return {"sha256": file_digest(value)} if value.exists() else {"missing": str(value)}
    # An array means numpy is loaded already: the cache never imports it (a hit needs no numpy).
    if (np := sys.modules.get("numpy")) is not None and isinstance(value, np.ndarray):
        return {"array": hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest(),
                "shape": list(value.shape), "dtype": value.dtype.str}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: canonical(getattr(value, f.name)) for f in dataclasses.fields(value)
                if f.metadata.get("cache_key", True)}
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(repr(canonical(v)) for v in value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)


def source_files(source: Path) -> list[Path]:
    """The model file plus the external weight files an ONNX model points at."""
    if not (source.is_file() and source.suffix == ".onnx"):
        return [source]
    try:
        locations = sorted(external_locations(source))
    except (OSError, ValueError):  # not readable as ONNX: the frontend reports it; hash the bytes alone
        return [source]
    return [source, *(source.parent / loc for loc in locations if (source.parent / loc).is_file())]


# Field numbers of onnx.proto: ModelProto.graph, GraphProto.initializer, TensorProto.external_data and
# .data_location (EXTERNAL = 1), StringStringEntryProto.key and .value.
_GRAPH, _INITIALIZER, _EXTERNAL_DATA, _DATA_LOCATION, _EXTERNAL, _KEY, _VALUE = 7, 5, 13, 14, 1, 1, 2


def external_locations(path: Path) -> set[str]:
    """The ``location`` of every external initializer of the ONNX model at ``path``, read from the protobuf wire
    format: importing onnx to parse the model would cost a cache hit more than the rest of its work. Raises
    ValueError for a file that is not a protobuf message."""
    with path.open("rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            raise ValueError("empty file")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            locations = set()
            for graph in _fields(data, 0, len(data), _GRAPH):
                for tensor in _fields(data, *graph, _INITIALIZER):
                    external, location = False, None
                    for number, value in _all_fields(data, *tensor):
                        if number == _DATA_LOCATION:
                            external = value == _EXTERNAL
                        elif number == _EXTERNAL_DATA and isinstance(value, tuple):
                            entry = {number: data[slice(*span)] for number, span in _all_fields(data, *value)
                                     if isinstance(span, tuple)}
                            if entry.get(_KEY) == b"location" and _VALUE in entry:
                                location = entry[_VALUE].decode()
                    if external and location is not None:
                        locations.add(location)
            return locations


def _fields(data: mmap.mmap, start: int, end: int, wanted: int) -> Iterator[tuple[int, int]]:
    """The (start, end) spans of the length-delimited fields numbered ``wanted`` of the message in data[start:end]."""
    for number, value in _all_fields(data, start, end):
        if number == wanted and isinstance(value, tuple):
            yield value


def _all_fields(data: mmap.mmap, start: int, end: int) -> Iterator[tuple[int, int | tuple[int, int] | None]]:
    """(field number, value) of each field of the message in data[start:end]: an int for a varint, (start, end)
    for a length-delimited field, None for a fixed-size one."""
    pos = start
    while pos < end:
        key, pos = _varint(data, pos)
        wire = key & 7
        value: int | tuple[int, int] | None = None
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = (pos, pos + length), pos + length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise ValueError(f"unknown protobuf wire type {wire}")
        if pos > end:
            raise ValueError("truncated protobuf message")
        yield key >> 3, value


def _varint(data: mmap.mmap, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("bad protobuf varint")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if byte < 0x80:
            return value, pos


def _package_folders(name: str) -> list[str]:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None:  # one of our own packages: always importable
        raise ImportError(f"{name} is not an importable package")
    return list(spec.submodule_search_locations)


def code_files() -> list[Path]:
    """infer-compile's own source files, wherever it is imported from (checkout, editable or wheel install)."""
    folders = {Path(folder).resolve() for name in _PACKAGES for folder in _package_folders(name)}
    return sorted({p for folder in folders for p in folder.rglob("*.py") if "__pycache__" not in p.parts})


@functools.cache
def code_digest() -> str:
    """infer-compile's own source: a changed pass or target must not reuse old artifacts."""
    return file_digest(code_files())


@dataclass
class CacheHit:
    files: list[Path]  # where the cached files were copied to, artifact first
    meta: dict[str, Any]  # what the original build recorded (pass table, node counts)


class BuildCache:
    """One cache folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser()

    def key(self, source: Path, options: BuildOptions, target: Target, output: Path,
            tools: dict[str, str]) -> str:
        material = {
            "entry_format": ENTRY_FORMAT,
            "source": file_digest(source_files(source)),
            "options": {f.name: canonical(getattr(options, f.name))
                        for f in dataclasses.fields(options) if f.name not in _NOT_IN_KEY},
            "artifact_name": output.name,
            "target": target.name,
            "tools": tools,
            # A tuned build's choices come from timings on this CPU: another CPU gets its own entry.
            "hardware": {**target.hardware_identity(), **(cpu_identity() if options.tune_time > 0 else {})},
            "code": code_digest(),
        }
        return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()

    def entry(self, key: str) -> Path:
        return self.root / "entries" / key

    def fetch(self, key: str, output: Path) -> CacheHit | None:
        """Copy the entry's files to ``output`` (atomically) and check them; None on a miss.

        A damaged or tampered entry is a miss too: it is discarded with a BuildWarning.
        """
        entry = self.entry(key)
        try:
            meta = json.loads((entry / ENTRY_FILE).read_text())
        except (OSError, ValueError):  # absent, or removed under us: build instead
            return None
        with staged_output(output) as stage:
            try:
                problem = _entry_problem(meta, entry)
                if problem is None:
                    for name in meta["files"]:
                        _copy(entry / name, stage.sibling(name))
                    # The copies are what the user gets: check them, not the entry (which may change under us).
                    problem = next((f"{name} does not match its recorded sha256" for name in meta["files"]
                                    if file_digest(stage.sibling(name)) != meta["sha256"][name]), None)
            except OSError as exc:
                if not entry.exists():  # removed by a concurrent discard or clean-up
                    return None
                problem = f"unreadable ({exc})"
            if problem is None:
                return CacheHit(stage.commit(), meta)
        self._discard(entry)
        warnings.warn(f"build cache entry {entry} is damaged ({problem}): discarded, rebuilding", BuildWarning,
                      stacklevel=2)
        return None

    def _discard(self, entry: Path) -> None:
        """Move a bad entry out of entries/ at once (atomic), then delete it."""
        doomed = owned_tempname(self.root / "tmp", f"{entry.name[:16]}-")
        try:
            doomed.mkdir(mode=0o700, parents=True)
            os.replace(entry, doomed / "entry")
        except OSError:  # already gone, or a read-only cache: nothing to discard here
            pass
        finally:
            shutil.rmtree(doomed, ignore_errors=True)

    def store(self, key: str, result: BuildResult) -> str:
        """Add the build's files; returns what happened. Of concurrent writers of one key the first wins.

        A cache that cannot be written (read-only shared folder, full disk) does not fail the build.
        """
        tmp = owned_tempname(self.root / "tmp", f"{key[:16]}-")
        try:
            self.root.joinpath("entries").mkdir(parents=True, exist_ok=True)
            self.root.joinpath("tmp").mkdir(exist_ok=True)
            sweep_stale(self.root / "tmp", _TEMP_PATTERN)
            tmp.mkdir(mode=0o700)
            for path in result.files:
                _copy(path, tmp / path.name)
            meta = {"format": ENTRY_FORMAT, "created": time.time(), "files": [p.name for p in result.files],
                    "sha256": {p.name: file_digest(tmp / p.name) for p in result.files},
                    "records": [r.to_json() for r in result.records], "nodes_before": result.nodes_before,
                    "nodes_after": result.nodes_after, "build_seconds": result.seconds}
            (tmp / ENTRY_FILE).write_text(json.dumps(meta, indent=2, default=str) + "\n")
            os.chmod(tmp, 0o755)  # made private while incomplete; a shared cache is read by other users
            os.rename(tmp, self.entry(key))
            return "miss (stored)"
        except OSError as exc:
            if self.entry(key).joinpath(ENTRY_FILE).is_file():
                return "miss (stored by a concurrent build)"
            return f"miss (not stored: {exc})"
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _entry_problem(meta: Any, entry: Path) -> str | None:
    """What makes ``meta`` (an entry.json) unusable, before any of its files is read; None if nothing."""
    if not isinstance(meta, dict) or meta.get("format") != ENTRY_FORMAT:
        return "unknown entry format"
    names, digests = meta.get("files"), meta.get("sha256")
    if not (isinstance(names, list) and names and isinstance(digests, dict)):
        return "no file list with digests"
    if bad := next((name for name in names if not is_bare_name(name) or name == ENTRY_FILE), None):
        return f"names a file outside the entry: {bad!r}"
    if unchecked := next((name for name in names if not isinstance(digests.get(name), str)), None):
        return f"no sha256 recorded for {unchecked}"
    if link := next((name for name in names if (entry / name).is_symlink()), None):
        return f"{link} is a symbolic link"
    return None


def _copy(src: Path, dst: Path) -> None:
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copyfile(src, dst)


def open_cache(location: Path | str) -> BuildCache:
    """The build cache at ``location``: a folder, or an object store URL (``scheme://...``) through fsspec."""
    if isinstance(location, str) and "://" in location:
        return ObjectStoreCache(location)
    return BuildCache(Path(location))


class ObjectStoreCache(BuildCache):
    """The cache in an object store (S3, GCS, Azure, or ``file://``) through fsspec; see the module's docstring."""

    def __init__(self, url: str) -> None:
        try:
            import fsspec
        except ImportError:
            raise UserInputError(f"--cache-dir {url}: an object store cache needs fsspec, which is not installed",
                                 hint="pip install fsspec and the store's package (s3fs, gcsfs, adlfs)") from None
        try:
            self.fs, root = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as exc:
            raise UserInputError(f"--cache-dir {url}: {exc}",
                                 hint="install the store's fsspec package (s3fs, gcsfs, adlfs), or give a folder"
                                 ) from None
        self.url, self.base = url, root.rstrip("/")
        self.root = Path(url)  # only named in messages

    def _object(self, digest: str) -> str:
        return f"{self.base}/objects/{digest}"

    def _entry(self, key: str) -> str:
        return f"{self.base}/entries/{key}.json"

    def fetch(self, key: str, output: Path) -> CacheHit | None:
        try:
            with self.fs.open(self._entry(key), "rb") as fh:
                meta = json.loads(fh.read())
        except (OSError, ValueError):  # absent (FileNotFoundError is an OSError), or unreadable: build instead
            return None
        with staged_output(output) as stage:
            problem = _remote_entry_problem(meta)
            try:
                for name in meta["files"] if problem is None else []:
                    stored = self._object(meta["sha256"][name])
                    self.fs.get_file(stored, str(stage.sibling(name)))
                    if file_digest(stage.sibling(name)) != meta["sha256"][name]:
                        problem = f"{name} does not match its recorded sha256"
                        self.fs.rm(stored)  # named by the content it lacks: garbage; the rebuild stores it again
                        break
            except OSError as exc:
                problem = f"unreadable ({exc})"
            if problem is None:
                return CacheHit(stage.commit(), meta)
        warnings.warn(f"build cache entry {self.url}/entries/{key}.json is unusable ({problem}): rebuilding",
                      BuildWarning, stacklevel=2)
        return None

    def store(self, key: str, result: BuildResult) -> str:
        """Upload the files not stored yet, then the entry (one object): a reader never sees part of one."""
        if any(path.is_dir() for path in result.files):
            return "miss (not stored: an artifact folder; object store caches take files)"
        try:
            for folder in ("objects", "entries"):  # a mounted or local store has folders; object stores ignore this
                self.fs.makedirs(f"{self.base}/{folder}", exist_ok=True)
            digests = {path.name: file_digest(path) for path in result.files}
            for path in result.files:
                target = self._object(digests[path.name])
                if not self.fs.exists(target):
                    self._put(str(path), target)
            meta = {"format": ENTRY_FORMAT, "created": time.time(), "files": [p.name for p in result.files],
                    "sha256": digests, "records": [r.to_json() for r in result.records],
                    "nodes_before": result.nodes_before, "nodes_after": result.nodes_after,
                    "build_seconds": result.seconds}
            entry = self._entry(key)
            staging = f"{entry}.{_private_suffix()}"
            with self.fs.open(staging, "w") as fh:
                fh.write(json.dumps(meta, indent=2, default=str) + "\n")
            self.fs.mv(staging, entry)
            return "miss (stored)"
        except OSError as exc:
            return f"miss (not stored: {exc})"

    def _put(self, local: str, target: str) -> None:
        """Upload under a private name, then move into place (a rename on a mounted store, a copy on S3)."""
        staging = f"{target}.{_private_suffix()}"
        self.fs.put_file(local, staging)
        self.fs.mv(staging, target)


def _private_suffix() -> str:
    """A name suffix no other writer uses (this process, 64 random bits)."""
    return f"tmp-{os.getpid()}-{secrets.token_hex(8)}"


def _remote_entry_problem(meta: Any) -> str | None:
    """What makes an object store entry unusable before any file is fetched; None if nothing."""
    if not isinstance(meta, dict) or meta.get("format") != ENTRY_FORMAT:
        return "unknown entry format"
    names, digests = meta.get("files"), meta.get("sha256")
    if not (isinstance(names, list) and names and isinstance(digests, dict)):
        return "no file list with digests"
    if bad := next((name for name in names if not is_bare_name(name)), None):
        return f"names a file outside the artifact's folder: {bad!r}"
    if bad := next((name for name in names if not re.fullmatch(r"[0-9a-f]{64}", str(digests.get(name)))), None):
        return f"no sha256 recorded for {bad}"
    return None
