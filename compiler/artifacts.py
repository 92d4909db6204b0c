"""Writing artifacts atomically, and the manifest that travels beside each one.

A target writes every file of an artifact into a hidden staging folder next to the destination;
only when all of them are complete are they renamed into place (same file system, so each
rename is atomic), side files first, the manifest last. An interrupted or failed build removes
the staging folder and leaves the destination as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MANIFEST_SUFFIX = ".manifest.json"
MANIFEST_SCHEMA = 1


def manifest_path(artifact: Path) -> Path:
    return artifact.with_name(artifact.name + MANIFEST_SUFFIX)


def read_manifest(artifact: Path) -> dict[str, Any] | None:
    path = manifest_path(artifact)
    if not path.is_file():
        return None
    return json.loads(path.read_text())


class StagedOutput:
    """Staging area for one artifact whose final path is ``final``."""

    def __init__(self, final: Path) -> None:
        self.final = final
        final.parent.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))

    @property
    def artifact(self) -> Path:
        """Where the target writes its main file (or folder)."""
        return self.dir / self.final.name

    def sibling(self, name: str) -> Path:
        """Where the target writes a side file that ends up beside the artifact (weights, .bin, ...)."""
        return self.dir / name

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        body = {"schema": MANIFEST_SCHEMA, **manifest}
        manifest_path(self.artifact).write_text(json.dumps(body, indent=2, sort_keys=False, default=str) + "\n")

    def commit(self) -> list[Path]:
        """Move everything into place; returns the final paths (artifact first)."""
        staged = sorted(self.dir.iterdir(), key=self._commit_order)
        moved: list[Path] = []
        for src in staged:
            dst = self.final.parent / src.name
            if dst.is_dir() and not dst.is_symlink():
                shutil.rmtree(dst)
            os.replace(src, dst)
            moved.append(dst)
        self.dir.rmdir()
        return sorted(moved, key=lambda p: p.name != self.final.name)

    def _commit_order(self, path: Path) -> int:
        if path.name == self.final.name + MANIFEST_SUFFIX:
            return 2
        return 1 if path.name == self.final.name else 0

    def abort(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def staged_output(final: Path) -> Iterator[StagedOutput]:
    """Yield a staging area; commit happens explicitly, anything else (errors, Ctrl-C) cleans up."""
    stage = StagedOutput(final)
    try:
        yield stage
    finally:
        if stage.dir.exists():
            stage.abort()


def atomic_write_text(path: Path, text: str) -> None:
    """Write a small text file (report, cache entry) so readers never see half of it."""
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file (e.g. a TensorRT timing cache shared by CI runs) so readers never see half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; reports and cache entries are shared files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
