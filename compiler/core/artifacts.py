"""Writing artifacts atomically, and the manifest that travels beside each one.

A target writes every file of an artifact into a hidden staging folder next to the destination;
only when all of them are complete are they renamed into place (same file system, so each
rename is atomic), side files first, the manifest last. An interrupted or failed build removes
the staging folder and leaves the destination as it was.

Only files a previous artifact of ours consists of (listed by its manifest) are ever replaced; any
other file at a destination path stops the commit. Temporary folders carry their owner (host, pid,
process start time) in their names, so a later build removes those of builds that were killed
(SIGKILL, power loss) and never those of a live concurrent build.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from infer_compile.core.errors import InferCompileError, UserInputError
from infer_compile.core.manifest import MANIFEST_SUFFIX, Manifest, manifest_json, manifest_path, write_manifest

# host-pid-start-random, as owned_tempname() names folders
OWNER_PATTERN = r"(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-(?P<start>\d+)-[0-9a-f]{16}"
# Errors that mean "no room to write here"; and free space below which a failed write is blamed on it.
_NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
_NEARLY_FULL = 1 << 20
STAGING_PATTERN = re.compile(r"\..+\.partial-" + OWNER_PATTERN)


def is_bare_name(name: object) -> bool:
    """A plain file name (no folder part, not . or ..): what manifests and cache entries may list."""
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and os.sep not in name \
        and (os.altsep is None or os.altsep not in name) and "\0" not in name


def artifact_files(artifact: Path) -> set[str]:
    """Names of the files that make up a previous artifact of ours at ``artifact`` (from its manifest)."""
    try:
        manifest = manifest_json(artifact)
        listed = manifest["artifact"]["files"] if isinstance(manifest, dict) else []
    except (OSError, ValueError, KeyError, TypeError):  # no manifest of ours there
        return set()
    if not isinstance(listed, list):
        return set()
    return {name for name in listed if is_bare_name(name)} | {manifest_path(artifact).name}


def check_replaceable(path: Path, ours: set[str]) -> None:
    """Refuse to replace anything at ``path`` unless it belongs to a previous artifact of ours."""
    if os.path.lexists(path) and path.name not in ours:
        raise UserInputError(f"{path} exists and was not written by infer-compile: not replacing it",
                             hint="move it away, or give another -o (an existing folder or DIR/ writes into it)")


def _host_id() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _start_time(pid: int) -> str:
    """When process ``pid`` started (clock ticks since boot; tells a reused pid apart); '0' without /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "0"
    return stat.rsplit(")", 1)[1].split()[19]  # field 22 of proc(5); fields after the command name start at 3


def owned_tempname(parent: Path, prefix: str) -> Path:
    """A fresh path in ``parent`` for a private temporary folder, named by the process and host that own it.

    The caller knows the name before it creates the folder (``mkdir(mode=0o700)``), so a signal arriving
    just after the folder appears can still be cleaned up (tempfile.mkdtemp would lose the name then).
    """
    return parent / f"{prefix}{_host_id()}-{os.getpid()}-{_start_time(os.getpid())}-{secrets.token_hex(8)}"


def _owner_gone(host: str, pid: str, start: str) -> bool:
    # A build on another machine sharing the folder: cannot tell, leave it. On Windows os.kill(pid, 0)
    # would not probe but send Ctrl-C: never sweep there.
    if host != _host_id() or os.name == "nt":
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        pass
    return start != "0" and _start_time(int(pid)) != start


def sweep_stale(parent: Path, pattern: re.Pattern[str]) -> None:
    """Remove folders in ``parent`` named like ``pattern`` (an owned_tempname) whose owner is gone."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        match = pattern.fullmatch(name)
        path = parent / name
        if match and not path.is_symlink() and path.is_dir() and _owner_gone(*match.group("host", "pid", "start")):
            shutil.rmtree(path, ignore_errors=True)


class StagedOutput:
    """Staging area for one artifact whose final path is ``final``."""

    def __init__(self, final: Path) -> None:
        self.final = final
        self.dir = owned_tempname(final.parent, f".{final.name}.partial-")

    def create(self) -> None:
        self.final.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(self.final.parent, STAGING_PATTERN)
        self.dir.mkdir(mode=0o700)

    @property
    def artifact(self) -> Path:
        """Where the target writes its main file (or folder)."""
        return self.dir / self.final.name

    def sibling(self, name: str) -> Path:
        """Where the target writes a side file that ends up beside the artifact (weights, .bin, ...)."""
        return self.dir / name

    def write_manifest(self, manifest: Manifest) -> None:
        write_manifest(self.artifact, manifest)

    def commit(self) -> list[Path]:
        """Move everything into place; returns the final paths (artifact first).

        Raises UserInputError, moving nothing, when a destination holds something not of ours.
        """
        staged = sorted(self.dir.iterdir(), key=self._commit_order)
        ours = artifact_files(self.final)
        for src in staged:
            check_replaceable(self.final.parent / src.name, ours)
        moved: list[Path] = []
        for src in staged:
            dst = self.final.parent / src.name
            if dst.is_dir() and not dst.is_symlink():  # a previous artifact's folder (a bundle)
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
    """Yield a staging area; commit happens explicitly, anything else (errors, Ctrl-C) cleans up.

    A full disk or read-only file system becomes a UserInputError naming ``final``.
    """
    stage = StagedOutput(final)
    try:
        stage.create()
        yield stage
    except OSError as exc:
        if exc.errno in _NO_ROOM:
            raise no_room(final, exc.strerror or os.strerror(exc.errno)) from exc
        raise
    except InferCompileError:
        raise
    except Exception as exc:  # libraries that wrap the OS error (OpenVINO): judge by the free space left
        if _nearly_full(final.parent):
            raise no_room(final, os.strerror(errno.ENOSPC)) from exc
        raise
    finally:
        if stage.dir.exists():
            stage.abort()


def no_room(path: Path, reason: str) -> UserInputError:
    return UserInputError(f"cannot write {path}: {reason}",
                          hint="free space there or write elsewhere (-o); nothing was left behind")


def _nearly_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < _NEARLY_FULL
    except OSError:
        return False


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


def read_own_json(path: Path, what: str, schema: str) -> dict[str, Any] | None:
    """The JSON document at ``path`` if infer-compile wrote it (its "schema" is ``schema``, any version);
    None if there is none. Anything else there is refused: never replaced, never deleted."""
    if not os.path.lexists(path):
        return None
    try:
        body = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserInputError(f"{what} {path}: not a readable infer-compile file ({exc}); not replacing it",
                             hint="give a new file name (delete this one only if infer-compile wrote it)") from None
    if isinstance(body, dict) and str(body.get("schema", "")).split("/")[0] == schema.split("/")[0]:
        return body
    raise UserInputError(f"{what} {path}: exists and is not a file infer-compile wrote; not replacing it",
                         hint="give a new file name")


def file_digest(paths: list[Path] | Path) -> str:
    """sha256 over one file or several (in order): identifies a model's source bytes."""
    digest = hashlib.sha256()
    for p in [paths] if isinstance(paths, Path) else paths:
        if not p.exists():
            raise UserInputError(f"{p}: no such file or folder", hint="check the path")
        if p.is_dir():
            for child in sorted(q for q in p.rglob("*") if q.is_file()):
                digest.update(child.relative_to(p).as_posix().encode())
                _update_from_file(digest, child)
        else:
            _update_from_file(digest, p)
    return digest.hexdigest()


def _update_from_file(digest: hashlib._Hash, path: Path) -> None:
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
