"""Content-addressed build cache: identical inputs give the identical artifact, so build it once.

The key hashes everything a build depends on: the source model's bytes (with its external weight
files), every ``BuildOptions`` field (file-valued options such as calibration data by content), the
artifact's file name (targets write it into their files), the target, tool/library versions, the
infer-compile code itself, and the hardware the target builds for (e.g. the GPU for TensorRT).

An entry is a folder ``entries/<key>/`` holding the artifact files and ``entry.json``. Writers fill
a private temporary folder and rename it into place (atomic on one file system), so a reader sees
a complete entry or none, and of two concurrent writers of one key the second simply drops its copy.
The folder may be shared by CI runners (same file system per writer: the temp folder lives inside).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from infer_compile.artifacts import staged_output
from infer_compile.ir import file_digest

if TYPE_CHECKING:
    from infer_compile.build import BuildOptions, BuildResult
    from infer_compile.targets import Target

CACHE_ENV = "INFER_COMPILE_CACHE_DIR"
ENTRY_FORMAT = 1
ENTRY_FILE = "entry.json"
# Options that say where results go, not what they are.
_NOT_IN_KEY = frozenset({"output", "cache_dir"})
_PACKAGE_ROOTS = ("compiler", "passes", "targets", "calibration")


def default_cache_dir() -> Path:
    """$INFER_COMPILE_CACHE_DIR, else $XDG_CACHE_HOME/infer-compile, else ~/.cache/infer-compile."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "infer-compile"


def canonical(value: Any) -> Any:
    """A JSON-able stand-in for ``value`` that changes whenever its content does.

    Dataclass fields that name outputs of the build (not inputs) opt out with
    ``field(metadata={"cache_key": False})``.
    """
    if isinstance(value, Path):
        return {"sha256": file_digest(value)} if value.exists() else {"missing": str(value)}
    if isinstance(value, np.ndarray):
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
    import onnx

    try:
        proto = onnx.load_model(str(source), load_external_data=False)
    except Exception:  # not readable as ONNX: the frontend reports it; hash the bytes alone
        return [source]
    locations = sorted({entry.value for tensor in proto.graph.initializer
                        if tensor.data_location == onnx.TensorProto.EXTERNAL
                        for entry in tensor.external_data if entry.key == "location"})
    return [source, *(source.parent / loc for loc in locations if (source.parent / loc).is_file())]


@functools.cache
def code_digest() -> str:
    """infer-compile's own source: a changed pass or target must not reuse old artifacts."""
    package = Path(__file__).resolve().parent.parent
    files = sorted(p for root in _PACKAGE_ROOTS for p in (package / root).rglob("*.py"))
    return file_digest(files)


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
            "hardware": target.hardware_identity(),
            "code": code_digest(),
        }
        return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()

    def entry(self, key: str) -> Path:
        return self.root / "entries" / key

    def fetch(self, key: str, output: Path) -> CacheHit | None:
        """Copy the entry's files to ``output`` (atomically); None on a miss."""
        entry = self.entry(key)
        try:
            meta = json.loads((entry / ENTRY_FILE).read_text())
            with staged_output(output) as stage:
                for name in meta["files"]:
                    _copy(entry / name, stage.sibling(name))
                return CacheHit(stage.commit(), meta)
        except (OSError, ValueError, KeyError):  # absent, or removed/damaged under us: build instead
            return None

    def store(self, key: str, result: BuildResult) -> str:
        """Add the build's files; returns what happened. Of concurrent writers of one key the first wins.

        A cache that cannot be written (read-only shared folder, full disk) does not fail the build.
        """
        try:
            self.root.joinpath("entries").mkdir(parents=True, exist_ok=True)
            self.root.joinpath("tmp").mkdir(exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f"{key[:16]}-", dir=self.root / "tmp"))
        except OSError as exc:
            return f"miss (not stored: {exc})"
        try:
            for path in result.files:
                _copy(path, tmp / path.name)
            meta = {"format": ENTRY_FORMAT, "created": time.time(), "files": [p.name for p in result.files],
                    "records": [r.to_json() for r in result.records], "nodes_before": result.nodes_before,
                    "nodes_after": result.nodes_after, "build_seconds": result.seconds}
            (tmp / ENTRY_FILE).write_text(json.dumps(meta, indent=2, default=str) + "\n")
            os.chmod(tmp, 0o755)  # mkdtemp makes it private; a shared cache is read by other users
            os.rename(tmp, self.entry(key))
            return "miss (stored)"
        except OSError as exc:
            if self.entry(key).joinpath(ENTRY_FILE).is_file():
                return "miss (stored by a concurrent build)"
            return f"miss (not stored: {exc})"
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _copy(src: Path, dst: Path) -> None:
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copyfile(src, dst)
