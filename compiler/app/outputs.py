"""Where a build writes: the artifact path decided from -o, and checked before any expensive work.

`-o` names the artifact file. An existing folder, or a path ending in '/', means "into that folder"
(like cp), as <stem><target suffix>. A name without a suffix gets the
target's; another suffix than the target's is refused (OpenVINO cannot even write it). The source
model is never an output, nothing but a previous artifact of ours is replaced, and an output folder
that cannot be written (read-only, no permission, full disk) is reported now, not after the build.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from infer_compile.core.artifacts import artifact_files, check_replaceable, read_own_json
from infer_compile.core.errors import UserInputError
from infer_compile.core.manifest import manifest_path

if TYPE_CHECKING:
    from infer_compile.targets import Target

# What the probe writes (and drops at once): a disk too full for this is too full for any artifact.
_PROBE_BYTES = 64 << 10


def names_folder(requested: str | os.PathLike[str]) -> bool:
    """Whether ``requested`` means "into this folder": it ends in a separator, or is an existing folder
    that is not itself an artifact of ours (a TensorRT bundle is a folder with a manifest beside it)."""
    text = os.fspath(requested)
    if text.endswith(("/", os.sep)):
        return True
    path = Path(text)
    return path.is_dir() and (path.name in ("", "..") or not manifest_path(path).exists())


def resolve_output(requested: str | os.PathLike[str] | None, source: Path, target: Target,
                   suffixes: tuple[str, ...]) -> Path:
    """The artifact path for ``-o requested``; ``suffixes`` are the names ``target`` writes (first: default).

    Without -o the artifact goes beside the source as <stem>.<target><suffix>; into a folder as <stem><suffix>.
    """
    if requested is None:
        return source.with_name(f"{source.stem}.{target.name}{suffixes[0]}")
    if names_folder(requested):
        return Path(requested) / f"{source.stem}{suffixes[0]}"
    path = Path(requested)
    if path.suffix in suffixes:
        return path
    if not path.suffix:
        return path.with_name(path.name + suffixes[0])
    raise UserInputError(f"-o {path}: {target.name} artifacts are named *{' or *'.join(suffixes)}",
                         hint=f"name it {path.with_suffix(suffixes[0]).name}, or give a folder ending in /")


def check_output(output: Path, sources: list[Path]) -> None:
    """Refuse, before building, an output that is the source model or something else not of ours,
    or whose folder cannot be written."""
    written = [output, manifest_path(output)]
    for source in sources:
        if any(_same_file(path, source) for path in written):
            raise UserInputError(f"-o {output} would overwrite the source model {source}",
                                 hint="write the artifact elsewhere (another name, or a folder: -o build/)")
    ours = artifact_files(output)
    for path in written:
        check_replaceable(path, ours)
    probe_writable(output, "the artifact")


def probe_writable(path: Path, what: str) -> None:
    """Fail now if ``path`` cannot be written: a folder there, or its folder read-only or full.

    Probes the nearest existing folder on the way (a missing one is created only by the build itself)
    with an anonymous file, so the probe leaves nothing behind even if the process is killed.
    """
    if path.is_dir():
        raise UserInputError(f"cannot write {what} to {path}: it is a folder", hint="give a file name")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        with tempfile.TemporaryFile(dir=folder) as probe:
            probe.write(b"\0" * _PROBE_BYTES)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        raise UserInputError(f"cannot write {what} to {path}: {exc.strerror or exc}",
                             hint="choose a writable folder with free space (-o / --report)") from None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and a.samefile(b)
    except OSError:
        return False


def check_report_path(path: Path, schema: str) -> None:
    """Before the build: the report can be written to ``path`` and would replace only an earlier report."""
    probe_writable(path, "the report")
    read_own_json(path, "--report", schema)
