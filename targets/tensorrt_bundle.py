"""Deferred TensorRT builds: a portable bundle written where there is no GPU, built where there is one.

``infer-compile MODEL --target trt --defer`` runs the whole pipeline (calibration included) and
writes ``<name>.trtbundle/`` instead of an engine:

    model.onnx[.data]  the final optimized graph, Q/DQ nodes and casts included
    settings.json      the BuilderSettings (profile, workspace, level, compatibility)
    timing.cache       the --timing-cache file, when it existed
    manifest.json      bundle format, engine name, a digest of every file above and of itself, the build's
                       manifest, the trtexec command per TensorRT major version

``infer-compile finalize X.trtbundle`` on a GPU machine checks every digest and the settings (the
same rules as the command line) before anything else, then builds exactly those settings into
``X.engine`` with no source model or calibration data. It never writes into the bundle. A folder
rather than an archive: CI systems upload folders as artifacts, and trtexec users run the recorded
command inside it.

The digests catch a bundle changed after it was written (by accident or by hand); they are not a
signature: whoever can write the bundle can also rewrite its manifest.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from infer_compile.core.artifacts import StagedOutput, file_digest
from infer_compile.core.errors import TargetUnavailableError, UserInputError
from infer_compile.core.ir import Model, load_onnx, save_onnx
from infer_compile.core.manifest import BuildFacts, Manifest
from infer_compile.targets.base import Availability, FinalCheck, Runner, TargetRequest
from infer_compile.targets.tensorrt import CACHE_SEED, INSTALL_HINT, PRESET_SETTINGS, TensorRtTarget
from infer_compile.targets.tensorrt_settings import BuilderSettings, trtexec_commands

BUNDLE_SUFFIX = ".trtbundle"
BUNDLE_FORMAT = "infer-compile/trtbundle"
BUNDLE_VERSION = 2  # 2: every file and the manifest itself under a digest
ONNX_FILE, SETTINGS_FILE, MANIFEST_FILE, CACHE_FILE = "model.onnx", "settings.json", "manifest.json", "timing.cache"
WRITE_HINT = "bundles are written by 'infer-compile MODEL --target trt --defer'"
REWRITE_HINT = "write the bundle again with --defer (finalize builds only what --defer wrote)"
# request.options key under which compile() hands the build's manifest to emit(), which stores it in the bundle.
_BUILD_MANIFEST = "_build_manifest"


class TensorRtBundleTarget(TensorRtTarget):
    """What ``--target trt --defer`` builds: the same requests as TensorRtTarget, written as a bundle."""

    suffix = BUNDLE_SUFFIX
    builds_here = False
    description = "Deferred TensorRT build bundle; 'infer-compile finalize' builds the engine on a GPU machine."

    def availability(self) -> Availability:
        return Availability(True, "writes a bundle here; 'infer-compile finalize' builds it on a GPU machine")

    def tool_versions(self) -> dict[str, str]:
        return {}

    def hardware_identity(self) -> dict[str, str]:
        return {}

    def compile(self, model: Model, output: Path, request: TargetRequest,
                build: BuildFacts, check: FinalCheck | None = None) -> list[Path]:
        request = replace(request, options={**request.options, _BUILD_MANIFEST: build.to_json()})
        return super().compile(model, output, request, build, check)

    def check_runner(self, artifact: Path, manifest: Manifest) -> Runner:
        """No GPU here: the bundle's ONNX, exactly what TensorRT will parse, runs in onnxruntime instead."""
        from infer_compile.targets.onnxruntime import OrtRunner  # the one exception to "targets never import
        # each other": onnxruntime is the core runtime every machine has

        return OrtRunner(artifact / ONNX_FILE, {})

    def emit(self, model: Model, stage: StagedOutput, request: TargetRequest) -> dict[str, Any]:
        settings = self.settings(model, request)
        bundle = stage.artifact
        bundle.mkdir()
        files = [p.name for p in save_onnx(model, bundle / ONNX_FILE)]
        cache = Path(settings.timing_cache) if settings.timing_cache else None
        if cache and cache.is_file():
            shutil.copyfile(cache, bundle / CACHE_FILE)
            files.append(CACHE_FILE)
        settings = replace(settings, timing_cache=CACHE_FILE if CACHE_FILE in files else None)
        engine = stage.final.with_suffix(".engine").name
        commands = trtexec_commands(settings, ONNX_FILE, engine)
        _write_json(bundle / SETTINGS_FILE, settings.to_json())
        files.append(SETTINGS_FILE)
        manifest = {"format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "engine": engine,
                    "files": {name: file_digest(bundle / name) for name in files}, "trtexec": commands,
                    "build": request.options[_BUILD_MANIFEST]}
        manifest = json.loads(json.dumps(manifest, default=str))  # digest what a reader will see
        _write_json(bundle / MANIFEST_FILE, {**manifest, "sha256": manifest_digest(manifest)})
        return {"format": "trtbundle", "builder_settings": settings.to_json(), "trtexec": commands}


def manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest's content (without its own ``sha256`` key), independent of formatting."""
    body = {key: value for key, value in manifest.items() if key != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class Bundle:
    """A bundle read back and checked."""

    path: Path
    settings: BuilderSettings
    manifest: dict[str, Any]  # the bundle's manifest.json
    build: BuildFacts  # the record of the build that wrote it, for the engine's manifest

    @property
    def onnx(self) -> Path:
        return self.path / ONNX_FILE

    @property
    def engine_name(self) -> str:
        return str(self.manifest["engine"])

    @property
    def timing_cache(self) -> Path | None:
        return self.path / CACHE_FILE if self.settings.timing_cache else None


def read_bundle(path: Path) -> Bundle:
    """Read and verify a bundle: format, then every digest, then the settings; UserInputError says what is wrong."""
    path = Path(path)
    if not path.exists():
        raise UserInputError(f"{path}: no such bundle", hint=WRITE_HINT)
    if not (path / MANIFEST_FILE).is_file():
        raise UserInputError(f"{path}: not a TensorRT build bundle (no {MANIFEST_FILE} inside)", hint=WRITE_HINT)
    manifest = _read_json(path, MANIFEST_FILE)
    _check_format(path, manifest)
    _check_digests(path, manifest)
    try:
        settings = BuilderSettings.from_json(_read_json(path, SETTINGS_FILE))
    except UserInputError as exc:
        raise UserInputError(f"{path}: {SETTINGS_FILE}: {exc.message}", hint=REWRITE_HINT) from None
    listed = settings.timing_cache is None or settings.timing_cache in manifest["files"]
    if settings.timing_cache not in (None, CACHE_FILE) or not listed:
        raise UserInputError(f"{path}: {SETTINGS_FILE} names timing cache {settings.timing_cache!r}; a bundle may "
                             f"name only its own {CACHE_FILE}", hint=REWRITE_HINT)
    engine = manifest.get("engine")
    if not isinstance(engine, str) or not _is_bare_name(engine) or not engine.endswith(".engine"):
        raise UserInputError(f"{path}: {MANIFEST_FILE} names engine {engine!r}, not a file name ending in .engine",
                             hint=REWRITE_HINT)
    try:
        build = BuildFacts.from_json(manifest.get("build"))
    except ValueError as exc:
        raise UserInputError(f"{path}: damaged bundle ({MANIFEST_FILE} lacks the build record: {exc})",
                             hint=REWRITE_HINT) from None
    return Bundle(path, settings, manifest, build)


def _read_json(path: Path, name: str) -> Any:
    try:
        return json.loads((path / name).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserInputError(f"{path}: damaged bundle ({name}: {type(exc).__name__}: {exc})",
                             hint=REWRITE_HINT) from None


def _check_format(path: Path, manifest: Any) -> None:
    """A manifest of a bundle format and version this infer-compile reads (checked before its digest)."""
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise UserInputError(f"{path}: not a TensorRT build bundle ({MANIFEST_FILE} format {found!r})",
                             hint=WRITE_HINT)
    version = manifest.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise UserInputError(f"{path}: bundle version {version!r} is not a version number (damaged or tampered)",
                             hint=REWRITE_HINT)
    if version != BUNDLE_VERSION:
        raise UserInputError(f"{path}: bundle format v{version} is not the one this infer-compile reads "
                             f"(v{BUNDLE_VERSION})",
                             hint="finalize it with the infer-compile version that wrote it, or " + REWRITE_HINT)


def _check_digests(path: Path, manifest: dict[str, Any]) -> None:
    """Every file the bundle lists, and the manifest itself, unchanged since --defer wrote them."""
    files = manifest.get("files")
    problem = None
    if manifest.get("sha256") != manifest_digest(manifest) or not isinstance(files, dict):
        problem = f"{MANIFEST_FILE} does not match its digest"
    elif missing := sorted({ONNX_FILE, SETTINGS_FILE} - set(files)):
        problem = f"{MANIFEST_FILE} does not cover {', '.join(missing)}"
    else:
        for name, digest in files.items():
            if not _is_bare_name(name):
                problem = f"{MANIFEST_FILE} lists {name!r}, a path outside the bundle"
            elif not (path / name).is_file():
                problem = f"{name} is missing"
            elif file_digest(path / name) != digest:
                problem = f"{name} does not match its digest (changed or truncated)"
            if problem:
                break
    if problem:
        raise UserInputError(f"{path}: bundle was changed after it was written (tampered or damaged): {problem}",
                             hint=REWRITE_HINT)


def _is_bare_name(name: Any) -> bool:
    """A file name inside the bundle folder: no separators, not '.', '..' or absolute."""
    return isinstance(name, str) and name not in ("", ".", "..") and Path(name).name == name and "\\" not in name


def finalize_bundle(bundle: Path, output: Path | None = None, timing_cache: Path | None = None) -> list[Path]:
    """Build the engine a bundle describes (on a GPU machine); returns the files written, engine first.

    The bundle is only read. Its ``timing.cache`` seeds the build; ``timing_cache`` is read (when it
    exists) and written back with this build's timings.
    """
    found = read_bundle(bundle)  # tampering is reported before anything about this machine
    target = TensorRtTarget()
    status = target.availability()
    if not status.available:
        raise TargetUnavailableError(f"cannot build the engine here: {status.detail}",
                                     hint=f"run finalize on a machine with an NVIDIA GPU ({INSTALL_HINT} there)")
    settings = replace(found.settings, timing_cache=None if timing_cache is None else str(timing_cache))
    output = Path(output) if output else found.path.with_name(found.engine_name)
    options: dict[str, Any] = {PRESET_SETTINGS: settings.to_json()}
    if found.timing_cache:
        options[CACHE_SEED] = str(found.timing_cache)
    return target.compile(load_onnx(found.onnx), output, TargetRequest(settings.precision, options=options),
                          found.build)


def _write_json(path: Path, body: dict[str, Any]) -> None:
    path.write_text(json.dumps(body, indent=2, default=str) + "\n")
